"""Configuration: one `load(path)` turns a TOML file into frozen dataclasses.

Every key has a default except the ones that say where invoices go and who
they belong to. Unknown or ill-typed keys are errors that name the key. The
secret itself never lives in the TOML: it is read from an environment
variable or a file, and is wrapped so that it never prints.
"""

from __future__ import annotations

import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

DEFAULT_BASE_URL = "https://thirdparty.qonto.com"
MAX_FILES_PER_REQUEST = 5  # Qonto's limit, not a setting.


class Secret:
    """A string that never shows itself in a repr, a log or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


DEFAULT_TOKEN_URL = "https://oauth.qonto.com/oauth2/token"


@dataclass(frozen=True)
class OAuth:
    """OAuth 2.0 with rotating refresh tokens (the first one from Qonto's consent flow)."""

    client_id: str
    client_secret: Secret = field(repr=False)
    refresh_token: Secret = field(repr=False)  # used while the journal holds none newer
    token_url: str = DEFAULT_TOKEN_URL


@dataclass(frozen=True)
class Organization:
    """Who uploads: a Qonto organization, reached with an API key or OAuth."""

    base_url: str
    login: str  # the organization's slug: the journal's name for it, whatever the auth
    secret: Secret | None = field(default=None, repr=False)  # the API key's secret
    staging_token: Secret | None = field(default=None, repr=False)
    oauth: OAuth | None = None

    @property
    def key(self) -> str:
        """The journal's name for this organization (one row per key and content)."""
        return self.login


class FacturxPolicy(StrEnum):
    """What a folder does with a file that is not valid Factur-X."""

    WARN = "warn"
    REQUIRE = "require"
    OFF = "off"


class NumberPolicy(StrEnum):
    """What to do with a re-exported invoice (its number already imported)."""

    FAIL = "fail"
    WARN = "warn"
    OFF = "off"


FACTURX_POLICIES = tuple(FacturxPolicy)
DUPLICATE_NUMBER_POLICIES = tuple(NumberPolicy)


@dataclass(frozen=True)
class Folder:
    inbox: Path
    done: Path
    failed: Path
    org: Organization
    facturx: FacturxPolicy = FacturxPolicy.WARN  # [validation] facturx, or the folder's own
    # Imported invoices are sent through Qonto's e-invoicing platform.
    send_by_einvoice: bool = False


@dataclass(frozen=True)
class EinvoicingConfig:
    """How imported e-invoices are tracked (GET /v2/client_invoices/{id})."""

    poll_initial_s: float = 60.0  # the first look after a send
    poll_max_s: float = 21600.0  # the spacing doubles up to this
    track_days: float = 30.0  # then tracking stops


@dataclass(frozen=True)
class ValidationConfig:
    facturx: FacturxPolicy = FacturxPolicy.WARN
    duplicate_number: NumberPolicy = NumberPolicy.FAIL
    parse_timeout_s: float = 10.0
    parse_memory_mb: int = 512
    parse_workers: int = 2


@dataclass(frozen=True)
class WatchConfig:
    settle_s: float = 5.0
    rescan_interval_s: float = 60.0
    force_polling: bool = False
    poll_delay_ms: int = 1000
    unstable_warning_s: float = 600.0
    incomplete_fail_s: float = 600.0


@dataclass(frozen=True)
class UploadConfig:
    concurrency: int = 2
    max_file_bytes: int = 5_000_000
    max_request_bytes: int = 15_000_000
    linger_s: float = 1.0
    connect_timeout_s: float = 10.0
    timeout_s: float = 120.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    auth_pause_initial_s: float = 60.0
    auth_pause_max_s: float = 900.0


@dataclass(frozen=True)
class Config:
    database: Path
    folders: tuple[Folder, ...]
    watch: WatchConfig = WatchConfig()
    upload: UploadConfig = UploadConfig()
    validation: ValidationConfig = ValidationConfig()
    einvoicing: EinvoicingConfig = EinvoicingConfig()
    shutdown_grace_s: float = 20.0
    log_format: str = "auto"
    log_level: str = "info"
    heartbeat_s: float = 300.0
    notes: tuple[str, ...] = ()  # warnings about a configuration that loads all the same

    def secret_values(self) -> list[str]:
        """Every secret the configuration holds, for redaction."""
        values: list[str] = []
        for org in self.organizations:
            for secret in (org.secret, org.staging_token):
                if secret is not None:
                    values.append(secret.reveal())
            if org.oauth is not None:
                values += [org.oauth.client_secret.reveal(), org.oauth.refresh_token.reveal()]
        return values

    @property
    def organizations(self) -> tuple[Organization, ...]:
        seen: dict[str, Organization] = {}
        for folder in self.folders:
            seen.setdefault(folder.org.key, folder.org)
        return tuple(seen.values())


T = TypeVar("T")


class _Table:
    """A TOML table read key by key, so that errors can name `section.key`."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self._data = data
        self._where = where
        self._used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def get(
        self, key: str, kind: type[T], default: T | None = None, *, required: bool = False
    ) -> T:
        self._used.add(key)
        if key not in self._data:
            if required or default is None:
                raise ConfigError(f"missing required key {self._name(key)}")
            return default
        value = self._data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                f"{self._name(key)} must be {_kind_name(kind)}, got {type(value).__name__}"
            )
        return value

    def optional(self, key: str, kind: type[T]) -> T | None:
        if key not in self._data:
            self._used.add(key)
            return None
        return self.get(key, kind, required=True)

    def positive(self, key: str, kind: type[T], default: T) -> T:
        value = self.get(key, kind, default)
        if value <= 0:  # type: ignore[operator]
            raise ConfigError(f"{self._name(key)} must be greater than 0, got {value}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            names = ", ".join(self._name(k) for k in unknown)
            raise ConfigError(f"unknown key {names}")


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, kind.__name__
    )


def _section(raw: Mapping[str, Any], name: str) -> _Table:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return _Table(value, name)


def _read_secret(
    table: _Table,
    env: Mapping[str, str],
    base_dir: Path,
    *,
    prefix: str,
    required: bool,
    notes: list[str],
) -> Secret | None:
    """A secret from exactly one source: `*_env`, `*_file`, or `*_credential` (systemd)."""
    keys = [f"{prefix}_env", f"{prefix}_file", f"{prefix}_credential"]
    env_name, file_name, credential = (table.optional(k, str) for k in keys)
    given = [table._name(k) for k, v in zip(keys, (env_name, file_name, credential), strict=True)
             if v is not None]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: set only one source for the secret")
    if env_name is not None:
        value = env.get(env_name, "")
        if not value.strip():
            raise ConfigError(
                f"{table._name(keys[0])}: environment variable {env_name} is not set or empty"
            )
        return _secret(value.strip(), table._name(keys[0]))
    if file_name is not None:
        path = _resolve(base_dir, file_name)
        return _secret_file(path, table._name(keys[1]), notes)
    if credential is not None:
        directory = env.get("CREDENTIALS_DIRECTORY", "")
        if not directory:
            raise ConfigError(
                f"{table._name(keys[2])}: $CREDENTIALS_DIRECTORY is not set; systemd sets it "
                f"for a unit with LoadCredential={credential}:/path/to/the/secret"
            )
        if "/" in credential or credential in (".", ".."):
            raise ConfigError(f"{table._name(keys[2])} must be a credential name, not a path")
        # systemd made this copy for the service alone: its mode is systemd's business.
        return _secret_file(Path(directory) / credential, table._name(keys[2]), None)
    if required:
        raise ConfigError(
            f"{table._where}: set {keys[0]}, {keys[1]} or {keys[2]} for the secret key"
        )
    return None


def _secret_file(path: Path, key: str, notes: list[str] | None) -> Secret:
    try:
        value = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{key}: {path} is empty")
    if notes is not None and mode & 0o077:
        notes.append(
            f"{key}: {path} can be read by its group or by others (mode {mode & 0o777:o}): "
            "make it 0600, or use systemd credentials (secret_key_credential)"
        )
    return _secret(value, key)


def _secret(value: str, key: str) -> Secret:
    # A secret goes into an HTTP header: a line break or control character there
    # is refused by the HTTP library at every upload. Never repeat the value.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigError(
            f"{key}: the secret contains a line break or control character "
            "(a file with more than one line?)"
        )
    return Secret(value)


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def _organization(
    table: _Table,
    env: Mapping[str, str],
    base_dir: Path,
    parent: Organization | None,
    notes: list[str],
) -> Organization:
    if "secret_key" in table._data:
        raise ConfigError(
            f"{table._name('secret_key')}: the secret key does not belong in the configuration "
            "file; name an environment variable (secret_key_env) or a file (secret_key_file)"
        )
    base_url = table.optional("base_url", str)
    login = table.optional("login", str)
    auth = table.optional("auth", str)
    oauth_keys = [k for k in table._data if k.startswith(("client_", "refresh_token", "token_url"))]
    has_secret = auth is not None or bool(oauth_keys) or any(
        k in table._data for k in ("secret_key_env", "secret_key_file", "secret_key_credential")
    )
    has_staging = any(
        k in table._data
        for k in ("staging_token_env", "staging_token_file", "staging_token_credential")
    )
    if parent is not None and login is None and not has_secret and base_url is None:
        # The folder belongs to the main organization. Still mark the keys as read.
        _read_secret(table, env, base_dir, prefix="staging_token", required=False, notes=notes)
        if has_staging:
            raise ConfigError(f"{table._where}: staging_token_env needs login and a secret key")
        return parent
    if login is None:
        raise ConfigError(f"missing required key {table._name('login')}")
    if not login.strip():
        raise ConfigError(f"{table._name('login')} must not be empty")
    auth = auth or "api_key"
    if auth not in ("api_key", "oauth"):
        raise ConfigError(f'{table._name("auth")} must be "api_key" or "oauth", got "{auth}"')
    secret: Secret | None = None
    oauth: OAuth | None = None
    if auth == "api_key":
        if oauth_keys:
            raise ConfigError(f'{table._name(oauth_keys[0])} needs auth = "oauth"')
        secret = _read_secret(
            table, env, base_dir, prefix="secret_key", required=True, notes=notes
        )
    else:
        oauth = _oauth(table, env, base_dir, notes)
    staging = _read_secret(
        table, env, base_dir, prefix="staging_token", required=False, notes=notes
    )
    if parent is not None:
        base_url = base_url or parent.base_url
        if staging is None and not has_staging and base_url == parent.base_url:
            staging = parent.staging_token
    base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
    _check_base_url(base_url, table._name("base_url"))
    return Organization(
        base_url=base_url, login=login.strip(), secret=secret, staging_token=staging, oauth=oauth
    )


def _oauth(table: _Table, env: Mapping[str, str], base_dir: Path, notes: list[str]) -> OAuth:
    if any(k.startswith("secret_key") for k in table._data):
        raise ConfigError(f'{table._where}: with auth = "oauth" there is no secret_key')
    client_id = table.get("client_id", str, required=True).strip()
    if not client_id:
        raise ConfigError(f"{table._name('client_id')} must not be empty")
    client_secret = _read_secret(
        table, env, base_dir, prefix="client_secret", required=True, notes=notes
    )
    refresh = _read_secret(table, env, base_dir, prefix="refresh_token", required=True,
                           notes=notes)
    token_url = table.get("token_url", str, DEFAULT_TOKEN_URL).rstrip("/")
    _check_base_url(token_url, table._name("token_url"))
    assert client_secret is not None and refresh is not None
    return OAuth(client_id, client_secret, refresh, token_url)


def _check_base_url(url: str, key: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{key} must start with https:// or http://")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{key} is not a valid URL") from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        # Never repeat the URL: what it carries is a secret.
        raise ConfigError(
            f"{key} must not carry a user name or password (user:secret@host): "
            "give the secret key with secret_key_env or secret_key_file"
        )
    if not parts.hostname:
        raise ConfigError(f"{key} has no host name")
    if parts.query or parts.fragment:
        raise ConfigError(f"{key} must be the server's address only, without ? or #")


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and check the configuration file; raise ConfigError naming the bad key."""
    path = Path(path)
    env = os.environ if env is None else env
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return from_dict(raw, env=env, base_dir=path.parent.resolve())


def from_dict(raw: Mapping[str, Any], *, env: Mapping[str, str], base_dir: Path) -> Config:
    notes: list[str] = []  # what a configuration that loads still has to say
    top = _Table(raw, "")
    for name in ("qonto", "database", "watch", "upload", "validation", "einvoicing", "service",
                 "log", "folders"):
        top._used.add(name)
    top.finish()

    qonto = _section(raw, "qonto")
    main_org = _organization(qonto, env, base_dir, parent=None, notes=notes)
    qonto.finish()

    database = _section(raw, "database")
    db_path = _resolve(base_dir, database.get("path", str, required=True))
    database.finish()

    watch_t = _section(raw, "watch")
    watch = WatchConfig(
        settle_s=_non_negative(watch_t, "settle_seconds", WatchConfig.settle_s),
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

    up = _section(raw, "upload")
    upload = UploadConfig(
        concurrency=up.positive("concurrency", int, UploadConfig.concurrency),
        max_file_bytes=up.positive("max_file_bytes", int, UploadConfig.max_file_bytes),
        max_request_bytes=up.positive("max_request_bytes", int, UploadConfig.max_request_bytes),
        linger_s=_non_negative(up, "linger_seconds", UploadConfig.linger_s),
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
    up.finish()
    if upload.backoff_max_s < upload.backoff_initial_s:
        raise ConfigError("upload.backoff_max_seconds must be at least backoff_initial_seconds")
    if upload.auth_pause_max_s < upload.auth_pause_initial_s:
        raise ConfigError(
            "upload.auth_pause_max_seconds must be at least auth_pause_initial_seconds"
        )

    val = _section(raw, "validation")
    validation = ValidationConfig(
        facturx=FacturxPolicy(_choice(val, "facturx", FACTURX_POLICIES, ValidationConfig.facturx)),
        duplicate_number=NumberPolicy(_choice(
            val, "duplicate_number", DUPLICATE_NUMBER_POLICIES, ValidationConfig.duplicate_number
        )),
        parse_timeout_s=val.positive(
            "parse_timeout_seconds", float, ValidationConfig.parse_timeout_s
        ),
        parse_memory_mb=val.positive("parse_memory_mb", int, ValidationConfig.parse_memory_mb),
        parse_workers=val.positive("parse_workers", int, ValidationConfig.parse_workers),
    )
    val.finish()
    if validation.parse_memory_mb < 128:
        raise ConfigError("validation.parse_memory_mb must be at least 128 (the parser's own size)")

    ein = _section(raw, "einvoicing")
    einvoicing = EinvoicingConfig(
        poll_initial_s=ein.positive(
            "poll_initial_seconds", float, EinvoicingConfig.poll_initial_s
        ),
        poll_max_s=ein.positive("poll_max_seconds", float, EinvoicingConfig.poll_max_s),
        track_days=ein.positive("track_days", float, EinvoicingConfig.track_days),
    )
    ein.finish()
    if einvoicing.poll_max_s < einvoicing.poll_initial_s:
        raise ConfigError("einvoicing.poll_max_seconds must be at least poll_initial_seconds")

    service = _section(raw, "service")
    grace_s = _non_negative(service, "shutdown_grace_seconds", 20.0)
    service.finish()

    log = _section(raw, "log")
    log_format = log.get("format", str, "auto")
    if log_format not in ("auto", "json", "console"):
        raise ConfigError(f'log.format must be "auto", "json" or "console", got "{log_format}"')
    log_level = log.get("level", str, "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            f'log.level must be "debug", "info", "warning" or "error", got "{log_level}"'
        )
    heartbeat_s = log.positive("heartbeat_seconds", float, 300.0)
    log.finish()

    folders = _folders(raw.get("folders"), env, base_dir, main_org, validation.facturx, notes)
    for index, folder in enumerate(folders):
        if _within(db_path, folder.inbox):
            raise ConfigError(
                f"database.path {db_path} is inside the inbox of folders[{index}]: the journal "
                "would be taken for an invoice; keep it on local disk outside every watched folder"
            )
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
        notes=tuple(notes),
    )


def _choice(table: _Table, key: str, choices: tuple[str, ...], default: str) -> str:
    value = table.get(key, str, default)
    if value not in choices:
        allowed = ", ".join(f'"{c}"' for c in choices)
        raise ConfigError(f'{table._name(key)} must be one of {allowed}, got "{value}"')
    return value


def _non_negative(table: _Table, key: str, default: float) -> float:
    value = table.get(key, float, default)
    if value < 0:
        raise ConfigError(f"{table._name(key)} must not be negative, got {value}")
    return value


def _folders(
    raw: object,
    env: Mapping[str, str],
    base_dir: Path,
    main_org: Organization,
    facturx: str,
    notes: list[str],
) -> tuple[Folder, ...]:
    if raw is None:
        raise ConfigError("missing [[folders]]: configure at least one inbox")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("[[folders]] must be a non-empty array of tables")
    folders: list[Folder] = []
    logins: dict[str, Organization] = {}
    for index, item in enumerate(raw):
        where = f"folders[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        table = _Table(item, where)
        inbox = _resolve(base_dir, table.get("inbox", str, required=True))
        done = _resolve(base_dir, table.get("done", str, required=True))
        failed = _resolve(base_dir, table.get("failed", str, required=True))
        send = table.get("send_by_einvoice", bool, False)
        # A PDF without valid Factur-X XML cannot be an e-invoice: such a folder
        # fails it before import, unless it says otherwise.
        policy = FacturxPolicy(
            _choice(table, "facturx", FACTURX_POLICIES, "require" if send else facturx)
        )
        org = _organization(table, env, base_dir, parent=main_org, notes=notes)
        table.finish()
        known = logins.setdefault(org.key, org)
        if known != org:
            raise ConfigError(
                f"{where}: organization {org.login} is configured twice with different "
                "settings (base_url, secret key or staging token)"
            )
        if len({inbox, done, failed}) != 3:
            raise ConfigError(f"{where}: inbox, done and failed must be three different folders")
        folders.append(Folder(inbox=inbox, done=done, failed=failed, org=org, facturx=policy,
                              send_by_einvoice=send))
    _check_overlaps(folders)
    return tuple(folders)


def _real(path: Path) -> Path:
    """The path with `..` and symbolic links resolved, as far as it exists."""
    return Path(os.path.realpath(path))


def _within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or inside it, once both are resolved."""
    real, base = _real(path), _real(folder)
    return real == base or base in real.parents


def _check_overlaps(folders: list[Folder]) -> None:
    """Folders that would feed on each other's output are refused."""
    real_inboxes = [_real(f.inbox) for f in folders]
    for index, inbox in enumerate(real_inboxes):
        if inbox in real_inboxes[:index]:
            raise ConfigError(
                f"folders[{index}].inbox: the same inbox is configured twice "
                f"({folders[index].inbox})"
            )
    for index, folder in enumerate(folders):
        for key, path in (("done", folder.done), ("failed", folder.failed)):
            for other_index, other in enumerate(folders):
                if _real(path) == _real(other.inbox) or (
                    other_index != index and _within(path, other.inbox)
                ):
                    raise ConfigError(
                        f"folders[{index}].{key} ({path}) is, or is inside, the inbox of "
                        f"folders[{other_index}] ({other.inbox}): its files would be taken "
                        "for new invoices"
                    )
        if _real(folder.done) == _real(folder.failed):
            raise ConfigError(f"folders[{index}]: done and failed must be different folders")
