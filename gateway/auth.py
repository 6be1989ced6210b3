"""Bearer-key authentication.

An ASGI middleware rather than a route dependency on purpose: FastAPI reads the
request body before it resolves dependencies, and an unauthenticated client must
not get to upload 25 MB first.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import error_response


def key_matches(presented: str, keys: Sequence[bytes]) -> bool:
    """Constant-time check against every key (no early exit on the first match)."""
    candidate = presented.encode("utf-8")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class AuthMiddleware:
    """Requires `Authorization: Bearer <key>` on the protected path prefixes."""

    def __init__(self, app: ASGIApp, api_keys: Sequence[SecretStr], protected_prefixes: Sequence[str]) -> None:
        self.app = app
        self._keys = [key.get_secret_value().encode("utf-8") for key in api_keys]
        self._prefixes = tuple(protected_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._keys or not scope["path"].startswith(self._prefixes):
            await self.app(scope, receive, send)
            return
        # CORS preflight carries no credentials by design.
        if scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        token = bearer_token(Headers(scope=scope).get("authorization"))
        if token is None:
            message = "missing API key: send Authorization: Bearer <key>"
        elif not key_matches(token, self._keys):
            message = "invalid API key"
        else:
            await self.app(scope, receive, send)
            return
        response = error_response(401, message, code="invalid_api_key",
                                  headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
