"""The benchmark runs (a smoke test on 20 files: figures, not timings, are checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench" / "run.py"


def test_the_bench_drains_twenty_files_and_writes_its_figures(tmp_path):
    if not Path(sys.executable).with_name("qonto-invoice-daemon").exists():
        pytest.skip("the project is not installed in this interpreter")
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--only", "drain", "--sizes", "20", "--work",
         str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert "drain / ideal" in done.stdout, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    rows = {r["figure"]: r for r in figures["rows"]}
    assert rows["files per request"]["value"] > 0
    assert rows["drain time"]["value"] > 0
    assert figures["machine"]["cpus"] >= 1
