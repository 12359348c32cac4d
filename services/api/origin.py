"""Requests that a web page of another origin makes (its browser says so in `Origin`) are
refused with 403, unless SOUNDHIVE_API_CORS_ORIGINS lists that origin. Without this, any page
the user has open could POST a form to the api (a "simple" request needs no CORS preflight)
and spend the address's allowance of wrong tokens (lockout.py), locking the dashboard out.

Same origin is the Origin's host[:port] equal to the request's Host header (not the scheme: a
TLS proxy in front of the api speaks http to it). Requests without Origin (curl, scripts,
same-origin GETs) pass.

That comparison trusts the Host header, which a page of another site controls through DNS
rebinding (its name made to resolve to 127.0.0.1): so requests are answered only for host names
the api knows (KnownHost, SOUNDHIVE_API_ALLOWED_HOSTS; while it binds a loopback address, by
default only the loopback names), as Jupyter does."""

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


HEALTH_PATHS = frozenset({"/healthz", "/readyz"})  # probes name the pod's address; no data


class KnownHost:
    """ASGI middleware answering 400 to requests whose Host is not one of `allowed` (names
    without port; "*" allows any), but for the health probes."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(name.lower() for name in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and "*" not in self.allowed
                and scope["path"] not in HEALTH_PATHS):
            name = _host_name(Headers(scope=scope).get("host", ""))
            if name not in self.allowed:
                refusal = JSONResponse({"detail": f"this api does not answer for host "
                                                  f"{name[:60]!r}: list it in "
                                                  "SOUNDHIVE_API_ALLOWED_HOSTS"}, 400)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def allowed_hosts(configured: Iterable[str], bind_host: str) -> frozenset[str]:
    """The configured names, else the loopback names when the api binds a loopback address
    (other names reaching it are a page's DNS rebinding), else any ("*")."""
    names = frozenset(configured)
    if names:
        return names
    return LOOPBACK_NAMES | {bind_host} if is_loopback(bind_host) else frozenset({"*"})


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _host_name(host: str) -> str:
    """`host` of a Host header `host[:port]` or `[v6]:port`, lower-case; "" if malformed."""
    if any(char in host for char in "@/?#\\"):
        return ""
    try:
        return urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""


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
