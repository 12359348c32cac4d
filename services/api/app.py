"""The api service: the events API and the web dashboard, over the pipeline's Redis.

    GET  /events            detections newest first, filtered, cursor-paged (the HTML history
                            page instead when a browser asks for text/html)
    GET  /events/stream     Server-Sent Events, one per start and end; `Last-Event-ID` resumes
    GET  /sources, /labels, /config/events, /sinks, /config/devicehive
    PUT  /config/devicehive the dashboard's DeviceHive form, stored for the notifier
    POST /classify          an upload, answered like `soundhive classify --json`
    GET  /healthz, /readyz, /metrics, /docs, /  (the dashboard), /static/...

Every answer comes from Redis (shared/detections.py, shared/status.py, the events stream), so
any number of replicas answer alike. With SOUNDHIVE_API_TOKEN set, writes, uploads and
configuration need `Authorization: Bearer <token>` (compared in constant time); with
SOUNDHIVE_API_READ_AUTH=1 reads do too. Tokens are never logged nor shown back.
"""

import asyncio
import hmac
import json
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import redis
import redis.asyncio
from fastapi import Depends, FastAPI, File, Header, HTTPException, Query, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, field_validator
from sse_starlette.sse import EventSourceResponse

from services.api.settings import ApiSettings
from shared import detections, metrics, streams
from shared.audio import AudioError
from shared.inference import classify_file
from shared.messages import Event, MessageError, SinkStatus
from shared.models import ModelError, load_model
from shared.ranking import top_labels
from shared.status import read_sources

STATIC = Path(__file__).parent / "static"
MAX_LIMIT = 500
SSE_BLOCK_MS = 1000
SSE_PING_S = 15
UPLOAD_BLOCK = 1 << 20
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]+$")  # kept: decoders pick formats by it
DEVICE_ID = re.compile(r"^[a-zA-Z0-9-]{1,128}$")
DEVICEHIVE_SCHEMES = ("http://", "https://", "ws://", "wss://")


class DeviceHiveForm(BaseModel):
    """The dashboard's DeviceHive settings; an empty or missing token leaves the stored one."""

    url: str = Field(max_length=500)
    device_id: str = Field(max_length=128)
    notification: str = Field("sound_event", min_length=1, max_length=128)
    refresh_token: str | None = Field(None, max_length=8192)
    access_token: str | None = Field(None, max_length=8192)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not url.startswith(DEVICEHIVE_SCHEMES):
            raise ValueError("the DeviceHive URL starts with http(s):// (REST) or ws(s):// "
                             "(WebSocket)")
        return url

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, device_id: str) -> str:
        if not DEVICE_ID.match(device_id):
            raise ValueError("a DeviceHive device id is letters, digits and '-' only")
        return device_id


class EventOut(BaseModel):
    id: str
    source: str
    label: str
    score: float = Field(description="peak score so far")
    start: float = Field(description="seconds from the source's start")
    end: float | None = Field(description="null while the sound goes on")
    start_time: float = Field(description="unix seconds")
    end_time: float | None
    model: str
    categories: list[str] = Field(description="the label's AudioSet ancestors, nearest first; "
                                  "a `label` filter matches these too")


class EventsPage(BaseModel):
    events: list[EventOut]
    next: str | None = Field(description="cursor of the next page; null on the last")


class LabelScore(BaseModel):
    label: str
    score: float


class Level(BaseModel):
    rms: float
    dbfs: float


class SourceOut(BaseModel):
    source: str
    state: str = Field(description="running | retrying | finished | failed")
    detail: str = Field(description="why, when retrying or failed")
    last_seen: float = Field(description="unix seconds")
    chunks: int
    level: Level
    labels: list[LabelScore] = Field(description="current top labels, highest first")


class SourcesOut(BaseModel):
    sources: list[SourceOut]


class ClassifyOut(BaseModel):
    file: str
    duration_s: float
    model: str
    labels: list[LabelScore]
    timeline: list[dict] | None = None


class ErrorOut(BaseModel):
    detail: str = Field(description="why, in one line")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "model": ErrorOut} for code, text in (
        (400, "a bad parameter or upload"), (401, "a bearer token is needed"),
        (413, "the upload is too large"), (503, "not ready"))}


