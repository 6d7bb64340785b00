"""What the running daemon knows of each organization (for `status`), and OAuth tokens."""

from __future__ import annotations

import sqlite3

from .commits import Store
from .sql import now_iso


class Organizations(Store):
    async def note_org(
        self,
        org: str,
        *,
        paused: bool | None = None,
        reason: str | None = None,
        success: bool = False,
        error: str | None = None,
        unreachable_since: str | None = None,
    ) -> None:
        """What `status` shows of an organization: paused and why, last success, last error.

        Not waited for: it is bookkeeping for people, made durable by the next commit.
        """
        now = now_iso()
        await self._write(lambda: self._db.execute(
            """
            INSERT INTO organizations (org, paused, paused_reason, last_success_at, last_error,
                                       last_error_at, unreachable_since, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (org) DO UPDATE SET
                unreachable_since = CASE WHEN excluded.last_success_at IS NOT NULL THEN NULL
                    ELSE COALESCE(excluded.unreachable_since, unreachable_since) END,
                paused = COALESCE(excluded.paused, paused),
                paused_reason = CASE WHEN excluded.paused IS NULL THEN paused_reason
                                     ELSE excluded.paused_reason END,
                last_success_at = COALESCE(excluded.last_success_at, last_success_at),
                last_error = COALESCE(excluded.last_error, last_error),
                last_error_at = COALESCE(excluded.last_error_at, last_error_at),
                updated_at = excluded.updated_at
            """,
            (org, None if paused is None else int(paused), reason if paused else None,
             now if success else None, error, now if error else None, unreachable_since, now),
        ), wait=False)

    async def organizations(self) -> dict[str, dict[str, object]]:
        try:
            async with self._db.execute("SELECT * FROM organizations") as cur:
                rows = await cur.fetchall()
        except sqlite3.OperationalError:  # a journal from before the table
            return {}
        return {
            r["org"]: {
                "paused": bool(r["paused"]), "paused_reason": r["paused_reason"],
                "last_success_at": r["last_success_at"], "last_error": r["last_error"],
                "last_error_at": r["last_error_at"],
                "unreachable_since": (
                    r["unreachable_since"] if "unreachable_since" in r.keys() else None  # noqa: SIM118
                ),
            }
            for r in rows
        }

    async def refresh_tokens(self) -> list[str]:
        """Every refresh token kept (secrets to redact wherever text is shown)."""
        try:
            async with self._db.execute("SELECT refresh_token FROM oauth_tokens") as cur:
                rows = await cur.fetchall()
        except sqlite3.OperationalError:  # a journal from before OAuth
            return []
        return [str(r[0]) for r in rows if r[0]]

    async def refresh_token(self, org: str) -> tuple[str, str] | None:
        """(the newest refresh token, sha256 of the configured one it descends from)."""
        async with self._db.execute(
            "SELECT refresh_token, configured FROM oauth_tokens WHERE org = ?", (org,)
        ) as cur:
            row = await cur.fetchone()
        return (row["refresh_token"], row["configured"]) if row else None

    async def store_refresh_token(self, org: str, token: str, configured: str) -> None:
        """Committed (synchronous=FULL) before the new access token is used."""
        now = now_iso()
        await self._write(lambda: self._db.execute(
            "INSERT INTO oauth_tokens (org, refresh_token, configured, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (org) DO UPDATE SET "
            "refresh_token = excluded.refresh_token, configured = excluded.configured, "
            "updated_at = excluded.updated_at",
            (org, token, configured, now),
        ))
