"""Filing away: never overwrite, any name Linux allows, copies across filesystems, no debris."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import leftovers, mover
from daemon.errors import FileChanged
from daemon.identity import Identity


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


def test_failed_file_gets_its_sidecar_and_never_takes_another_files_sidecar(tmp_path):
    src = tmp_path / "bad.pdf"
    src.write_bytes(b"x")
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "bad.pdf.error.json").write_text('{"sha256": "another file"}')
    dest = mover.fail_into(src, failed, {"reason": "empty", "detail": "d", "sha256": "abc"})
    assert dest == failed / "bad-1.pdf"
    assert json.loads((failed / "bad-1.pdf.error.json").read_text())["reason"] == "empty"
    assert json.loads((failed / "bad.pdf.error.json").read_text())["sha256"] == "another file"


def test_a_sidecar_left_by_a_kill_is_taken_over_not_piled_up(tmp_path):
    """Killed between the sidecar and the move: the next attempt reuses its own sidecar."""
    src = tmp_path / "bad.pdf"
    src.write_bytes(b"x")
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "bad.pdf.error.json").write_text('{"sha256": "abc", "reason": "old"}')
    dest = mover.fail_into(src, failed, {"reason": "empty", "detail": "d", "sha256": "abc"})
    assert dest == failed / "bad.pdf"
    assert sorted(p.name for p in failed.iterdir()) == ["bad.pdf", "bad.pdf.error.json"]
    assert json.loads((failed / "bad.pdf.error.json").read_text())["reason"] == "empty"


def test_a_failed_move_leaves_no_sidecar(tmp_path, monkeypatch):
    src = tmp_path / "bad.pdf"
    src.write_bytes(b"x")
    failed = tmp_path / "failed"
    failed.mkdir()
    real_link = os.link

    def refuse(a, b, **kw):  # the file itself cannot be placed (a disk that just filled up)
        if Path(a) == src:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_link(a, b, **kw)

    monkeypatch.setattr(os, "link", refuse)
    for _ in range(3):
        with pytest.raises(OSError):
            mover.fail_into(src, failed, {"reason": "empty", "sha256": "abc"})
    assert list(failed.iterdir()) == [] and src.exists()


def test_copy_across_filesystems_keeps_bytes_and_removes_source(tmp_path, tmpfs):
    other = tmpfs()
    src = tmp_path / "a.pdf"
    src.write_bytes(b"%PDF-1.7 data")
    os.utime(src, ns=(1_000_000_000, 1_500_000_000_000_000_000))
    dest = mover.move_into(src, other / "done")
    assert dest == other / "done" / "a.pdf"
    assert dest.read_bytes() == b"%PDF-1.7 data" and not src.exists()
    assert dest.stat().st_mtime_ns == 1_500_000_000_000_000_000
    assert [p.name for p in dest.parent.iterdir()] == ["a.pdf"]  # no temporary left


def test_copy_never_overwrites_a_name_taken_meanwhile(tmp_path, tmpfs):
    other = tmpfs()
    done = other / "done"
    done.mkdir()
    src = tmp_path / "a.pdf"
    src.write_bytes(b"ours")
    placement = mover._Placement(src, done, None)
    (done / "a.pdf").write_bytes(b"another writer's")  # arrives after we looked
    with pytest.raises(FileExistsError):
        placement.place(done / "a.pdf")
    placement.place(done / "a-1.pdf")
    placement.finish(done / "a-1.pdf")
    assert (done / "a.pdf").read_bytes() == b"another writer's"
    assert (done / "a-1.pdf").read_bytes() == b"ours" and not src.exists()


def test_original_gone_after_the_copy_keeps_the_copy(tmp_path, tmpfs):
    """Someone else moved the original while we copied it: never delete the only copy."""
    other = tmpfs()
    src = tmp_path / "a.pdf"
    src.write_bytes(b"the only copy")
    placement = mover._Placement(src, other, None)
    placement.place(other / "a.pdf")
    src.rename(tmp_path / "elsewhere.pdf")  # another process took it
    (tmp_path / "elsewhere.pdf").unlink()
    placement.finish(other / "a.pdf")
    assert (other / "a.pdf").read_bytes() == b"the only copy"


def test_share_without_hard_links_uses_an_exclusive_copy(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):  # what some SMB mounts answer
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    done = tmp_path / "done"
    done.mkdir()
    (done / "a.pdf").write_bytes(b"old")
    src = tmp_path / "a.pdf"
    src.write_bytes(b"new")
    dest = mover.move_into(src, done)
    assert dest == done / "a-1.pdf" and dest.read_bytes() == b"new"
    assert (done / "a.pdf").read_bytes() == b"old" and not src.exists()
    assert sorted(p.name for p in done.iterdir()) == ["a-1.pdf", "a.pdf"]


def test_copy_is_removed_when_the_original_cannot_be(tmp_path, tmpfs, monkeypatch):
    other = tmpfs()
    src = tmp_path / "a.pdf"
    src.write_bytes(b"data")
    real_unlink = os.unlink

    def refuse(path, *args, **kwargs):  # the inbox is read-only for the daemon
        if str(path) == str(src):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(PermissionError):
        mover.move_into(src, other)
    assert src.exists() and list(other.iterdir()) == []


def test_same_size_and_mtime_but_new_content_is_a_changed_file(tmp_path):
    """Writers that keep the invoice date as mtime: size and mtime prove nothing."""
    src = tmp_path / "a.pdf"
    src.write_bytes(b"first")
    judged = Identity.lstat(src)
    src.write_bytes(b"secnd")  # same size
    os.utime(src, ns=(judged.mtime_ns, judged.mtime_ns))  # same mtime
    with pytest.raises(FileChanged):
        mover.move_into(src, tmp_path / "done", expect=judged)
    replacement = tmp_path / "new.pdf"
    replacement.write_bytes(b"first")
    os.utime(replacement, ns=(judged.mtime_ns, judged.mtime_ns))
    os.replace(replacement, src)  # replaced by rename: another inode
    with pytest.raises(FileChanged):
        mover.move_into(src, tmp_path / "done", expect=judged)
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


_WORKER = """
import sys
from pathlib import Path
from daemon import leftovers, mover
root, n, k = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sys.stdin.readline()  # start together
for i in range(k):
    src = root / f"p{n}-{i}" / "x.pdf"
    (mover.move_into if i % 2 else mover.fail_into)(*(
        (src, root / "out") if i % 2 else (src, root / "out", {"sha256": f"{n}-{i}"})))
