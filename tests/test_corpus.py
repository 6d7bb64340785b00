"""Real invoices made by other producers (../shared/corpus), when they are available."""

from __future__ import annotations

import asyncio
import csv
import shutil
from pathlib import Path

import pytest
from helpers import LOGIN, sha256_of

from daemon.flow import examine as inspect

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
pytestmark = pytest.mark.skipif(
    not (CORPUS / "MANIFEST.tsv").exists(),
    reason="the shared invoice corpus is not beside the project",
)


def manifest() -> list[dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_manifest_hashes_and_profiles_match_what_we_read():
    for row in manifest():
        content = inspect.read_regular(CORPUS / row["file"], 5_000_000)
        assert content.sha256 == row["sha256"] and content.size == int(row["bytes"])
        found = inspect.examine(content, row["file"], 5_000_000, 5_000_000)
        assert found.problem is None and found.kind == "pdf", row["file"]
        assert found.complete, row["file"]


async def test_every_corpus_invoice_is_imported_unchanged(ws, qonto, start):
    emulator, url = qonto
    rows = manifest()
    for row in rows:
        shutil.copyfile(CORPUS / row["file"], ws.inbox / row["file"])
    # The samples share invoice numbers (the same example invoice in several
    # syntaxes): here only "imported unchanged" is at stake.
    cfg = ws.config(url, upload={"linger_seconds": 0.3}, validation={"duplicate_number": "off"})
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 120) == 0
    imported = emulator.invoices_of(LOGIN)
    # Each file reached Qonto byte for byte: the hash Qonto saw is the producer's.
    assert set(imported) == {row["sha256"] for row in rows}
    for row in rows:
        assert sha256_of(ws.done / row["file"]) == row["sha256"]
