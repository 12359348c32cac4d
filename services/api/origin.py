"""Requests that a web page of another origin makes (its browser says so in `Origin`) are
refused with 403, unless SOUNDHIVE_API_CORS_ORIGINS lists that origin. Without this, any page
the user has open could POST a form to the api (a "simple" request needs no CORS preflight)
and spend the address's allowance of wrong tokens (lockout.py), locking the dashboard out.

Same origin is the Origin's host[:port] equal to the request's Host header (not the scheme: a
TLS proxy in front of the api speaks http to it). Requests without Origin (curl, scripts,
same-origin GETs) pass."""

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class SameOrigin:
    """ASGI middleware refusing cross-origin requests from origins not allowed."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._admits(Headers(scope=scope)):
            refusal = JSONResponse({"detail": "a request from a web page of another origin: "
                                              "list that origin in SOUNDHIVE_API_CORS_ORIGINS"},
                                   403)
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _admits(self, headers: Headers) -> bool:
        origin = headers.get("origin")
        if origin is None or origin in self.allowed:
            return True
        return urlsplit(origin).netloc.lower() == headers.get("host", "").lower() != ""
