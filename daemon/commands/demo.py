"""`qonto-invoice-daemon demo`: the whole path, against the local Qonto stand-in.

Makes a temporary workspace with generated Factur-X invoices, a PNG scan, a
copy of one invoice under another name, and a broken file; serves the
emulator on loopback; runs the daemon once over the inbox; shows the result.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

from .. import config, logs
from ..mover import SIDECAR_SUFFIX
from ..testing.emulator import Emulator, serve

DEMO_LOGIN = "demo-org-1234"
DEMO_SECRET = "demo-secret-key"  # a throwaway key for the local stand-in only


def tiny_png(width: int = 4, height: int = 4) -> bytes:
    """A real, small grey PNG (a stand-in for a scanned invoice)."""
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _make_inbox(inbox: Path) -> None:
    from ..testing.samples import facturx_pdf

    inbox.mkdir(parents=True)
    first = facturx_pdf(inbox / "F-2026-0001.pdf", "F-2026-0001", 125000)
    facturx_pdf(inbox / "F-2026-0002.pdf", "F-2026-0002", 48000, buyer="Boulangerie Dupont")
    facturx_pdf(inbox / "Facture été F-2026-0003.pdf", "F-2026-0003", 9900, buyer="Café Noël")
    (inbox / "scan-2026-11-24.png").write_bytes(tiny_png())
    shutil.copyfile(first, inbox / "F-2026-0001 (copy).pdf")
    (inbox / "notes.pdf").write_text("Call the client about invoice 0004.\n", encoding="utf-8")
    (inbox / "F-2026-0005.pdf.part").write_bytes(b"%PDF-1.7 still being written")


async def run_demo(*, keep: bool = False) -> int:
    try:
        import reportlab  # noqa: F401
    except ImportError:
        print(
            "demo: the demo needs reportlab to draw its sample invoices: "
            "pip install 'qonto-invoice-daemon[demo]'",
            file=sys.stderr,
        )
        return 1
    from ..service import Service

    work = Path(tempfile.mkdtemp(prefix="qonto-invoice-daemon-demo-"))
    inbox = work / "inbox"
    try:
        _make_inbox(inbox)
        emulator = Emulator({DEMO_LOGIN: DEMO_SECRET})
        async with serve(emulator) as base_url:
            cfg = config.from_dict(
                {
                    "qonto": {
                        "base_url": base_url,
                        "login": DEMO_LOGIN,
                        "secret_key_env": "QONTO_SECRET_KEY",
                    },
                    "database": {"path": str(work / "state.sqlite3")},
                    "watch": {"settle_seconds": 0.5},
                    "upload": {"linger_seconds": 0.2},
                    "folders": [
                        {
                            "inbox": str(inbox),
                            "done": str(inbox / "done"),
                            "failed": str(inbox / "failed"),
                        }
                    ],
                },
                env={"QONTO_SECRET_KEY": DEMO_SECRET},
                base_dir=work,
            )
            print(f"Workspace: {work}")
            print(f"Qonto stand-in: {base_url}")
            print("Inbox before:", ", ".join(sorted(p.name for p in inbox.iterdir())))
            print("\nThe daemon's log:\n")
            logs.configure("console", "info")
            code = await Service(cfg, once=True).run()
            _report(inbox, emulator)
            print(f"\n`run --once` would exit with status {code} (1: some files failed).")
            await _einvoicing(work, base_url, emulator)
        if keep:
            print(f"Workspace kept: {work}")
        return 0
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


async def _einvoicing(work: Path, base_url: str, emulator: Emulator) -> None:
    """A folder with send_by_einvoice: one invoice goes through its lifecycle; one waits
    for its client to join the e-invoicing network, then goes out by itself."""
    import asyncio
    import hashlib
    import time

    from ..journal import Journal
    from ..service import Service
    from ..testing.samples import facturx_pdf

    inbox = work / "einvoice-inbox"
    inbox.mkdir()
    facturx_pdf(inbox / "F-2026-0100.pdf", "F-2026-0100", 240000, buyer="Garage Martin")
    facturx_pdf(inbox / "F-2026-0101.pdf", "F-2026-0101", 15000, buyer="UNREACHABLE SARL")
    emulator.lifecycle_step_s = 0.4  # Qonto's platform, in fast motion
    print("\nE-invoicing: a folder with send_by_einvoice = true (two invoices; the second "
          "one's client is not reachable on the e-invoicing network yet: it is held, and "
          "sent by itself once the client is)\n")
    cfg = config.from_dict(
        {
            "qonto": {"base_url": base_url, "login": DEMO_LOGIN,
                      "secret_key_env": "QONTO_SECRET_KEY"},
            "database": {"path": str(work / "state.sqlite3")},
            "watch": {"settle_seconds": 0.5},
            "einvoicing": {"poll_initial_seconds": 0.4, "poll_max_seconds": 0.8,
                           "recheck_seconds": 1.0},
            "folders": [{"inbox": str(inbox), "done": str(inbox / "done"),
                         "failed": str(inbox / "failed"), "send_by_einvoice": True}],
        },
        env={"QONTO_SECRET_KEY": DEMO_SECRET},
        base_dir=work,
    )
    service = Service(cfg)
    task = asyncio.create_task(service.run())
    shas = {}
    released = False
    journal = await Journal.open_readonly(work / "state.sqlite3")
    assert journal is not None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.2)
            done = sorted((inbox / "done").glob("*.pdf")) if (inbox / "done").exists() else []
            shas = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in done}
            rows = [e for sha in shas.values() for e in await journal.einvoices_of(DEMO_LOGIN, sha)]
            if any(e.state == "held" for e in rows) and not released:
                # Meanwhile the client registers in the national directory.
                for client in emulator.clients.values():
                    client.e_invoicing_reachable = True
                released = True
                print("\n(the client is now reachable on the e-invoicing network)\n")
            if released and len(rows) == 2 and all(202 in e.codes for e in rows):
                break  # both received by the buyers' platforms
        service.request_stop("demo")
        await task
        print("\nE-invoices (lookup --json: einvoice_state, einvoice_events):")
        for name, sha in sorted(shas.items()):
            for e in await journal.einvoices_of(DEMO_LOGIN, sha):
                events = ", ".join(f"{x.code} at {x.at}" for x in e.events) or "-"
                print(f"  {name:<20} {e.state:<10} {e.einvoicing_status or '':<10} {events}")
    finally:
        await journal.close()


def _report(inbox: Path, emulator: Emulator) -> None:
    ids = emulator.invoices_of(DEMO_LOGIN)
    import hashlib

    print("\nImported (done/):")
    for path in sorted((inbox / "done").glob("*")):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"  {path.name:<32} invoice_id {ids.get(sha, '?')}")
    print("Failed (failed/):")
    for sidecar in sorted((inbox / "failed").glob("*" + SIDECAR_SUFFIX)):
        report = json.loads(sidecar.read_text(encoding="utf-8"))
        name = sidecar.name[: -len(SIDECAR_SUFFIX)]
        print(f"  {name:<32} {report['reason']}: {report['detail']}")
    left = sorted(p.name for p in inbox.iterdir() if p.is_file())
    print("Left in the inbox (temporary names are not touched):", ", ".join(left) or "nothing")
    print(f"Invoices on the stand-in: {len(ids)} (the copy was recognised as a duplicate)")
