"""What the api's routers share: the web UI's files, the Redis clients, model and settings
that create_app puts on `app.state`, the bearer-token checks, and the documented errors.

    app.state.settings      ApiSettings
    app.state.redis         redis.Redis (sync routes)
    app.state.async_redis   redis.asyncio.Redis (the SSE stream)
    app.state.broadcaster   services/api/broadcast.Broadcaster (the SSE stream's one reader)
    app.state.model         the AudioModel /classify uses, None when it could not be loaded
    app.state.model_error   why not (one line), None when loaded
"""

import hmac
from pathlib import Path
from typing import Annotated, Any

import redis
from fastapi import Depends, Header, HTTPException, Request
from pydantic import BaseModel, Field

from services.api.settings import ApiSettings

STATIC = Path(__file__).parent / "static"  # the dashboard's files


class ErrorOut(BaseModel):
    detail: str = Field(description="why, in one line")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "model": ErrorOut} for code, text in (
        (400, "a bad parameter or upload"), (401, "a bearer token is needed"),
        (413, "the upload is too large"), (503, "not ready"))}


class LabelScore(BaseModel):
    label: str
    score: float


def api_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def redis_client(request: Request) -> redis.Redis:
    return request.app.state.redis


Settings = Annotated[ApiSettings, Depends(api_settings)]
RedisClient = Annotated[redis.Redis, Depends(redis_client)]


def require_write(settings: Settings,
                  authorization: Annotated[str | None, Header()] = None) -> None:
    """Writes, uploads and configuration: the bearer token when one is configured."""
    check_bearer(settings.token, authorization)


def require_read(settings: Settings,
                 authorization: Annotated[str | None, Header()] = None) -> None:
    check_read(settings, authorization)


WRITE = Depends(require_write)
READ = Depends(require_read)


def check_read(settings: ApiSettings, authorization: str | None) -> None:
    """Reads: the bearer token only with SOUNDHIVE_API_READ_AUTH=1."""
    check_bearer(settings.token if settings.read_auth else None, authorization)


def check_bearer(token: str | None, authorization: str | None) -> None:
    """401 unless `authorization` is `Bearer <token>` (nothing to check when token is None)."""
    scheme, _, given = (authorization or "").partition(" ")
    check_token(token, given if scheme.lower() == "bearer" else None)


def check_token(token: str | None, given: str | None) -> None:
    """401 unless `given` is `token`, compared in constant time (None: nothing to check)."""
    if token is None:
        return
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "a valid bearer token is needed (Authorization: Bearer "
                                 "<SOUNDHIVE_API_TOKEN>)", headers={"WWW-Authenticate": "Bearer"})