def create_app(settings: ApiSettings) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["redis"] = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
        state["async_redis"] = redis.asyncio.Redis.from_url(
            settings.redis_url, socket_timeout=SSE_BLOCK_MS / 1000 + 10)
        try:
            state["model"] = await asyncio.to_thread(load_model, settings.model)
        except ModelError as exc:  # /readyz says so; everything but /classify still works
            state["model_error"] = str(exc)
        yield
        await state["async_redis"].aclose()
        state["redis"].close()

    app = FastAPI(title="soundhive", version="1", lifespan=lifespan,
                  description="Live sound events from many microphones.")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "PUT", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    app.state.max_upload_bytes = settings.max_upload_bytes
    app.middleware("http")(_count_requests)
    write = Depends(_bearer(settings.token))
    read_check = _bearer(settings.token if settings.read_auth else None)
    read = Depends(read_check)

    def client() -> redis.Redis:
        return state["redis"]

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(response: Response) -> dict:
        problems = []
        try:
            client().ping()
        except redis.RedisError as exc:
            problems.append(f"redis: {type(exc).__name__}")
        if "model" not in state:
            problems.append(state.get("model_error", "model not loaded yet"))
        response.status_code = 503 if problems else 200
        return {"status": "not ready" if problems else "ready", "problems": problems}

    @app.get("/metrics", tags=["health"])
    def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/events", tags=["events"], response_model=EventsPage, responses=ERRORS)
    def events(
        request: Request,
        response: Response,
        source: str | None = None,
        label: Annotated[str | None, Query(description="a label or a category of it "
                                           "(label=Animal finds Bark)")] = None,
        since: Annotated[float | None, Query(description="start_time >= since (unix s)")] = None,
        until: Annotated[float | None, Query(description="start_time <= until (unix s)")] = None,
        min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        cursor: str | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Any:
        """Detections newest first: a start and its end are one object (`end` null while the
        sound goes on). `next` is the cursor of the following page, null on the last."""
        headers = {"Vary": "Accept", "Cache-Control": "no-store"}  # HTML and JSON share a URL
        if _wants_html(request):  # the page holds no data: it asks for it with the token
            return FileResponse(STATIC / "events.html", headers=headers)
        read_check(authorization)
        response.headers.update(headers)
        query = detections.Query(source, label, since, until, min_score, limit, cursor)
        try:
            found, next_cursor = detections.page(client(), query)
        except detections.CursorError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"events": [_detection(e) for e in found], "next": next_cursor}

    @app.get("/events/stream", tags=["events"], responses=ERRORS)
    async def event_stream(
        request: Request,
        source: str | None = None,
        label: str | None = None,
        token: Annotated[str | None, Query(
            description="the read token, for clients that cannot send headers (EventSource)"
        )] = None,
        authorization: Annotated[str | None, Header()] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        """Every event start and end as it happens (`event:` start|end, `id:` its stream id,
        `data:` the event). Reconnecting with Last-Event-ID gets what was missed, once."""
        if token is not None and settings.read_auth:
            _check_token(settings.token, token)
        else:
            read_check(authorization)
        if last_event_id is not None and not STREAM_ID.match(last_event_id):
            raise HTTPException(400, f"Last-Event-ID {last_event_id[:40]!r} is not an id this "
                                     "stream sent")
        aclient: redis.asyncio.Redis = state["async_redis"]
        cursor = last_event_id or await _stream_end(aclient)
        return EventSourceResponse(_sse(request, aclient, cursor, source, label),
                                   ping=SSE_PING_S)

    @app.get("/sources", tags=["sources"], dependencies=[read], response_model=SourcesOut,
             responses=ERRORS)
    def sources() -> dict:
        """Each source: status, last seen, level, current top labels."""
        return {"sources": [{
            "source": view.status.source, "state": view.status.state,
            "detail": view.status.detail, "last_seen": view.status.updated,
            "chunks": view.status.seq + 1,
            "level": {"rms": round(view.rms, 6), "dbfs": view.dbfs},
            "labels": [{"label": name, "score": score} for name, score in
                       (view.latest.labels if view.latest else [])],
        } for view in read_sources(client())]}

    @app.get("/labels", tags=["model"], dependencies=[read], responses=ERRORS)
    def labels() -> dict:
        """The class names of the head the classifier serves."""
        info = _head_info(client())
        return {"head": info["head"], "model": info["model"], "labels": info["labels"]}

    @app.get("/config/events", tags=["model"], dependencies=[read], responses=ERRORS)
    def event_rules() -> dict:
        """The event rules in force (services/classifier/events.py)."""
        info = _head_info(client())
        return {"head": info["head"], "model": info["model"], "rules": info["rules"]}

    @app.get("/sinks", tags=["notifier"], dependencies=[read], responses=ERRORS)
    def sinks() -> dict:
        """Each notifier sink's state, last error and counters."""
        found = []
        for raw in client().hvals(streams.SINKS_HASH):
            try:
                found.append(SinkStatus.decode(raw).fields())
            except MessageError:
                continue
        return {"sinks": sorted(found, key=lambda s: s["sink"])}

    @app.get("/config/devicehive", tags=["notifier"], dependencies=[write], responses=ERRORS)
    def devicehive_config() -> dict:
        """The DeviceHive settings the dashboard stored (tokens: only whether they are set)."""
        return _devicehive_view(client())

    @app.put("/config/devicehive", tags=["notifier"], dependencies=[write], responses=ERRORS)
    def store_devicehive_config(form: DeviceHiveForm) -> dict:
        """Store DeviceHive settings for the notifier (applied without a restart)."""
        values = form.model_dump(exclude_none=True)
        values = {k: v for k, v in values.items() if v != "" or not k.endswith("_token")}
        client().hset(streams.DEVICEHIVE_CONFIG, mapping=values)
        return _devicehive_view(client())

    @app.post("/classify", tags=["classify"], dependencies=[write], response_model=ClassifyOut,
              response_model_exclude_none=True, responses=ERRORS)
    def classify(
        request: Request,
        file: Annotated[UploadFile, File(description="an audio file")],
        timeline: bool = False,
        top: Annotated[int, Query(ge=1, le=50)] = 5,
    ) -> dict:
        """Classify an uploaded file: the same JSON as `soundhive classify --json`."""
        if "model" not in state:
            raise HTTPException(503, state.get("model_error", "the model is loading"))
        model = state["model"]
        with tempfile.TemporaryDirectory(prefix="soundhive-upload-") as folder:
            path = _save_upload(file, Path(folder), settings.max_upload_bytes)
            try:
                result = classify_file(model, path)
            except AudioError as exc:
                raise HTTPException(400, str(exc).replace(str(path), file.filename or "upload")
                                    ) from None
        result.source = file.filename or "upload"
        return result.json_row(lambda s: top_labels(s, result.class_names, top), timeline)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _bearer(token: str | None) -> Callable[..., None]:
    """A dependency that checks `Authorization: Bearer <token>` (nothing when token is None)."""

    def check(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        _check_token(token, given if scheme.lower() == "bearer" else None)

    return check


def _check_token(token: str | None, given: str | None) -> None:
    if token is None:
        return
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "a valid bearer token is needed (Authorization: Bearer "
                                 "<SOUNDHIVE_API_TOKEN>)", headers={"WWW-Authenticate": "Bearer"})


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
    limit = request.app.state.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if request.method == "POST" and declared.isdigit() and int(declared) > limit + UPLOAD_BLOCK:
        detail = f"the upload is larger than {limit // 2**20} MB (SOUNDHIVE_API_MAX_UPLOAD_MB)"
        return Response(json.dumps({"detail": detail}), 413, media_type="application/json")
    return None


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


async def _stream_end(aclient: redis.asyncio.Redis) -> str:
    last = await aclient.xrevrange(streams.EVENTS_STREAM, count=1)
    return last[0][0].decode() if last else "0-0"


async def _sse(request: Request, aclient: redis.asyncio.Redis, cursor: str,
               source: str | None, label: str | None) -> AsyncIterator[dict]:
    while not await request.is_disconnected():
        try:
            reply = await aclient.xread({streams.EVENTS_STREAM: cursor}, count=100,
                                        block=SSE_BLOCK_MS)
        except redis.RedisError:  # Redis away: the client keeps its Last-Event-ID and waits
            await asyncio.sleep(1)
            continue
        for entry_id, fields in reply[0][1] if reply else []:
            cursor = entry_id.decode()
            try:
                event = Event.decode(fields[streams.MESSAGE_FIELD])
            except (MessageError, KeyError):
                continue
            if (source is None or event.source == source) and (label is None
                                                               or label in event.names()):
                yield {"event": event.kind, "id": cursor, "data": json.dumps(event.fields())}


def _detection(event: Event) -> dict:
    """A detection as /events shows it: the event without `kind` (`end` null says it goes on)."""
    fields = event.fields()
    del fields["kind"]
    return fields


def _head_info(client: redis.Redis) -> dict:
    raw = client.get(streams.HEAD_INFO)
    if raw is None:
        raise HTTPException(503, "no classifier has reported its head yet")
    return json.loads(raw)


def _devicehive_view(client: redis.Redis) -> dict:
    stored = {k.decode(): v.decode() for k, v in client.hgetall(streams.DEVICEHIVE_CONFIG).items()}
    return {"url": stored.get("url", ""), "device_id": stored.get("device_id", ""),
            "notification": stored.get("notification", "sound_event"),
            "refresh_token_set": bool(stored.get("refresh_token")),
            "access_token_set": bool(stored.get("access_token"))}


def _save_upload(upload: UploadFile, folder: Path, limit: int) -> Path:
    """Copy an upload to a file, refusing it (413) past `limit` bytes or empty (400)."""
    suffix = Path(upload.filename or "").suffix[:10]
    path = folder / ("upload" + (suffix if SAFE_SUFFIX.match(suffix) else ""))
    size = 0
    with path.open("wb") as out:
        while block := upload.file.read(UPLOAD_BLOCK):
            size += len(block)
            if size > limit:
                raise HTTPException(413, f"the upload is larger than {limit // 2**20} MB "
                                         "(SOUNDHIVE_API_MAX_UPLOAD_MB)")
            out.write(block)
    if size == 0:
        raise HTTPException(400, "the upload is empty")
    return path
