"""Reading TOML tables key by key, and the secrets and organizations they name.

Every error names the key (`section.key`) and says what is wrong.
"""

from __future__ import annotations

import math
import os
import stat
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError
from ..identity import describe_mode
from .model import DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, OAuth, Organization, Secret

T = TypeVar("T")
# Which secrets to read: all, none, or those of these prefixes ("client_secret"...).
Reading = bool | frozenset[str]


class Table:
    """A TOML table read key by key, so that errors can name `section.key`."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self._data = data
        self._where = where
        self._used: set[str] = set()
        # Keys with a default that are ill-typed or out of range: the default stands in
        # while the rest is read, so that every problem is listed at once.
        self.problems: list[str] = []

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
            problem = f"{self._name(key)} must be {kind_name(kind)}, got {type(value).__name__}"
            if default is None:
                raise ConfigError(problem)
            self.problems.append(problem)
            return default
        wrong: str | None = None
        if isinstance(value, str) and "\x00" in value:
            # No path, name or URL holds one (the system calls would refuse it).
            wrong = f"{self._name(key)} must not contain a NUL character"
        elif isinstance(value, float) and not math.isfinite(value):
            # TOML has nan and inf; no duration, size or count here means either.
            wrong = f"{self._name(key)} must be a finite number, got {value}"
        if wrong is not None:
            if default is None:
                raise ConfigError(wrong)
            self.problems.append(wrong)
            return default
        return value

    def optional(self, key: str, kind: type[T]) -> T | None:
        if key not in self._data:
            self._used.add(key)
            return None
        return self.get(key, kind, required=True)

    def positive(self, key: str, kind: type[T], default: T, *, most: T | None = None) -> T:
        value = self.get(key, kind, default)
        if value <= 0:  # type: ignore[operator]
            self.problems.append(f"{self._name(key)} must be greater than 0, got {value}")
            return default
        if most is not None and value > most:  # type: ignore[operator]
            self.problems.append(f"{self._name(key)} must be at most {most}, got {value}")
            return default
        return value

    def unknown(self, known: frozenset[str]) -> list[str]:
        """Keys of this table outside `known` (read or not yet)."""
        return sorted(k for k in self._data if k not in known)

    def finish(self) -> None:
        """Raise every problem of this table at once: unknown keys first."""
        unknown = sorted(set(self._data) - self._used)
        problems = list(self.problems)
        if unknown:
            problems.insert(0, "unknown key " + ", ".join(self._name(k) for k in unknown))
        if problems:
            raise ConfigError("\n".join(problems))


def kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, kind.__name__
    )


def section(raw: Mapping[str, Any], name: str) -> Table:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return Table(value, name)


def read_secret(
    table: Table,
    env: Mapping[str, str],
    base_dir: Path,
    *,
    prefix: str,
    required: bool,
    notes: list[str],
    read: Reading = True,
) -> Secret | None:
    """A secret from exactly one source: `*_env`, `*_file`, or `*_credential` (systemd).

    Unless `read` says to read it (true, or a set naming its prefix), the source
    is checked but not read (`Secret.unread()`).
    """
    keys = [f"{prefix}_env", f"{prefix}_file", f"{prefix}_credential"]
    env_name, file_name, credential = (table.optional(k, str) for k in keys)
    given = [table._name(k) for k, v in zip(keys, (env_name, file_name, credential), strict=True)
             if v is not None]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: set only one source for the secret")
    if given and not (read if isinstance(read, bool) else prefix in read):
        if credential is not None and ("/" in credential or credential in (".", "..")):
            raise ConfigError(f"{table._name(keys[2])} must be a credential name, not a path")
        return Secret.unread()
    if env_name is not None:
        value = env.get(env_name, "")
        if not value.strip():
            raise ConfigError(
                f"{table._name(keys[0])}: environment variable {env_name} is not set or empty"
            )
        return _secret(value.strip(), table._name(keys[0]))
    if file_name is not None:
        path = resolve(base_dir, file_name)
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


def read_file(path: Path, what: str, limit: int = 1 << 20) -> tuple[bytes, int]:
    """(the bytes, the mode) of a regular file of at most `limit` bytes.

    Never blocks: a FIFO or a device named by mistake would hang every command on
    its read. Raises OSError, or ConfigError naming `what` for what is not a file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{what} {path} is {describe_mode(mode)}, not a regular file")
        return f.read(limit), mode


