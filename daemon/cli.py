"""Command line: `run`, `lookup`, `demo`. The only place that calls asyncio.run."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from . import __version__, config, inspect, logs, malloc, online
from . import status as status_mod
from .errors import AlreadyRunning, ConfigError, JournalError, UnsafeFile
from .journal import Journal
from .redact import Redactor
from .service import Service

# 75: a temporary failure (a full disk under the journal): systemd may restart.
# 78: a person must act (configuration, an unusable journal): systemd must not.
EX_OK, EX_FAILED, EX_USAGE, EX_TEMPFAIL, EX_CONFIG = 0, 1, 2, 75, 78


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qonto-invoice-daemon",
        description="Import already-issued client invoices from watched folders into Qonto.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="watch the folders and upload (until SIGTERM)")
    run.add_argument("--config", required=True, type=Path, help="the TOML configuration file")
    run.add_argument(
        "--once",
        action="store_true",
        help="handle what is in the inboxes now, then exit: 0 if all went to done/, "
        "1 if some failed or had to wait",
    )

    lookup = sub.add_parser("lookup", help="what the journal knows about files")
    lookup.add_argument("--config", required=True, type=Path)
    lookup.add_argument("--json", action="store_true", help="one JSON object per line")
    lookup.add_argument("paths", nargs="+", type=Path, metavar="PATH")

    status = sub.add_parser("status", help="what the daemon is doing (it may be running)")
    status.add_argument("--config", required=True, type=Path)
    status.add_argument("--json", action="store_true", help="one JSON object")

    retry = sub.add_parser("retry", help="move failed files back into their inbox")
    retry.add_argument("--config", required=True, type=Path)
    retry.add_argument("--all", action="store_true", help="every file in every failed/ folder")
    retry.add_argument("--einvoice", action="store_true",
                       help="send rejected e-invoices again (PATH: their files, in done/)")
    retry.add_argument("paths", nargs="*", type=Path, metavar="PATH")

    check = sub.add_parser("check-config", help="check a configuration before (re)starting")
    check.add_argument("--config", required=True, type=Path)
    check.add_argument("--online", action="store_true",
                       help="also make one authenticated read-only request per organization")

    demo = sub.add_parser("demo", help="a self-contained run against a local Qonto stand-in")
    demo.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return asyncio.run(run_demo(keep=args.keep))
    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        print(f"qonto-invoice-daemon: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "status":
        report = asyncio.run(status_mod.collect(cfg))
        print(status_mod.as_json(report) if args.json else status_mod.render(report))
        return EX_OK
    if args.command == "retry":
        if not args.paths and not args.all:
            print("qonto-invoice-daemon: retry: name failed files, or --all", file=sys.stderr)
            return EX_USAGE
        if args.einvoice:
            try:
                return asyncio.run(retry_einvoices(cfg, args.paths, args.all))
            except JournalError as exc:
                print(f"qonto-invoice-daemon: {exc}: {exc.hint}", file=sys.stderr)
                return EX_TEMPFAIL if exc.temporary else EX_CONFIG
        moved, problems = status_mod.retry(cfg, args.paths, args.all)
        for line in moved:
            print(f"moved {logs.printable(line)}")
        for line in problems:
            print(f"qonto-invoice-daemon: retry: {logs.printable(line)}", file=sys.stderr)
        return EX_OK if not problems else EX_FAILED
    if args.command == "check-config":
        problems, notes = status_mod.check(cfg)
        if args.online:
            problems += asyncio.run(online.check(cfg))
        for note in notes:
            print(f"note: {note}")
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        if not problems:
            print("configuration OK")
        return EX_CONFIG if problems else EX_OK
    if args.command == "lookup":
        try:
            return asyncio.run(lookup(cfg, args.paths, as_json=args.json))
        except JournalError as exc:
            print(f"qonto-invoice-daemon: {exc}: {exc.hint}", file=sys.stderr)
            return EX_TEMPFAIL if exc.temporary else EX_CONFIG
    redact = Redactor(cfg.secret_values())
    logs.configure(cfg.log_format, cfg.log_level, redact=redact)

    try:
        return _serve(Service(cfg, once=args.once, redact=redact))
    except KeyboardInterrupt:
        return EX_OK
    except JournalError as exc:
        structlog.get_logger().critical(
            "journal_unusable", error=str(exc), hint=exc.hint, path=exc.path
        )
        return EX_TEMPFAIL if exc.temporary else EX_CONFIG
    except AlreadyRunning as exc:
        # 75: under systemd, try again later (the other one may be a manual run that ends).
        structlog.get_logger().critical("daemon_already_running", error=str(exc))
        return EX_TEMPFAIL
    except Exception as exc:
        structlog.get_logger().critical(
            "daemon_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True
        )
        return EX_FAILED


def _serve(service: Service) -> int:
    """Run the service; after a second stop signal, exit without waiting for threads.

    A blocking call still running in a worker thread (a hash on a hung share)
    cannot be interrupted, and the event loop's shutdown would wait for it.
    Everything the daemon records is committed or atomic by then, so the
    process may end as it would after SIGKILL, only cleaner.
    """
    malloc.return_large_buffers()
    runner = asyncio.Runner()
    try:
        code = runner.run(service.run())
    except BaseException:
        runner.close()
        raise
    if service.forced:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    runner.close()
    return code


async def lookup(cfg: config.Config, paths: Sequence[Path], *, as_json: bool) -> int:
    """Hash each file and print what the journal knows of its content."""
    status = EX_OK
    redact = Redactor(cfg.secret_values())  # journals written by older versions may hold one
    rows: list[dict[str, object]] = []
    journal = await Journal.open_readonly(cfg.database)
    try:
        for path in paths:
            try:
                content = await asyncio.to_thread(inspect.read_regular, path, 0)
            except (OSError, UnsafeFile) as exc:
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                print(f"{logs.printable(str(path))}: cannot read: {detail}", file=sys.stderr)
                status = EX_FAILED
                continue
            org = _org_of(cfg, path)
            records = await journal.find(content.sha256) if journal else []
            # Prefer the row of the organization whose folder holds the file.
            records = [r for r in records if org is None or r.org == org]
            records.sort(key=lambda r: r.invoice_id is None)
            r = records[0] if records else None
            einvoices = await journal.einvoices_of(r.org, r.sha256) if journal and r else []
            einvoice = einvoices[0] if einvoices else None
            rows.append({
                "path": logs.printable(str(path)),
                "sha256": content.sha256,
                "invoice_id": r.invoice_id if r else None,
                "state": r.state if r else "unknown",
                "organization": r.org if r else org,
                "last_error": redact(r.last_error) if r and r.last_error else None,
                "updated_at": r.updated_at if r else None,
                # What the invoice XML said (flavor, profile, number, seller...), if read.
                "facturx": r.facts if r else None,
                # Sent by e-invoice: none (its folder does not send), pending, submitted,
                # rejected, final; Qonto's einvoicing_status; the lifecycle codes seen.
                "einvoice_state": einvoice.state if einvoice else "none",
                "einvoicing_status": einvoice.einvoicing_status if einvoice else None,
                "einvoice_lifecycle": einvoice.codes if einvoice else [],
            })
    finally:
        if journal is not None:
            await journal.close()
    for row in rows:
        row = {k: _printable(v) for k, v in row.items()}
        if as_json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        else:
            state = row["state"]
            invoice = row["invoice_id"] or "-"
            print(f"{row['path']}\t{row['sha256']}\t{state}\t{invoice}", flush=True)
    return status


async def retry_einvoices(cfg: config.Config, paths: Sequence[Path], everything: bool) -> int:
    """Rejected e-invoices become pending: the daemon sends them again within a minute."""
    journal = await Journal.open(cfg.database)
    status = EX_OK
    try:
        if everything:
            count = await journal.retry_einvoices()
            print(f"{count} rejected e-invoice(s) will be sent again")
            return EX_OK
        for path in paths:
            shown = logs.printable(str(path))
            try:
                content = await asyncio.to_thread(inspect.read_regular, path, 0)
            except (OSError, UnsafeFile) as exc:
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                print(f"qonto-invoice-daemon: retry: {shown}: cannot read: {detail}",
                      file=sys.stderr)
                status = EX_FAILED
                continue
            org = _org_of(cfg, path)
            count = 0
            for r in await journal.find(content.sha256):
                if org is None or r.org == org:
                    count += await journal.retry_einvoices(r.org, r.sha256)
            if count:
                print(f"will send again: {shown}")
            else:
                print(f"qonto-invoice-daemon: retry: {shown}: no rejected e-invoice for this "
                      "file", file=sys.stderr)
                status = EX_FAILED
    finally:
        await journal.close()
    return status


def _printable(value: object) -> object:
    if isinstance(value, str):
        return logs.printable(value)
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    return value


def _org_of(cfg: config.Config, path: Path) -> str | None:
    where = path.resolve().parent
    for folder in cfg.folders:
        if where in (folder.inbox.resolve(), folder.done.resolve(), folder.failed.resolve()):
            return folder.org.key
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
