"""Filing away: never overwrite, sidecars, the copy across filesystems."""

from __future__ import annotations

import json

from daemon import mover


def test_existing_names_get_a_suffix(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "a.pdf").write_bytes(b"old")
    (done / "a-1.pdf").write_bytes(b"older")
    src = tmp_path / "a.pdf"
    src.write_bytes(b"new")
    dest = mover.move_into(src, done)
    assert dest == done / "a-2.pdf" and dest.read_bytes() == b"new"
    assert (done / "a.pdf").read_bytes() == b"old" and not src.exists()


def test_failed_file_gets_its_sidecar(tmp_path):
    src = tmp_path / "bad.pdf"
    src.write_bytes(b"x")
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "bad.pdf.error.json").write_text("{}")  # an orphan from before
    dest = mover.fail_into(src, failed, {"reason": "empty", "detail": "d"})
    assert dest == failed / "bad-1.pdf"
    assert json.loads((failed / "bad-1.pdf.error.json").read_text())["reason"] == "empty"


def test_copy_across_filesystems_keeps_bytes_and_removes_source(tmp_path):
    src = tmp_path / "a.pdf"
    src.write_bytes(b"%PDF-1.7 data")
    dest = tmp_path / "other" / "a.pdf"
    dest.parent.mkdir()
    mover._copy_across(src, dest)
    assert dest.read_bytes() == b"%PDF-1.7 data" and not src.exists()
    assert [p.name for p in dest.parent.iterdir()] == ["a.pdf"]
