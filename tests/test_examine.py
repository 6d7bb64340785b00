"""Reading files safely and judging them by their content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.errors import UnsafeFile
from daemon.flow import examine as inspect
from daemon.testing.samples import facturx_pdf
from daemon.watcher import is_candidate, scan

LIMIT = 5_000_000


def check(tmp_path: Path, name: str, data: bytes, limit: int = LIMIT) -> inspect.Inspection:
    path = tmp_path / name
    path.write_bytes(data)
    return inspect.examine(inspect.read_regular(path, limit), name, limit, limit)


def test_facturx_pdf_is_accepted_as_a_complete_pdf(tmp_path):
    path = facturx_pdf(tmp_path / "f.pdf", "F-1")
    found = inspect.examine(inspect.read_regular(path, LIMIT), "f.pdf", LIMIT, LIMIT)
    assert found.problem is None and found.kind == "pdf" and found.complete


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


def jpeg_with_thumbnail() -> tuple[bytes, int]:
    """A real JPEG whose EXIF segment holds a whole thumbnail JPEG (with its own FFD9).

    Returns the file and the offset just past the thumbnail's end marker.
    """
    import io

    from PIL import Image

    def encode(size: int, **kw: object) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (size, size), (200, 80, 40)).save(out, "JPEG", **kw)
        return out.getvalue()

    main, thumb = encode(64, progressive=True), encode(8)
    payload = b"Exif\x00\x00" + thumb + b"\x00" * 16
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    data = main[:2] + app1 + main[2:]
    return data, 2 + 4 + 6 + len(thumb)


def test_completeness_by_format(tmp_path):
    pdf = facturx_pdf(tmp_path / "f.pdf", "F-1").read_bytes()
    assert inspect.is_complete(pdf, "pdf")
    assert not inspect.is_complete(pdf[: len(pdf) // 2], "pdf")
    # An incremental update appends a body and another %%EOF; the first one is long past.
    assert inspect.is_complete(pdf + b"\n" + b"1 0 obj\n" * 300 + b"%%EOF\n", "pdf")
    assert not inspect.is_complete(pdf + b"\n" + b"1 0 obj\n" * 300, "pdf")

    from daemon.commands.demo import tiny_png

    png = tiny_png(40, 40)
    assert inspect.is_complete(png, "png")
    assert not inspect.is_complete(png[:-12], "png") and not inspect.is_complete(png[:30], "png")

    jpeg, thumb_end = jpeg_with_thumbnail()
    assert inspect.sniff(jpeg) == "jpeg" and inspect.is_complete(jpeg, "jpeg")
    assert jpeg[thumb_end - 2 : thumb_end] == b"\xff\xd9"
    # Cut right after the thumbnail's end marker: still incomplete.
    for cut in (thumb_end, thumb_end + 16, len(jpeg) // 2, len(jpeg) - 2, len(jpeg) - 1):
        assert not inspect.is_complete(jpeg[:cut], "jpeg"), cut


def test_an_incomplete_file_is_marked_not_failed(tmp_path):
    pdf = facturx_pdf(tmp_path / "f.pdf", "F-1").read_bytes()
    found = check(tmp_path, "half.pdf", pdf[: len(pdf) // 2])
    assert found.problem is None and not found.complete
    assert check(tmp_path, "whole.pdf", pdf).complete


def test_a_file_written_while_read_is_not_hashed(tmp_path, monkeypatch):
    """The hash must describe one version of the file, never a mix of two."""
    from daemon.errors import FileChanged

    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF-1.7 " + b"x" * (3 << 20))
    real_fstat = os.fstat
    calls = []

    def fstat_then_write(fd):
        calls.append(fd)
        if len(calls) == 2:  # between the read and the final check, the writer appends
            with open(path, "ab") as fh:
                fh.write(b"more")
        return real_fstat(fd)

    monkeypatch.setattr(os, "fstat", fstat_then_write)
    with pytest.raises(FileChanged):
        inspect.read_regular(path, LIMIT)
