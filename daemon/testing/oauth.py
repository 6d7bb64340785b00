"""The emulator's OAuth: the consent page and the token endpoint, as Qonto's behave."""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web


class OAuthRoutes:
    """OAuth clients, codes and rotating refresh tokens, part of the Emulator."""

    oauth_clients: dict[str, tuple[str, str]]  # client_id -> (secret, login)
    refresh_tokens: dict[str, tuple[str, str]]  # live refresh token -> (client_id, login)
    refresh_grace_s: float
    _rotated: dict[str, tuple[tuple[str, str], float]]
    access_lifetime_s: float
    _access_expiry: dict[str, float]
    bearer_tokens: dict[str, str]
    refreshes: int
    _codes: dict[str, tuple[str, str, str]]
    consents: list[dict[str, str]]
    token_quirks: dict[str, object]
    token_error_page: bool
    token_hangs: set[str]

    def add_oauth_client(self, login: str, client_id: str, client_secret: str) -> str:
        """Register an OAuth client for `login`; returns its first refresh token."""
        self.oauth_clients[client_id] = (client_secret, login)
        first = f"rt-{uuid.uuid4().hex}"
        self.refresh_tokens[first] = (client_id, login)
        return first

    def revoke_access_tokens(self) -> None:
        self.bearer_tokens.clear()
        self._access_expiry.clear()

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        """The consent page, already agreed to: back to redirect_uri with a code."""
        query = request.query
        client = self.oauth_clients.get(query.get("client_id", ""))
        redirect = query.get("redirect_uri", "")
        if client is None or query.get("response_type") != "code" or not redirect:
            return web.Response(status=400, text="invalid_request")
        self.consents.append(dict(query))
        if "offline_access" not in query.get("scope", "").split():
            raise web.HTTPFound(f"{redirect}?error=invalid_scope&state={query.get('state', '')}")
        code = f"code-{uuid.uuid4().hex}"
        self._codes[code] = (query["client_id"], client[1], redirect)
        raise web.HTTPFound(f"{redirect}?code={code}&state={query.get('state', '')}")

    async def _token(self, request: web.Request) -> web.Response:
        """Qonto's token endpoint: authorization codes (once each), and refresh tokens
        that rotate (a used one dies after a short grace)."""
        form = await request.post()
        if form.get("client_id") in self.token_hangs:
            await asyncio.Event().wait()  # a token endpoint that never answers
        if self.token_error_page:  # a gateway that quotes what it was sent
            quoted = "&".join(f"{k}={v}" for k, v in form.items() if isinstance(v, str))
            return web.Response(status=502, text=f"<html>Bad gateway for {quoted}</html>")
        client = self.oauth_clients.get(str(form.get("client_id", "")))
        if client is None or client[0] != form.get("client_secret"):
            return web.json_response({"error": "invalid_client"}, status=401)
        now = asyncio.get_running_loop().time()
        if form.get("grant_type") == "authorization_code":
            granted = self._codes.pop(str(form.get("code", "")), None)
            if granted is None or granted[0] != form.get("client_id") or (
                granted[2] != form.get("redirect_uri")
            ):
                return web.json_response({"error": "invalid_grant"}, status=400)
            owner: tuple[str, str] | None = (granted[0], granted[1])
        elif form.get("grant_type") == "refresh_token":
            used = str(form.get("refresh_token", ""))
            owner = self.refresh_tokens.pop(used, None)
            if owner is not None:
                self._rotated[used] = (owner, now + self.refresh_grace_s)
            elif used in self._rotated and self._rotated[used][1] > now:
                owner = self._rotated[used][0]
        else:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if owner is None or owner[0] != form.get("client_id"):
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.refreshes += 1
        access, refresh = f"at-{uuid.uuid4().hex}", f"rt-{uuid.uuid4().hex}"
        self.bearer_tokens[access] = owner[1]
        self._access_expiry[access] = asyncio.get_running_loop().time() + self.access_lifetime_s
        self.refresh_tokens[refresh] = owner
        return web.json_response({
            "access_token": access, "token_type": "bearer",
            "expires_in": self.access_lifetime_s, "refresh_token": refresh,
            **self.token_quirks,
        })
