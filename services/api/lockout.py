"""Failed token attempts, limited per client address: after too many wrong tokens within a
minute (FAILURES_ALLOWED), an address's requests that carry a token are answered 429 with
Retry-After until its oldest failure leaves the moving window. Requests without a token pass
(a dashboard that has none yet is never locked out), and so does everyone else's.

The window lives in this api process: each replica counts on its own. Behind a reverse proxy,
the address is the proxy's unless uvicorn trusts its X-Forwarded-For (FORWARDED_ALLOW_IPS)."""

import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics

FAILURES_ALLOWED = parse("20/minute")


class TokenFailureLimit:
    """ASGI middleware counting the 401 answers to requests that carry a token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.window = MovingWindowRateLimiter(MemoryStorage())
        metrics.start_at_zero(metrics.API_TOKEN_FAILURES, metrics.TOKEN_FAILURE_OUTCOMES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _carries_token(scope):
            await self.app(scope, receive, send)
            return
        address = scope["client"][0] if scope.get("client") else "unknown"
        if not self.window.test(FAILURES_ALLOWED, address):
            metrics.API_TOKEN_FAILURES.labels("locked_out").inc()
            wait_s = self._retry_after(address)
            refusal = JSONResponse({"detail": "too many wrong tokens from this address: try "
                                              f"again in {wait_s} s"}, 429,
                                   headers={"Retry-After": str(wait_s)})
            await refusal(scope, receive, send)
            return

        async def count_refusal(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.window.hit(FAILURES_ALLOWED, address)
                metrics.API_TOKEN_FAILURES.labels("refused").inc()
            await send(message)

        await self.app(scope, receive, count_refusal)

    def _retry_after(self, address: str) -> int:
        reset_at = self.window.get_window_stats(FAILURES_ALLOWED, address).reset_time
        return max(1, math.ceil(reset_at - time.time()))


def _carries_token(scope: Scope) -> bool:
    return ("authorization" in Headers(scope=scope)
            or "token" in QueryParams(scope.get("query_string", b"")))
