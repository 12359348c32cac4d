"""The api service: the events API and the web dashboard, over the pipeline's Redis.

    GET  /events            detections newest first, filtered, cursor-paged (the HTML history
                            page instead when a browser asks for text/html)   routers/events.py
    GET  /events.csv        the same, as CSV
    GET  /events/stream     Server-Sent Events, one per start and end; `Last-Event-ID` resumes
                                                                              routers/stream.py
    GET  /events/{id}/clip, /events/{id}/spectrogram    an event's clip (range requests)
    POST /events/{id}/review, GET /reviews              verdicts on detections
                                                                              routers/clips.py
    GET  /sources                                                             routers/sources.py
    GET  /labels, /config/events, /sinks, /config/devicehive                  routers/config.py
    PUT  /config/devicehive the dashboard's DeviceHive form, stored for the notifier
    POST /classify          an upload, answered like `soundhive classify --json`
                                                                              routers/classify.py
    GET  /healthz, /readyz, /metrics                                          routers/health.py
    GET  /docs (Swagger UI, served offline), /  (the dashboard), /static/...  here

Every answer comes from Redis (shared/detections.py, shared/status.py, the events stream), so
any number of replicas answer alike. Writes, uploads and configuration need
`Authorization: Bearer <SOUNDHIVE_API_TOKEN>` (compared in constant time), and are refused
(403) when no token is set; with SOUNDHIVE_API_READ_AUTH=1 reads do too. Too many wrong tokens
from one address: 429 (lockout.py); requests from web pages of other origins: 403 unless
SOUNDHIVE_API_CORS_ORIGINS lists them (origin.py). Tokens are never logged nor shown back.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import redis
import redis.asyncio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.broadcast import Broadcaster
from services.api.deps import STATIC, ErrorOut
from services.api.lockout import TokenFailureLimit
from services.api.origin import KnownHost, SameOrigin, allowed_hosts
from services.api.routers import classify, clips, config, events, health, sources, stream
from services.api.settings import ApiSettings
from shared import bus, metrics, streams
from shared.models import ModelError, load_model
from shared.topology import Topology

# A scrape waits at most this long for the consumer groups' lag (Prometheus gives up at 10 s).
GROUPS_TIMEOUT_S = 2.0
REDIS_POOL_WAIT_S = 5  # a request waits this long for a pooled Redis connection, then gets 503
RETRY_AFTER_S = 1


def create_app(settings: ApiSettings) -> FastAPI:
    """The api with `settings` on app.state; Redis clients and the model are opened by the
    lifespan (services/api/deps.py lists what routers find on app.state)."""
    # Swagger UI from fastapi-offline's files, without its online validator; no ReDoc: its
    # bundle loads a logo from a CDN.
    app = FastAPIOffline(title="soundhive", version="1", lifespan=_lifespan, redoc_url=None,
                         description="Live sound events from many microphones.",
                         swagger_ui_parameters={"validatorUrl": None})
    app.state.settings = settings
    app.add_middleware(TokenFailureLimit)
    app.add_middleware(SameOrigin, allowed=settings.cors_origins)
    app.add_middleware(KnownHost, allowed=allowed_hosts(settings.allowed_hosts, settings.host))
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "PUT", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    app.add_middleware(_CountRequests)
    for error in bus.CONNECTION_ERRORS:
        app.add_exception_handler(error, _redis_unavailable)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.include_router(health.router)
    app.add_api_route("/", _dashboard, include_in_schema=False)
    for module in (events, stream, clips, sources, config, classify):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _document_one_line_errors(app)
    return app


def _document_one_line_errors(app: FastAPI) -> None:
    """The OpenAPI schema's 422 body as _invalid_request answers it: `detail` one string."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = ErrorOut.model_json_schema()
                schemas.pop("ValidationError", None)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    groups = Topology.connect(settings, connect=partial(
        redis.Redis.from_url, socket_timeout=GROUPS_TIMEOUT_S,
        socket_connect_timeout=GROUPS_TIMEOUT_S))
    app.state.group_metrics = CollectorRegistry()
    app.state.group_metrics.register(metrics.ConsumerGroups(groups.group_backlogs))
    pool = {"max_connections": settings.redis_max_connections, "timeout": REDIS_POOL_WAIT_S}
    app.state.topology = Topology.connect(settings, connect=lambda url: redis.Redis.from_pool(
        redis.BlockingConnectionPool.from_url(url, socket_timeout=10, **pool)))
    app.state.redis = app.state.topology.home
    async_servers = _async_servers(settings, pool)
    topology: Topology = app.state.topology
    app.state.broadcaster = Broadcaster(
        [(async_servers[shard.index % len(async_servers)], shard.key(streams.EVENTS_STREAM))
         for shard in topology.every], settings.sse_queue, stream.SSE_BLOCK_MS)
    app.state.model, app.state.model_error = None, None
    try:
        app.state.model = await asyncio.to_thread(load_model, settings.model)
    except ModelError as exc:  # /readyz says so; everything but /classify still works
        app.state.model_error = str(exc)
    async with app.state.broadcaster.running():
        yield
    for server in async_servers:
        await server.aclose()
    app.state.topology.close()
    groups.close()


def _async_servers(settings: ApiSettings, pool: dict) -> list[redis.asyncio.Redis]:
    """The live stream's clients, one per Redis server (shared/topology.py's order)."""
    timeout = stream.SSE_BLOCK_MS / 1000 + 10
    if settings.redis_cluster:
        return [redis.asyncio.RedisCluster.from_url(settings.redis_url, socket_timeout=timeout)]
    return [redis.asyncio.Redis.from_pool(redis.asyncio.BlockingConnectionPool.from_url(
        url, socket_timeout=timeout, **pool)) for url in settings.redis_urls or
        (settings.redis_url,)]


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """422 with a one-line detail naming each bad field, without echoing the input (FastAPI's
    default list repeats it, tokens and passwords of a rejected form included)."""
    assert isinstance(exc, RequestValidationError)
    reasons = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"][1:]) or str(error["loc"][0])
        reasons.append(f"{field}: {str(error['msg']).removeprefix('Value error, ')}")
    return JSONResponse({"detail": "; ".join(reasons)}, 422)


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    """503 + Retry-After, not 500, when Redis is unreachable or no pooled connection is free."""
    return JSONResponse({"detail": "Redis is unreachable or every connection to it is busy; "
                                   "retry shortly"}, 503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


def _dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html")


class _CountRequests:
    """Counts requests by route and status and times them to their response's start. A plain
    ASGI middleware: Starlette's BaseHTTPMiddleware passes every message of every live stream
    through one more task and memory stream (at 300 clients: median latency 18 -> 173 ms)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        response = _refuse_big_upload(Request(scope))
        if response is not None:
            return await response(scope, receive, send)

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                path = getattr(scope.get("route"), "path", "other")
                metrics.API_REQUESTS.labels(path, str(message["status"])).inc()
                metrics.API_SECONDS.labels(path).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, counted)


def _refuse_big_upload(request: Request) -> Response | None:
    """413 before reading a body its Content-Length says is too big (the multipart parser
    would spool it all to disk first)."""
    limit = request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if (request.method == "POST" and declared.isdigit()
            and int(declared) > limit + classify.UPLOAD_BLOCK):
        return Response(json.dumps({"detail": classify.too_large(limit)}), 413,
                        media_type="application/json")
    return None
