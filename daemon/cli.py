"""Command line: arguments, and dispatch to the service or a command. The only place
that calls asyncio.run."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from . import __version__, config, logs, malloc
from .commands import status as status_mod
from .commands.check import check_online, check_paths_as
from .commands.common import EX_CONFIG, EX_FAILED, EX_OK, EX_TEMPFAIL, EX_USAGE
from .commands.lookup import lookup
from .commands.retry import retry_einvoices, retry_files
from .commands.send import send_einvoices
from .errors import AlreadyRunning, ConfigError, JournalError
from .redact import Redactor
from .service import Service

DEFAULT_CONFIG = Path("/etc/qonto-invoice-daemon/config.toml")
CONFIG_ENV = "QONTO_INVOICE_DAEMON_CONFIG"
# Commands that never talk to Qonto read no secret: a monitoring user, or a shell
# without systemd's credentials, can run them.
_NO_SECRETS = frozenset({"status", "lookup", "retry", "send-einvoice"})


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None,
        help=f"the TOML configuration file (default: ${CONFIG_ENV}, then {DEFAULT_CONFIG})",
    )


def config_path(given: Path | None) -> Path:
    return given or Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _load(path: Path, command: str, dry: bool) -> config.Config:
    if command == "authorize":
        # The refresh token is what it makes: only the client's own secrets are read.
        return config.load(path, secrets=frozenset({"client_secret", "staging_token"}))
    if (command == "run" and not dry) or (command not in _NO_SECRETS and command != "run"):
        return config.load(path)
    if command == "lookup":
        # Secrets it can read clean what older versions may have kept in the journal.
        try:
            return config.load(path)
        except ConfigError:
            pass
    return config.load(path, secrets=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qonto-invoice-daemon",
        description="Import already-issued client invoices from watched folders into Qonto.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="watch the folders and upload (until SIGTERM)")
    _config_option(run)
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                     help="instead of [log] level")
    run.add_argument("--log-format", choices=tuple(logs.LogFormat),
                     help="instead of [log] format")
    run.add_argument(
        "--dry-run", action="store_true",
        help="say what would happen to each file in the inboxes (sent, duplicate, failed and "
        "why) without sending, moving or writing anything; exit 1 if some would fail",
    )
    run.add_argument("--json", action="store_true", help="with --dry-run: one object per line")
    run.add_argument(
        "--once",
        action="store_true",
        help="handle what is in the inboxes now, then exit: 0 if all went to done/, "
        "1 if some failed or had to wait",
    )

    lookup = sub.add_parser("lookup", help="what the journal knows about files")
    _config_option(lookup)
    lookup.add_argument("--json", action="store_true", help="one JSON object per line")
    lookup.add_argument("paths", nargs="+", type=Path, metavar="PATH")

    status = sub.add_parser("status", help="what the daemon is doing (it may be running)")
    _config_option(status)
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument("--check", action="store_true",
                        help="one line and the monitoring-plugin exit status: 0 OK, 1 WARNING, "
                        "2 CRITICAL, 3 UNKNOWN")
    status.add_argument("--max-age", type=float, default=3600.0, metavar="SECONDS",
                        help="with --check: a file waiting longer is a warning (default 3600)")

    retry = sub.add_parser("retry", help="move failed files back into their inbox")
    _config_option(retry)
    retry.add_argument("--all", action="store_true", help="every file in every failed/ folder")
    retry.add_argument("--einvoice", action="store_true",
                       help="send rejected e-invoices again (PATH: their files, in done/)")
    retry.add_argument("paths", nargs="*", type=Path, metavar="PATH")

    send = sub.add_parser(
        "send-einvoice", help="send invoices already imported through Qonto's e-invoicing"
    )
    _config_option(send)
    send.add_argument("--invoice-id", action="append", default=[], metavar="ID",
                      help="an imported invoice by its id (repeatable)")
    send.add_argument("--org", default=None, metavar="LOGIN",
                      help="the organization (needed with several and --invoice-id)")
    send.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                      help="imported files, wherever they are now (a done/ folder included)")

    check = sub.add_parser("check-config", help="check a configuration before (re)starting")
    _config_option(check)
    check.add_argument("--online", action="store_true",
                       help="also make one authenticated read-only request per organization")
    check.add_argument("--user", default=None, metavar="NAME",
                       help="(as root) check every path as this user would reach it: the "
                       "service's User=")

    authorize = sub.add_parser(
        "authorize", help="Qonto's OAuth consent, once, for the first refresh token"
    )
    _config_option(authorize)
    authorize.add_argument("--org", required=True, metavar="LOGIN",
                           help='the organization (auth = "oauth") to authorize')
    authorize.add_argument("--port", type=int, default=8765,
                           help="the local port Qonto redirects to (default 8765)")
    authorize.add_argument("--write", type=Path, default=None, metavar="FILE",
                           help="also write the refresh token to FILE (mode 0600)")
    authorize.add_argument("--authorize-url", default=None, metavar="URL",
                           help="Qonto's consent page (default: beside token_url)")

    demo = sub.add_parser("demo", help="a self-contained run against a local Qonto stand-in")
    demo.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `status | head -3`: the reader has gone; nothing more to say, no traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EX_FAILED


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .commands.demo import run_demo

        return asyncio.run(run_demo(keep=args.keep))
    dry = args.command == "run" and args.dry_run
    if args.command != "run" or dry:
        logs.silence()  # a command prints its own answer; the daemon's lines are for run
    try:
        cfg = _load(config_path(args.config), args.command, dry)
    except ConfigError as exc:
        if args.command == "status" and args.check:
            print(f"UNKNOWN: configuration error: {' '.join(str(exc).splitlines())}")
            return 3
        for line in str(exc).splitlines():
            if args.command == "check-config":
                print(f"problem: {line}", file=sys.stderr)
            else:
                print(f"qonto-invoice-daemon: configuration error: {line}", file=sys.stderr)
        if args.command == "run" and not dry:
            # Also a line for journald and its readers, as the daemon's others are.
            logs.configure(args.log_format or logs.LogFormat.AUTO, args.log_level or "info")
            structlog.get_logger().critical(
                "config_error", error=str(exc),
                hint="fix the configuration (qonto-invoice-daemon check-config lists every "
                "problem), then start again",
            )
        return EX_CONFIG
    if args.command == "status":
        try:
            report = asyncio.run(status_mod.collect(cfg))
        except JournalError as exc:
            if args.check:
                print(f"CRITICAL: {exc}")
                return status_mod.Check.CRITICAL
            print(f"qonto-invoice-daemon: {exc}: {exc.hint}", file=sys.stderr)
            return EX_TEMPFAIL if exc.temporary else EX_CONFIG
        if args.check:
            verdict, line = status_mod.check(report, max_age_s=args.max_age)
            print(f"{verdict.name}: {line}")
            return int(verdict)
        print(status_mod.as_json(report) if args.json else status_mod.render(report))
        return EX_OK
    if args.command == "authorize":
        from .commands.authorize import authorize

        try:
            return asyncio.run(authorize(cfg, args.org, port=args.port, write=args.write,
                                         page=args.authorize_url))
        except JournalError as exc:
            print(f"qonto-invoice-daemon: {exc}: {exc.hint}", file=sys.stderr)
            return EX_TEMPFAIL if exc.temporary else EX_CONFIG
    if args.command == "send-einvoice":
        if not args.paths and not args.invoice_id:
            print("qonto-invoice-daemon: send-einvoice: name imported files, or --invoice-id",
                  file=sys.stderr)
            return EX_USAGE
        try:
            return asyncio.run(send_einvoices(cfg, args.paths, args.invoice_id, args.org))
        except JournalError as exc:
            print(f"qonto-invoice-daemon: {exc}: {exc.hint}", file=sys.stderr)
            return EX_TEMPFAIL if exc.temporary else EX_CONFIG
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
        moved, problems = retry_files(cfg, args.paths, args.all)
        for line in moved:
            print(f"moved {logs.printable(line)}")
        for line in problems:
            print(f"qonto-invoice-daemon: retry: {logs.printable(line)}", file=sys.stderr)
        return EX_OK if not problems else EX_FAILED
    if args.command == "check-config":
        problems, notes = check_paths_as(cfg, args.user)
        if args.online:
            online_problems, online_notes = asyncio.run(check_online(cfg))
            problems += online_problems
            notes += online_notes
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
    if dry:
        from .commands.dryrun import dry_run

        try:
            return asyncio.run(dry_run(cfg, as_json=args.json))
        except JournalError as exc:
            print(f"qonto-invoice-daemon: {exc}: {exc.hint}", file=sys.stderr)
            return EX_TEMPFAIL if exc.temporary else EX_CONFIG
    redact = Redactor(cfg.secret_values())
    logs.configure(
        args.log_format or cfg.log_format, args.log_level or cfg.log_level, redact=redact
    )
    _forget_secrets_in_environment(cfg.secret_values())

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _forget_secrets_in_environment(secrets: list[str]) -> None:
    """Read once, the secrets leave the environment: the parser and rules processes,
    which read untrusted files, start from it and must not inherit them."""
    held = set(secrets)
    for name, value in list(os.environ.items()):
        if value in held:
            del os.environ[name]
