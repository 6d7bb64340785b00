"""`run --dry-run`: what the daemon would do with each file in the inboxes, doing none of it.

Each file is settled, read, checked and parsed as `run` would, and judged
against the journal as it stands (read only): sent, a duplicate of which
invoice, a re-export, failed with which reason. Nothing is sent, moved or
written, and no secret is read: the way to try an ERP's export before going
live.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from .. import logs, qonto, watcher
from ..config import Config, Folder
from ..errors import FileChanged, UnsafeFile
from ..flow import examine
from ..flow.decide import Verdict, decide
from ..flow.reading import Reader, pools
from ..flow.rules import fatal_ids
from ..identity import Seen
from ..journal import Journal
from .common import EX_FAILED, EX_OK


async def dry_run(cfg: Config, *, as_json: bool) -> int:
    listed: list[tuple[Folder, Seen]] = []
    for folder in cfg.folders:
        try:
            found = await asyncio.to_thread(watcher.scan, folder.inbox)
        except OSError as exc:
            _say({"path": str(folder.inbox), "would": "wait",
                  "detail": f"the inbox cannot be listed: {exc.strerror or exc}"}, as_json)
            continue
        listed += [(folder, seen) for seen in found.files]
    # Settled as `run` settles them: unchanged over settle_seconds.
    await asyncio.sleep(cfg.watch.settle_s)
    parsers, rules = pools(cfg)
    reader = Reader(parsers, rules, asyncio.Event())
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        journal = await Journal.open_readonly(cfg.database) or await Journal.open(
            Path(scratch) / "empty.sqlite3"  # no journal yet: nothing is known
        )
        try:
            in_hand = {seen.path for _, seen in listed}
            first_of: dict[str, Path] = {}
            for folder, seen in listed:
                answer = await _judge(cfg, folder, seen, journal, reader, in_hand, first_of)
                failed |= answer["would"] == "fail"
                _say(answer, as_json)
        finally:
            if parsers is not None:
                parsers.close()
            if rules is not None:
                rules.close()
            await journal.close()
    return EX_FAILED if failed else EX_OK


async def _judge(
    cfg: Config,
    folder: Folder,
    seen: Seen,
    journal: Journal,
    reader: Reader,
    in_hand: set[Path],
    first_of: dict[str, Path],
) -> dict[str, Any]:
    path = seen.path
    out: dict[str, Any] = {"path": logs.printable(str(path)), "organization": folder.org.key}
    now = await asyncio.to_thread(watcher.stat_all, [path])
    if now.get(path) != seen:
        return out | {"would": "wait", "detail": "it is being written (or it went away)"}
    limit = cfg.upload.max_file_bytes
    try:
        content = await asyncio.to_thread(examine.read_regular, path, limit)
    except (OSError, UnsafeFile, FileChanged) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return out | {"would": "wait", "detail": f"it cannot be read: {detail}"}
    found = await asyncio.to_thread(examine.examine, content, path.name, limit, limit)
    out["sha256"] = found.sha256
    read = await reader.read(folder, path, found, content)
    assert read is not None  # nothing stops a dry run half-way
    if read.invoice is not None:
        out["facturx"] = read.invoice.label
        out["number"] = read.invoice.number
    if read.rules is not None:
        out["rules"] = fatal_ids(read.invoice)
    invoice, unreadable, verdict = read.invoice, read.unreadable, read.rules
    decision = await decide(
        journal, folder, path, found, invoice, unreadable,
        numbers=cfg.validation.duplicate_number, in_hand=in_hand, rules=verdict,
    )
    match decision.verdict:
        case Verdict.SEND:
            first = first_of.setdefault(found.sha256, path)
            if first != path:
                return out | {"would": "duplicate", "duplicate_of": str(first),
                              "detail": "the same content as another file here: sent once"}
            warnings = [w for w in (decision.warning, decision.rules_warning) if w is not None]
            if warnings:
                out["warning"] = "; ".join(f"{w.reason}: {w.detail}" for w in warnings)
            return out | {"would": "send", "name": qonto.upload_name(path.name),
                          "einvoice": folder.send_by_einvoice}
        case Verdict.KNOWN:
            assert decision.record is not None
            return out | {"would": "duplicate", "invoice_id": decision.record.invoice_id,
                          "duplicate_of": str(decision.record.path),
                          "einvoice": decision.einvoice}
        case Verdict.TWIN:
            assert decision.record is not None
            return out | {"would": "duplicate", "duplicate_of": str(decision.record.path),
                          "detail": "its content is already on its way"}
        case Verdict.FAIL:
            assert decision.problem is not None
            return out | {"would": "fail", "reason": decision.problem.reason,
                          "detail": decision.problem.detail}
        case Verdict.HOLD:
            assert decision.problem is not None
            return out | {"would": "wait", "reason": decision.problem.reason,
                          "detail": decision.problem.detail}
        case Verdict.INCOMPLETE:
            return out | {"would": "wait",
                          "detail": "it does not end like a complete file: its writer may "
                          "not have finished"}


def _say(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer, ensure_ascii=False), flush=True)
        return
    what = answer["would"]
    extra = answer.get("reason") or answer.get("invoice_id") or ""
    detail = answer.get("detail") or answer.get("warning") or ""
    line = f"{answer['path']}\t{what}"
    if extra:
        line += f"\t{extra}"
    if detail:
        line += f"\t{detail}"
    print(line, file=sys.stdout, flush=True)
