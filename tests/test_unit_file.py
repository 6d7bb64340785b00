"""The systemd unit: it verifies, and its exposure stays low (when systemd-analyze is here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "qonto-invoice-daemon.service"
pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def test_the_unit_verifies(tmp_path):
    # The daemon is not installed under /opt here: point ExecStart at a real program.
    unit = tmp_path / UNIT.name
    unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", UNIT.read_text(),
                           flags=re.M))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "qonto-invoice-daemon" not in result.stderr, result.stderr


def test_the_exposure_is_at_most_1_5():
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True, text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.5
