"""The configuration's model: frozen dataclasses, the policies, and secrets that never print."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..logs import LogFormat

DEFAULT_BASE_URL = "https://thirdparty.qonto.com"
MAX_FILES_PER_REQUEST = 5  # Qonto's limit, not a setting.


class Secret:
    """A string that never shows itself in a repr, a log or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def unread(cls) -> Secret:
        """Where a secret would be, for commands that never use one (`status`,
        `lookup`...): its source was checked, its value not read."""
        return cls("")

    @property
    def known(self) -> bool:
        return bool(self._value)

    def reveal(self) -> str:
        if not self._value:
            raise RuntimeError("this command did not read the secret")
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


class RulesPolicy(StrEnum):
    """What a folder does with a Factur-X invoice that breaks a business rule."""

    OFF = "off"
    WARN = "warn"
    REQUIRE = "require"


class NumberPolicy(StrEnum):
    """What to do with a re-exported invoice (its number already imported)."""

    FAIL = "fail"
    WARN = "warn"
    OFF = "off"


FACTURX_POLICIES = tuple(FacturxPolicy)
RULES_POLICIES = tuple(RulesPolicy)
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
    rules: RulesPolicy = RulesPolicy.OFF  # [validation] rules, or the folder's own


@dataclass(frozen=True)
class EinvoicingConfig:
    """How imported e-invoices are tracked (GET /v2/client_invoices/{id})."""

    poll_initial_s: float = 60.0  # the first look after a send
    poll_max_s: float = 21600.0  # the spacing doubles up to this
    track_days: float = 30.0  # then tracking stops (and a held e-invoice gives up)
    recheck_s: float = 3600.0  # a held e-invoice: its organization and client read again


@dataclass(frozen=True)
class ValidationConfig:
    facturx: FacturxPolicy = FacturxPolicy.WARN
    duplicate_number: NumberPolicy = NumberPolicy.FAIL
    parse_timeout_s: float = 10.0
    parse_memory_mb: int = 256  # address space: the parser itself maps about 150 MB
    parse_workers: int = 2
    # None: "off", and "require" in send_by_einvoice folders.
    rules: RulesPolicy | None = None
    rules_timeout_s: float = 20.0
    rules_memory_mb: int = 1024
    rules_workers: int = 1
    rules_idle_s: float = 300.0  # then the workers (hundreds of MB each) stop


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
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "info"
    heartbeat_s: float = 300.0
    unreachable_alert_s: float = 900.0  # without an answer from Qonto while files wait
    notes: tuple[str, ...] = ()  # warnings about a configuration that loads all the same

    def secret_values(self) -> list[str]:
        """Every secret the configuration holds, for redaction."""
        values: list[str] = []
        for org in self.organizations:
            secrets = [org.secret, org.staging_token]
            if org.oauth is not None:
                secrets += [org.oauth.client_secret, org.oauth.refresh_token]
            values += [s.reveal() for s in secrets if s is not None and s.known]
        return values

    @property
    def organizations(self) -> tuple[Organization, ...]:
        seen: dict[str, Organization] = {}
        for folder in self.folders:
            seen.setdefault(folder.org.key, folder.org)
        return tuple(seen.values())

