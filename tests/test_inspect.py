"""Reading files safely and judging them by their content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon import inspect
from daemon.errors import UnsafeFile
from daemon.samples import facturx_pdf
from daemon.watcher import is_candidate, scan

LIMIT = 5_000_000


def check(tmp_path: Path, name: str, data: bytes, limit: int = LIMIT) -> inspect.Inspection:
    path = tmp_path / name
    path.write_bytes(data)
    return inspect.examine(inspect.read_regular(path, limit), name, limit, limit)


def test_facturx_pdf_is_accepted_and_recognised(tmp_path):
    path = facturx_pdf(tmp_path / "f.pdf", "F-1")
    found = inspect.examine(inspect.read_regular(path, LIMIT), "f.pdf", LIMIT, LIMIT)
    assert found.problem is None and found.kind == "pdf"
    assert found.facturx == "factur-x/minimum"


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("a.pdf", b"", "empty"),
    ("a.pdf", b"hello", "unsupported_type"),
    ("a.docx", b"%PDF-1.7", "unsupported_type"),
    ("noext", b"%PDF-1.7", "unsupported_type"),
    ("a.pdf", b"\x89PNG\r\n\x1a\n....", "extension_mismatch"),
    ("a.PNG", b"\xff\xd8\xff\xe0 jpeg", "extension_mismatch"),
])
def test_rejections(tmp_path, name, data, reason):
    found = check(tmp_path, name, data)
    assert found.problem is not None and found.problem.reason == reason


@pytest.mark.parametrize(("name", "data"), [
    ("A.PDF", b"%PDF-1.4 x"),
    ("scan.JPG", b"\xff\xd8\xff\xe0 jpeg"),
    ("scan.jpeg", b"\xff\xd8\xff\xdb jpeg"),
    ("scan.png", b"\x89PNG\r\n\x1a\n...."),
])
def test_accepted_types_case_insensitive(tmp_path, name, data):
    assert check(tmp_path, name, data).problem is None


def test_too_large_is_hashed_whole_without_keeping_it(tmp_path):
    data = b"%PDF-1.7\n" + os.urandom(3_000_000)
    found = check(tmp_path, "big.pdf", data, limit=1_000_000)
    assert found.problem is not None and found.problem.reason == "too_large"
    import hashlib

    assert found.sha256 == hashlib.sha256(data).hexdigest()
    assert found.size == len(data)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFile, match="FIFO"):
        inspect.read_regular(fifo, LIMIT)


def test_symlink_is_refused(tmp_path):
    target = tmp_path / "private.pdf"
    target.write_bytes(b"%PDF-1.7 secret")
    (tmp_path / "link.pdf").symlink_to(target)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        inspect.read_regular(tmp_path / "link.pdf", LIMIT)


@pytest.mark.parametrize("name", [
    ".hidden.pdf", "~$lock.pdf", "a.tmp", "a.PART", "a.partial", "a.crdownload", "a.filepart",
    "a.swp", ".syncthing.a.pdf.tmp", "~syncthing~a.pdf.tmp", "Thumbs.db", "desktop.ini",
    ".DS_Store", "._a.pdf", "a.pdf.error.json",
])
def test_temporary_and_junk_names_are_not_input(name):
    assert not is_candidate(name)


@pytest.mark.parametrize("name", ["a.pdf", "Facture été.PDF", "scan 1.jpg", "x.tmp.pdf"])
def test_ordinary_names_are_input(name):
    assert is_candidate(name)


def test_scan_lists_regular_files_only(tmp_path):
    (tmp_path / "a.pdf").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.pdf").write_bytes(b"x")
    (tmp_path / "link.pdf").symlink_to(tmp_path / "a.pdf")
    os.mkfifo(tmp_path / "p.pdf")
    (tmp_path / "c.pdf.part").write_bytes(b"x")
    found = scan(tmp_path)
    assert [s.path.name for s in found.files] == ["a.pdf"]
    assert sorted(s.path.name for s in found.skipped) == ["link.pdf", "p.pdf"]


def test_undecodable_name_is_handled(tmp_path):
    raw = os.fsencode(tmp_path) + b"/facture-\xe9.pdf"
    with open(raw, "wb") as fh:
        fh.write(b"%PDF-1.7 x")
    found = scan(tmp_path)
    (seen,) = found.files
    assert inspect.read_regular(seen.path, LIMIT).size == 10