"""


def test_processes_sharing_a_folder_never_overwrite_each_other(tmp_path):
    """Two daemons (or a daemon and a person) writing one done/: every file survives."""
    processes, per = 4, 30
    for n in range(processes):
        for i in range(per):
            d = tmp_path / f"p{n}-{i}"
            d.mkdir()
            (d / "x.pdf").write_bytes(f"{n}-{i}".encode())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path), str(n), str(per)],
            stdin=subprocess.PIPE, env=env,
        )
        for n in range(processes)
    ]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.close()
    assert all(p.wait(60) == 0 for p in procs)
    out = tmp_path / "out"
    files = [p for p in out.iterdir() if not p.name.endswith(mover.SIDECAR_SUFFIX)]
    assert sorted(p.read_bytes() for p in files) == sorted(
        f"{n}-{i}".encode() for n in range(processes) for i in range(per)
    )
    sidecars = [p for p in out.iterdir() if p.name.endswith(mover.SIDECAR_SUFFIX)]
    assert len(sidecars) == processes * per // 2
    for sidecar in sidecars:  # each report sits beside the file it describes
        report = json.loads(sidecar.read_text())
        beside = sidecar.with_name(sidecar.name[: -len(mover.SIDECAR_SUFFIX)])
        assert beside.read_bytes().decode() == report["sha256"]


def name_bytes(path: Path) -> int:
    return len(os.fsencode(path.name))


def test_a_255_byte_name_that_clashes_is_shortened_keeping_its_extension(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    name = "é" * 123 + "abcde.pdf"  # 246 + 5 + 4 = 255 bytes, the most Linux allows
    assert len(name.encode()) == 255
    (done / name).write_bytes(b"first")
    src = tmp_path / name
    src.write_bytes(b"second")
    dest = mover.move_into(src, done)
    assert dest.suffix == ".pdf" and name_bytes(dest) <= 255
    assert dest.name.endswith("-1.pdf") and dest.read_bytes() == b"second"
    assert dest.name.encode().decode("utf-8")  # never cut inside a character
    third = tmp_path / name
    third.write_bytes(b"third")
    assert mover.move_into(third, done).name.endswith("-2.pdf")


def test_long_names_get_their_sidecar(tmp_path):
    failed = tmp_path / "failed"
    name = "x" * 241 + ".pdf"  # 245 bytes: with .error.json it would be 256
    src = tmp_path / name
    src.write_bytes(b"bad")
    dest = mover.fail_into(src, failed, {"reason": "empty", "sha256": "s"})
    sidecar = dest.with_name(dest.name + mover.SIDECAR_SUFFIX)
    assert dest.suffix == ".pdf" and sidecar.exists()
    assert name_bytes(sidecar) <= 255 and dest.read_bytes() == b"bad"


def test_raw_byte_names_and_long_names_cross_filesystems(tmp_path, tmpfs):
    other = tmpfs()
    raw = os.fsdecode(b"facture-\xff\xfe-" + b"y" * 220 + b".pdf")  # not UTF-8, 234 bytes
    src = tmp_path / raw
    src.write_bytes(b"%PDF-1.7 raw")
    (other / raw).write_bytes(b"already there")
    dest = mover.move_into(src, other)
    assert os.fsencode(dest.name).startswith(b"facture-\xff\xfe-") and dest.suffix == ".pdf"
    assert dest.read_bytes() == b"%PDF-1.7 raw" and not src.exists()
    assert sorted(p.name.startswith(".") for p in other.iterdir()) == [False, False]


def test_start_up_cleans_temporaries_of_dead_processes_only(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    (done / f".qonto-invoice-daemon.{dead_pid}.3.tmp").write_bytes(b"half a copy")
    (done / f".qonto-invoice-daemon-{dead_pid}-old-style.pdf").write_bytes(b"half")
    live_tmp = done / f".qonto-invoice-daemon.{os.getppid()}.1.tmp"
    live_tmp.write_bytes(b"another daemon copying")
    (done / "invoice.pdf").write_bytes(b"a real file")
    assert leftovers.clean_temporaries(done) == 2
    assert sorted(p.name for p in done.iterdir()) == sorted([live_tmp.name, "invoice.pdf"])


def test_find_copy_recognises_a_complete_copy(tmp_path):
    import hashlib

    done = tmp_path / "done"
    done.mkdir()
    (done / "inv-1.pdf").write_bytes(b"other")
    (done / "inv-2.pdf").write_bytes(b"content")
    sha = hashlib.sha256(b"content").hexdigest()
    assert leftovers.find_copy(done, "inv.pdf", sha, 7) == done / "inv-2.pdf"
    assert leftovers.find_copy(done, "zzz.pdf", sha, 7) is None


def test_rewritten_in_place_during_a_copy_keeps_the_new_content(tmp_path, tmpfs):
    """A slow share: the ERP rewrites the file (same inode) between the copy and the removal."""
    other = tmpfs()
    src = tmp_path / "a.pdf"
    src.write_bytes(b"%PDF old version")
    placement = mover._Placement(src, other, Identity.lstat(src))
    placement.place(other / "a.pdf")
    with src.open("r+b") as fh:
        fh.write(b"%PDF new version")
    with pytest.raises(FileChanged):
        placement.finish(other / "a.pdf")
    assert src.read_bytes() == b"%PDF new version"  # the new content is not lost
    assert list(other.iterdir()) == []  # and the old is not filed in its place


def test_rewritten_in_place_after_the_link_is_not_filed(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    src = tmp_path / "a.pdf"
    src.write_bytes(b"%PDF old version")
    placement = mover._Placement(src, done, Identity.lstat(src))
    placement.place(done / "a.pdf")  # a hard link: both names, one inode
    with src.open("r+b") as fh:
        fh.write(b"%PDF new version")
    with pytest.raises(FileChanged):
        placement.finish(done / "a.pdf")
    assert src.read_bytes() == b"%PDF new version" and list(done.iterdir()) == []


def test_a_failed_rename_on_a_share_without_links_leaves_no_empty_file(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    real_rename = os.rename

    def broken_rename(a, b, *args, **kwargs):
        if ".qonto-invoice-daemon." in os.fspath(a):
            raise OSError(errno.EIO, "Input/output error")  # the share dropped
        return real_rename(a, b, *args, **kwargs)

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(os, "rename", broken_rename)
    done = tmp_path / "done"
    src = tmp_path / "c.pdf"
    src.write_bytes(b"data")
    for _ in range(3):
        with pytest.raises(OSError):
            mover.move_into(src, done)
    assert list(done.iterdir()) == [] and src.read_bytes() == b"data"


def test_a_folder_that_cannot_be_synced_still_gets_exactly_one_copy(tmp_path):
    """A drop-box done/ (writable, not readable) as an unprivileged user: one move, one file."""
    import shutil
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as an unprivileged user")
    box = Path(tempfile.mkdtemp(prefix="qid-dropbox-"))  # pytest's own tmp is root-only
    os.chmod(box, 0o755)
    inbox = box / "in"
    done = box / "done"
    inbox.mkdir()
    done.mkdir()
    (inbox / "a.pdf").write_bytes(b"%PDF data")
    for path in (box, inbox, done, inbox / "a.pdf"):
        os.chown(path, 65534, 65534)
    os.chmod(done, 0o333)
    code = (
        "import sys; from pathlib import Path; from daemon import mover; "
        f"print(mover.move_into(Path({str(inbox / 'a.pdf')!r}), Path({str(done)!r})))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         code], capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stderr
    os.chmod(done, 0o755)
    try:
        assert os.listdir(done) == ["a.pdf"] and not (inbox / "a.pdf").exists()
    finally:
        shutil.rmtree(box)


def test_temporaries_of_other_machines_are_left_to_them(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    theirs = done / ".qonto-invoice-daemon.other-host.1.0.tmp"  # pid 1 here is not theirs
    theirs.write_bytes(b"a copy in progress on another machine")
    assert leftovers.clean_temporaries(done) == 0 and theirs.exists()
