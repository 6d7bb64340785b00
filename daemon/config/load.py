"""Configuration: one `load(path)` turns a TOML file into frozen dataclasses.

Every key has a default except the ones that say where invoices go and who
they belong to. Unknown or ill-typed keys are errors that name the key. The
secret itself never lives in the TOML: it is read from an environment
variable or a file, and is wrapped so that it never prints.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError
from ..logs import LogFormat
from .model import (
    DEFAULT_BASE_URL,
    DUPLICATE_NUMBER_POLICIES,
    FACTURX_POLICIES,
    RULES_POLICIES,
    Config,
    EinvoicingConfig,
    FacturxPolicy,
    Folder,
    NumberPolicy,
    Organization,
    RulesPolicy,
    Secret,
    UploadConfig,
    ValidationConfig,
    WatchConfig,
)
from .tables import Reading, Table, choice, non_negative, organization, read_file, resolve, section

T = TypeVar("T")


def load(
    path: str | Path, env: Mapping[str, str] | None = None, *, secrets: Reading = True
) -> Config:
    """Read and check the configuration file; raise ConfigError naming the bad key.

    With `secrets` false, where each secret comes from is checked, but no secret is
    read: for the commands that never talk to Qonto, run by people who may not
    read them (`status` from a monitoring user, without systemd's credentials).
    """
    path = Path(path)
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(read_file(path, "configuration file", 16 << 20)[0].decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}): save it as UTF-8"
        ) from None
    return from_dict(raw, env=env, base_dir=path.parent.resolve(), secrets=secrets)


def from_dict(
    raw: Mapping[str, Any], *, env: Mapping[str, str], base_dir: Path, secrets: Reading = True
) -> Config:
    """The configuration, or one ConfigError listing every problem (a line each):
    each section is read on its own, with its defaults standing in for what is wrong."""
    notes: list[str] = []  # what a configuration that loads still has to say
    problems: list[str] = []

    def attempt(read: Callable[[], T], fallback: T) -> T:
        try:
            return read()
        except ConfigError as exc:
            problems.extend(str(exc).splitlines())
            return fallback

    def top() -> None:
        table = Table(raw, "")
        for name in ("qonto", "database", "watch", "upload", "validation", "einvoicing",
                     "service", "log", "folders"):
            table._used.add(name)
        table.finish()

    attempt(top, None)
    placeholder = Organization(base_url=DEFAULT_BASE_URL, login="(not configured)")
    main_org = attempt(lambda: _main_org(raw, env, base_dir, notes, secrets), placeholder)
    db_path = attempt(lambda: _database(raw, base_dir), base_dir / "state.sqlite3")
    watch = attempt(lambda: _watch(raw), WatchConfig())
    upload = attempt(lambda: _upload(raw), UploadConfig())
    validation = attempt(lambda: _validation(raw), ValidationConfig())
    einvoicing = attempt(lambda: _einvoicing(raw), EinvoicingConfig())
    grace_s = attempt(lambda: _service(raw), 20.0)
    log_format, log_level, heartbeat_s, unreachable_s = attempt(
        lambda: _log(raw), (LogFormat.AUTO, "info", 300.0, 900.0)
    )
    no_folders: tuple[Folder, ...] = ()
    folders = attempt(
        lambda: _folders(
            raw.get("folders"), env, base_dir, main_org, validation, notes, secrets
        ),
        no_folders,
    )
    for index, folder in enumerate(folders):
        if _within(db_path, folder.inbox):
            problems.append(
                f"database.path {db_path} is inside the inbox of folders[{index}]: the journal "
                "would be taken for an invoice; keep it on local disk outside every watched folder"
            )
    if problems:
        raise ConfigError("\n".join(problems))
    return Config(
        database=db_path,
        folders=folders,
        watch=watch,
        upload=upload,
        validation=validation,
        einvoicing=einvoicing,
        shutdown_grace_s=grace_s,
        log_format=log_format,
        log_level=log_level,
        heartbeat_s=heartbeat_s,
        unreachable_alert_s=unreachable_s,
        notes=tuple(notes),
    )


def _main_org(
    raw: Mapping[str, Any], env: Mapping[str, str], base_dir: Path, notes: list[str],
    read: Reading,
) -> Organization:
    qonto = section(raw, "qonto")
    org = organization(qonto, env, base_dir, parent=None, notes=notes, read=read)
    qonto.finish()
    return org


def _database(raw: Mapping[str, Any], base_dir: Path) -> Path:
    database = section(raw, "database")
    db_path = resolve(base_dir, database.get("path", str, required=True))
    database.finish()
    return db_path


def _watch(raw: Mapping[str, Any]) -> WatchConfig:
    watch_t = section(raw, "watch")
    watch = WatchConfig(
        settle_s=non_negative(watch_t, "settle_seconds", WatchConfig.settle_s),
        rescan_interval_s=watch_t.positive(
            "rescan_seconds", float, WatchConfig.rescan_interval_s
        ),
        force_polling=watch_t.get("force_polling", bool, WatchConfig.force_polling),
        poll_delay_ms=watch_t.positive("poll_delay_ms", int, WatchConfig.poll_delay_ms),
        unstable_warning_s=watch_t.positive(
            "unstable_warning_seconds", float, WatchConfig.unstable_warning_s
        ),
        incomplete_fail_s=watch_t.positive(
            "incomplete_fail_seconds", float, WatchConfig.incomplete_fail_s
        ),
    )
    watch_t.finish()
    return watch


def _upload(raw: Mapping[str, Any]) -> UploadConfig:
    up = section(raw, "upload")
    upload = UploadConfig(
        concurrency=up.positive("concurrency", int, UploadConfig.concurrency, most=64),
        max_file_bytes=up.positive("max_file_bytes", int, UploadConfig.max_file_bytes),
        max_request_bytes=up.positive("max_request_bytes", int, UploadConfig.max_request_bytes),
        linger_s=non_negative(up, "linger_seconds", UploadConfig.linger_s),
        connect_timeout_s=up.positive(
            "connect_timeout_seconds", float, UploadConfig.connect_timeout_s
        ),
        timeout_s=up.positive("timeout_seconds", float, UploadConfig.timeout_s),
        backoff_initial_s=up.positive(
            "backoff_initial_seconds", float, UploadConfig.backoff_initial_s
        ),
        backoff_max_s=up.positive("backoff_max_seconds", float, UploadConfig.backoff_max_s),
        auth_pause_initial_s=up.positive(
            "auth_pause_initial_seconds", float, UploadConfig.auth_pause_initial_s
        ),
        auth_pause_max_s=up.positive(
            "auth_pause_max_seconds", float, UploadConfig.auth_pause_max_s
        ),
    )
    if upload.backoff_max_s < upload.backoff_initial_s:
        up.problems.append(
            "upload.backoff_max_seconds must be at least backoff_initial_seconds"
        )
    if upload.auth_pause_max_s < upload.auth_pause_initial_s:
        up.problems.append(
            "upload.auth_pause_max_seconds must be at least auth_pause_initial_seconds"
        )
    up.finish()
    return upload


def _validation(raw: Mapping[str, Any]) -> ValidationConfig:
    val = section(raw, "validation")
    validation = ValidationConfig(
        facturx=FacturxPolicy(choice(val, "facturx", FACTURX_POLICIES, ValidationConfig.facturx)),
        duplicate_number=NumberPolicy(choice(
            val, "duplicate_number", DUPLICATE_NUMBER_POLICIES, ValidationConfig.duplicate_number
        )),
        parse_timeout_s=val.positive(
            "parse_timeout_seconds", float, ValidationConfig.parse_timeout_s
        ),
        parse_memory_mb=val.positive("parse_memory_mb", int, ValidationConfig.parse_memory_mb),
        parse_workers=val.positive("parse_workers", int, ValidationConfig.parse_workers,
                                   most=32),
        rules=_rules_policy(val, raw),
        rules_timeout_s=val.positive(
            "rules_timeout_seconds", float, ValidationConfig.rules_timeout_s
        ),
        rules_memory_mb=val.positive("rules_memory_mb", int, ValidationConfig.rules_memory_mb),
        rules_workers=val.positive("rules_workers", int, ValidationConfig.rules_workers,
                                   most=16),
        rules_idle_s=val.positive("rules_idle_seconds", float, ValidationConfig.rules_idle_s),
    )
    if validation.rules_memory_mb < 512:
        val.problems.append(
            "validation.rules_memory_mb must be at least 512 (Saxon with the rules compiled "
            "takes about 300 MB)"
        )
    if validation.parse_memory_mb < 192:
        val.problems.append(
            "validation.parse_memory_mb must be at least 192 (the parser maps about 150 MB "
            "before it reads a file)"
        )
    val.finish()
    return validation


def _rules_policy(val: Table, raw: Mapping[str, Any]) -> RulesPolicy | None:
    """[validation] rules when set (None: each folder's default); a wrong value is
    one more problem listed, the rest is still read."""
    if "rules" not in (raw.get("validation") or {}):
        return None
    try:
        return RulesPolicy(choice(val, "rules", RULES_POLICIES, "off"))
    except ConfigError as exc:
        val.problems.append(str(exc))
        return None


def _einvoicing(raw: Mapping[str, Any]) -> EinvoicingConfig:
    ein = section(raw, "einvoicing")
    einvoicing = EinvoicingConfig(
        poll_initial_s=ein.positive(
            "poll_initial_seconds", float, EinvoicingConfig.poll_initial_s
        ),
        poll_max_s=ein.positive("poll_max_seconds", float, EinvoicingConfig.poll_max_s),
        track_days=ein.positive("track_days", float, EinvoicingConfig.track_days),
        recheck_s=ein.positive("recheck_seconds", float, EinvoicingConfig.recheck_s),
    )
    if einvoicing.poll_max_s < einvoicing.poll_initial_s:
        ein.problems.append("einvoicing.poll_max_seconds must be at least poll_initial_seconds")
    ein.finish()
    return einvoicing


def _service(raw: Mapping[str, Any]) -> float:
    service = section(raw, "service")
    grace_s = non_negative(service, "shutdown_grace_seconds", 20.0)
    service.finish()
    return grace_s


def _log(raw: Mapping[str, Any]) -> tuple[LogFormat, str, float, float]:
    log = section(raw, "log")
    fmt = log.get("format", str, LogFormat.AUTO)
    if fmt not in tuple(LogFormat):
        log.problems.append(f'log.format must be "auto", "json" or "console", got "{fmt}"')
        fmt = LogFormat.AUTO
    level = log.get("level", str, "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        log.problems.append(
            f'log.level must be "debug", "info", "warning" or "error", got "{level}"'
        )
        level = "info"
    heartbeat_s = log.positive("heartbeat_seconds", float, 300.0)
    unreachable_s = log.positive("unreachable_alert_seconds", float, 900.0)
    log.finish()
    return LogFormat(fmt), level, heartbeat_s, unreachable_s


def _folders(
    raw: object,
    env: Mapping[str, str],
    base_dir: Path,
    main_org: Organization,
    validation: ValidationConfig,
    notes: list[str],
    read: Reading = True,
) -> tuple[Folder, ...]:
    if raw is None:
        raise ConfigError("missing [[folders]]: configure at least one inbox")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("[[folders]] must be a non-empty array of tables")
    folders: list[Folder] = []
    logins: dict[str, Organization] = {}
    tokens: dict[Secret, str] = {}  # refresh token -> the organization it is for
    problems: list[str] = []
    for index, item in enumerate(raw):
        try:
            folder = _folder(index, item, env, base_dir, main_org, validation, notes, read)
        except ConfigError as exc:
            problems.extend(str(exc).splitlines())  # and the next folders are read too
            continue
        oauth = folder.org.oauth
        if oauth is not None and oauth.refresh_token.known:
            owner = tokens.setdefault(oauth.refresh_token, folder.org.login)
            if owner != folder.org.login:
                problems.append(
                    f"folders[{index}]: organizations {owner} and {folder.org.login} use the "
                    "same OAuth refresh token: a token belongs to one organization (its "
                    "invoices would be created in the other's account); make one for each "
                    "with `authorize`"
                )
        known = logins.setdefault(folder.org.key, folder.org)
        if known != folder.org:
            problems.append(
                f"folders[{index}]: organization {folder.org.login} is configured twice with "
                "different settings (base_url, secret key or staging token)"
            )
        folders.append(folder)
    if problems:
        raise ConfigError("\n".join(problems))
    _check_overlaps(folders)
    return tuple(folders)


def _folder(
    index: int,
    item: object,
    env: Mapping[str, str],
    base_dir: Path,
    main_org: Organization,
    validation: ValidationConfig,
    notes: list[str],
    read: Reading,
) -> Folder:
    where = f"folders[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a table")
    table = Table(item, where)
    inbox = resolve(base_dir, table.get("inbox", str, required=True))
    done = resolve(base_dir, table.get("done", str, required=True))
    failed = resolve(base_dir, table.get("failed", str, required=True))
    send = table.get("send_by_einvoice", bool, False)
    # A PDF without valid Factur-X XML cannot be an e-invoice: such a folder
    # fails it before import, unless it says otherwise.
    policy = FacturxPolicy(
        choice(table, "facturx", FACTURX_POLICIES, "require" if send else validation.facturx)
    )
    # The platform rejects an e-invoice that breaks a rule: such a folder checks
    # them before import, unless it says otherwise.
    rules = RulesPolicy(choice(
        table, "rules", RULES_POLICIES,
        "require" if send else (validation.rules or RulesPolicy.OFF),
    ))
    org = organization(table, env, base_dir, parent=main_org, notes=notes, read=read)
    table.finish()
    if len({inbox, done, failed}) != 3:
        raise ConfigError(f"{where}: inbox, done and failed must be three different folders")
    return Folder(inbox=inbox, done=done, failed=failed, org=org, facturx=policy,
                  send_by_einvoice=send, rules=rules)


def _real(path: Path) -> Path:
    """The path with `..` and symbolic links resolved, as far as it exists."""
    return Path(os.path.realpath(path))


def _within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or inside it, once both are resolved."""
    real, base = _real(path), _real(folder)
    return real == base or base in real.parents


def _check_overlaps(folders: list[Folder]) -> None:
    """Folders that would feed on each other's output are refused.

    Each path is resolved once and its ancestors looked up among the inboxes:
    linear in the number of folders (a thousand load in well under a second).
    """
    inboxes: dict[Path, int] = {}
    for index, folder in enumerate(folders):
        first = inboxes.setdefault(_real(folder.inbox), index)
        if first != index:
            raise ConfigError(
                f"folders[{index}].inbox: the same inbox is configured twice "
                f"({folder.inbox})"
            )
    for index, folder in enumerate(folders):
        real_done, real_failed = _real(folder.done), _real(folder.failed)
        for key, path, real in (("done", folder.done, real_done),
                                ("failed", folder.failed, real_failed)):
            # Its own inbox may hold it (inbox/done), never be it; no other inbox may.
            other = inboxes.get(real)
            if other is None:
                other = next((inboxes[p] for p in real.parents
                              if p in inboxes and inboxes[p] != index), None)
            if other is not None:
                raise ConfigError(
                    f"folders[{index}].{key} ({path}) is, or is inside, the inbox of "
                    f"folders[{other}] ({folders[other].inbox}): its files would be taken "
                    "for new invoices"
                )
        if real_done == real_failed:
            raise ConfigError(f"folders[{index}]: done and failed must be different folders")
