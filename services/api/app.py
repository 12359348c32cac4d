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
from one address: 429 (lockout.py). Tokens are never logged nor shown back.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import redis
import redis.asyncio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from services.api.deps import STATIC
from services.api.lockout import TokenFailureLimit
from services.api.routers import classify, clips, config, events, health, sources, stream
from services.api.settings import ApiSettings
from shared import bus, metrics
from shared.models import ModelError, load_model

# A scrape waits at most this long for the consumer groups' lag (Prometheus gives up at 10 s).
GROUPS_TIMEOUT_S = 2.0


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
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "PUT", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    app.middleware("http")(_count_requests)
    app.include_router(health.router)
    app.add_api_route("/", _dashboard, include_in_schema=False)
    for module in (events, stream, clips, sources, config, classify):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    app.state.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    app.state.async_redis = redis.asyncio.Redis.from_url(
        settings.redis_url, socket_timeout=stream.SSE_BLOCK_MS / 1000 + 10)
    groups_redis = redis.Redis.from_url(settings.redis_url, socket_timeout=GROUPS_TIMEOUT_S,
                                        socket_connect_timeout=GROUPS_TIMEOUT_S)
    app.state.group_metrics = CollectorRegistry()
    app.state.group_metrics.register(
        metrics.ConsumerGroups(partial(bus.group_backlogs, groups_redis)))
    app.state.model, app.state.model_error = None, None
    try:
        app.state.model = await asyncio.to_thread(load_model, settings.model)
    except ModelError as exc:  # /readyz says so; everything but /classify still works
        app.state.model_error = str(exc)
    yield
    await app.state.async_redis.aclose()
    app.state.redis.close()
    groups_redis.close()


def _dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html")


async def _count_requests(request: Request, call_next: Callable) -> Response:
    started = time.perf_counter()
    response = _refuse_big_upload(request)
    if response is not None:
        return response
    response = await call_next(request)
    route = request.scope.get("route")
    path = getattr(route, "path", "other")
    metrics.API_REQUESTS.labels(path, str(response.status_code)).inc()
    metrics.API_SECONDS.labels(path).observe(time.perf_counter() - started)
    return response


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