def _secret_file(path: Path, key: str, notes: list[str] | None) -> Secret:
    try:
        raw, mode = read_file(path, f"{key}:", 65536)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
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


def resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def _sources(prefix: str) -> set[str]:
    return {f"{prefix}_env", f"{prefix}_file", f"{prefix}_credential"}


ORG_KEYS = frozenset({
    "base_url", "login", "auth", "client_id", "token_url",
    *_sources("secret_key"), *_sources("staging_token"), *_sources("client_secret"),
    *_sources("refresh_token"),
})
FOLDER_KEYS = frozenset({"inbox", "done", "failed", "facturx", "send_by_einvoice", "rules"})


def organization(
    table: Table,
    env: Mapping[str, str],
    base_dir: Path,
    parent: Organization | None,
    notes: list[str],
    read: Reading = True,
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
        read_secret(table, env, base_dir, prefix="staging_token", required=False, notes=notes,
                    read=read)
        if has_staging:
            raise ConfigError(f"{table._where}: staging_token_env needs login and a secret key")
        return parent
    if login is None:
        raise ConfigError(f"missing required key {table._name('login')}")
    if not login.strip():
        raise ConfigError(f"{table._name('login')} must not be empty")
    strange = table.unknown(ORG_KEYS | FOLDER_KEYS)
    if strange:
        # A misspelt key (secret_key_credentail) is said before the secret it hides.
        raise ConfigError("unknown key " + ", ".join(table._name(k) for k in strange))
    auth = auth or "api_key"
    if auth not in ("api_key", "oauth"):
        raise ConfigError(f'{table._name("auth")} must be "api_key" or "oauth", got "{auth}"')
    secret: Secret | None = None
    oauth: OAuth | None = None
    if auth == "api_key":
        if oauth_keys:
            raise ConfigError(f'{table._name(oauth_keys[0])} needs auth = "oauth"')
        secret = read_secret(
            table, env, base_dir, prefix="secret_key", required=True, notes=notes, read=read
        )
    else:
        oauth = oauth_of(table, env, base_dir, notes, read=read)
    staging = read_secret(
        table, env, base_dir, prefix="staging_token", required=False, notes=notes, read=read
    )
    if parent is not None:
        base_url = base_url or parent.base_url
        if staging is None and not has_staging and base_url == parent.base_url:
            staging = parent.staging_token
    base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
    check_base_url(base_url, table._name("base_url"))
    return Organization(
        base_url=base_url, login=login.strip(), secret=secret, staging_token=staging, oauth=oauth
    )


def oauth_of(
    table: Table, env: Mapping[str, str], base_dir: Path, notes: list[str], *,
    read: Reading = True,
) -> OAuth:
    if any(k.startswith("secret_key") for k in table._data):
        raise ConfigError(f'{table._where}: with auth = "oauth" there is no secret_key')
    client_id = table.get("client_id", str, required=True).strip()
    if not client_id:
        raise ConfigError(f"{table._name('client_id')} must not be empty")
    client_secret = read_secret(
        table, env, base_dir, prefix="client_secret", required=True, notes=notes, read=read
    )
    refresh = read_secret(table, env, base_dir, prefix="refresh_token", required=True,
                           notes=notes, read=read)
    token_url = table.get("token_url", str, DEFAULT_TOKEN_URL).rstrip("/")
    check_base_url(token_url, table._name("token_url"))
    assert client_secret is not None and refresh is not None
    return OAuth(client_id, client_secret, refresh, token_url)


def check_base_url(url: str, key: str) -> None:
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



def choice(table: Table, key: str, choices: tuple[str, ...], default: str) -> str:
    value = table.get(key, str, default)
    if value not in choices:
        allowed = ", ".join(f'"{c}"' for c in choices)
        raise ConfigError(f'{table._name(key)} must be one of {allowed}, got "{value}"')
    return value


def non_negative(table: Table, key: str, default: float) -> float:
    value = table.get(key, float, default)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{table._name(key)} must not be negative, got {value}")
    return value


