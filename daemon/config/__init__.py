"""Configuration: one `load(path)` turns a TOML file into frozen dataclasses.

`model` holds the dataclasses, `tables` reads TOML tables key by key (and the
secrets and organizations they name), `load` puts them together.
"""

from __future__ import annotations

from .load import from_dict, load
from .model import (
    DEFAULT_BASE_URL,
    DEFAULT_TOKEN_URL,
    DUPLICATE_NUMBER_POLICIES,
    FACTURX_POLICIES,
    MAX_FILES_PER_REQUEST,
    Config,
    EinvoicingConfig,
    FacturxPolicy,
    Folder,
    NumberPolicy,
    OAuth,
    Organization,
    RulesPolicy,
    Secret,
    UploadConfig,
    ValidationConfig,
    WatchConfig,
)

__all__ = [
    "DEFAULT_BASE_URL", "DEFAULT_TOKEN_URL", "DUPLICATE_NUMBER_POLICIES", "FACTURX_POLICIES",
    "MAX_FILES_PER_REQUEST", "Config", "EinvoicingConfig", "FacturxPolicy", "Folder",
    "NumberPolicy", "OAuth", "Organization", "RulesPolicy", "Secret", "UploadConfig",
    "ValidationConfig", "WatchConfig", "from_dict", "load",
]
