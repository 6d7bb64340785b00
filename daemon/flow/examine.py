"""Step 3: what a file is. Read it safely, hash it, and decide whether Qonto could take it.

Everything here blocks (open, read, hash, PDF parsing): call it in a thread.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from pathlib import Path

from ..errors import FileChanged, UnsafeFile
from ..identity import Identity, describe_mode
from .records import Content, Inspection, Kind, Problem

PDF, JPEG, PNG = Kind.PDF, Kind.JPEG, Kind.PNG
_HEAD_BYTES = 1024
EXTENSIONS = {".pdf": PDF, ".jpg": JPEG, ".jpeg": JPEG, ".png": PNG}



def read_regular(path: Path, limit_bytes: int) -> Content:
    """Read a regular file without following links or blocking on FIFOs.

    A file over `limit_bytes` is hashed whole but not kept in memory. Raises
    UnsafeFile for anything that is not a regular file, FileChanged when it
    was written to while being read, OSError when it cannot be read.
    """
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{describe_mode(st.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile("a symbolic link, not a regular file") from None
        raise
    with os.fdopen(fd, "rb", buffering=0) as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between lstat and open
            raise UnsafeFile(f"{describe_mode(st.st_mode)}, not a regular file")
        before = Identity.of(st)
        if st.st_size <= limit_bytes:
            # One allocation of the file's size (+1 notices a file that grew):
            # no growing buffer, no copy; many files are read at once.
            data = fh.read(st.st_size + 1)
            if len(data) < st.st_size:  # a short read (some network filesystems)
                parts, got = [data], len(data)
                while got <= st.st_size and (chunk := fh.read(st.st_size + 1 - got)):
                    parts.append(chunk)
                    got += len(chunk)
                data = b"".join(parts)
            after = Identity.of(os.fstat(fd))
            if after != before or len(data) != after.size:
                raise FileChanged(str(path))
            return Content(data=data, sha256=hashlib.sha256(data).hexdigest(), identity=after)
        digest = hashlib.sha256()
        buf = io.BytesIO()
        size = 0
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            # Past the limit only the hash and the head are worth keeping.
            if size <= limit_bytes:
                buf.write(chunk)
            elif buf.tell() > _HEAD_BYTES:
                buf.truncate(_HEAD_BYTES)
            elif buf.tell() < _HEAD_BYTES:
                buf.write(chunk[: _HEAD_BYTES - buf.tell()])
        after = Identity.of(os.fstat(fd))
        if after != before or size != after.size:
            # Written to while we read: the hash covers no version of the file.
            raise FileChanged(str(path))
        return Content(data=buf.getvalue(), sha256=digest.hexdigest(), identity=after)


def sniff(data: bytes) -> Kind | None:
    """The file's type from its first bytes, whatever its name says."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    # PDF readers accept the header anywhere in the first 1024 bytes.
    if b"%PDF-" in data[:1024]:
        return PDF
    return None


def is_complete(data: bytes, kind: Kind) -> bool:
    """Whether the content ends the way a finished file of its kind ends.

    A PDF ends with `%%EOF` (incremental updates append another one, so the
    last 1,024 bytes are searched, as PDF readers do); a PNG with its IEND
    chunk; a JPEG with the end-of-image marker that closes its last scan.
    """
    match kind:
        case Kind.PDF:
            return b"%%EOF" in data[-_HEAD_BYTES:]
        case Kind.PNG:
            return _PNG_IEND in data[-_HEAD_BYTES:]
        case Kind.JPEG:
            return _jpeg_complete(data)


_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: empty, with its CRC
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length


def _jpeg_complete(data: bytes) -> bool:
    """Walk the JPEG's segments to the end-of-image marker (FFD9).

    Segments are skipped by their length, so an EXIF thumbnail's own FFD9 near
    the start of the file is never taken for the end of the image. Inside
    entropy-coded data a 0xFF byte is always followed by 0x00 or a restart
    marker, so the next other marker is found by scanning.
    """
    pos, end = 2, len(data)  # after SOI
    while pos + 1 < end:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return True
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > end:
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= end:
                    return False
                following = data[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    pos += 2
                    continue
                break
    return False


def examine(content: Content, name: str, max_file_bytes: int, max_upload_bytes: int) -> Inspection:
    """Check a file read by `read_regular` against everything Qonto would refuse.

    `max_upload_bytes` is the largest file that still fits in one request
    with its multipart framing.
    """
    problem: Problem | None = None
    kind = sniff(content.data)
    ext = os.path.splitext(name)[1].lower()
    expected = EXTENSIONS.get(ext)
    limit = min(max_file_bytes, max_upload_bytes)
    if content.size == 0:
        problem = Problem("empty", "the file is empty (0 bytes): export it again")
    elif content.size > limit:
        problem = too_large(limit)
    elif expected is None:
        problem = Problem(
            "unsupported_type",
            f"the extension {ext or '(none)'!r} is not one Qonto imports: "
            "only PDF (.pdf), JPEG (.jpg, .jpeg) and PNG (.png)",
        )
    elif kind is None:
        problem = Problem(
            "unsupported_type",
            f"the content is not a PDF, JPEG or PNG although the name ends in {ext}: "
            "the file is damaged or not an invoice; export it again",
        )
    elif kind != expected:
        problem = Problem(
            "extension_mismatch",
            f"the name ends in {ext} but the content is {kind.upper()}: "
            "rename it with the right extension and drop it again",
        )
    complete = problem is not None or kind is None or is_complete(content.data, kind)
    return Inspection(
        sha256=content.sha256, identity=content.identity, kind=kind, problem=problem,
        complete=complete,
    )


def too_large(limit: int) -> Problem:
    return Problem(
        "too_large",
        f"the file is larger than {limit:,} bytes, the most Qonto accepts for one file: "
        "reduce it (a lower scan resolution, a compressed PDF) and drop it again",
    )


def truncated(kind: Kind, waited_s: float) -> Problem:
    """The verdict on a file that stayed incomplete and unchanged for `waited_s`."""
    match kind:
        case Kind.PDF:
            end = "%%EOF"
        case Kind.PNG:
            end = "IEND chunk"
        case Kind.JPEG:
            end = "end-of-image marker"
    return Problem(
        "truncated",
        f"the {kind.upper()} stops before its end ({end} missing) and has not changed for "
        f"{waited_s:.0f} s: the writer stopped half-way; export the file again",
    )
