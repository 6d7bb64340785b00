"""Talking to Qonto: the client, the multipart framing, the answers' meaning, the limits."""

from __future__ import annotations

from .client import BULK_PATH, LIST_PATH, QontoClient, Tokens, probe
from .limits import RateLimiter, Slots
from .multipart import FIELD, Upload, body_size, build_body, name_key, part_overhead, upload_name

__all__ = [
    "BULK_PATH", "FIELD", "LIST_PATH", "QontoClient", "RateLimiter", "Slots", "Tokens", "Upload",
    "body_size", "build_body", "name_key", "part_overhead", "probe", "upload_name",
]
