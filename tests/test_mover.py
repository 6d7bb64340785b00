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


def test_a_file_rewritten_since_it_was_judged_is_not_moved(tmp_path):
    import os

    import pytest

    src = tmp_path / "a.pdf"
    src.write_bytes(b"first")
    st = os.stat(src)
    src.write_bytes(b"second, longer")
    with pytest.raises(mover.Changed):
        mover.move_into(src, tmp_path / "done", expect=(st.st_size, st.st_mtime_ns))
    assert src.exists() and not (tmp_path / "done" / "a.pdf").exists()


def test_concurrent_moves_into_one_folder_never_overwrite(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    done = tmp_path / "done"
    sources = []
    for i in range(40):
        d = tmp_path / f"in{i}"
        d.mkdir()
        (d / "x.pdf").write_bytes(f"content {i}".encode())
        sources.append(d / "x.pdf")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: mover.move_into(p, done), sources))
    contents = {p.read_bytes() for p in done.iterdir()}
    assert len(contents) == 40


def test_copy_is_removed_when_the_original_cannot_be(tmp_path, monkeypatch):
    import os

    import pytest

    src = tmp_path / "a.pdf"
    src.write_bytes(b"data")
    dest = tmp_path / "done" / "a.pdf"
    dest.parent.mkdir()
    real_unlink = os.unlink

    def refuse(path, *args, **kwargs):  # the inbox is read-only for the daemon
        if str(path) == str(src):
            raise PermissionError(13, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(PermissionError):
        mover._copy_across(src, dest)
    assert src.exists() and list(dest.parent.iterdir()) == []
