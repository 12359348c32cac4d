"""What the api's routers share: the web UI's files, the Redis clients, model and settings
that create_app puts on `app.state`, the bearer-token checks, and the documented errors.

Secure by default: with no SOUNDHIVE_API_TOKEN, writes (and reads under
SOUNDHIVE_API_READ_AUTH=1) are refused with 403; a missing or wrong token is 401 (lockout.py
answers 429 to an address after too many of those).

    app.state.settings      ApiSettings
    app.state.topology      shared/topology.Topology: every shard's Redis (sync routes)
    app.state.redis         redis.Redis (sync routes): the global keys' (the topology's home)
    app.state.broadcaster   services/api/broadcast.Broadcaster (the SSE stream's readers)
    app.state.model         the AudioModel /classify uses, None when it could not be loaded
    app.state.model_error   why not (one line), None when loaded
    app.state.group_metrics the consumer groups' lag and pending entries, read from Redis at
                            each scrape of /metrics (its own client, a short timeout)
"""

import hmac
from pathlib import Path
from typing import Annotated, Any

import redis
from fastapi import Depends, Header, HTTPException, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from services.api.settings import ApiSettings
from shared.topology import Topology

STATIC = Path(__file__).parent / "static"  # the dashboard's files


class ErrorOut(BaseModel):
    detail: str = Field(description="why, in one line")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "model": ErrorOut} for code, text in (
        (400, "a bad parameter or upload"), (401, "a bearer token is needed"),
        (403, "the api has no token: it refuses writes"),
        (413, "the upload is too large"), (429, "too many wrong tokens from this address"),
        (503, "not ready"))}

NO_TOKEN = ("the api has no token, so it refuses this: set SOUNDHIVE_API_TOKEN (or "
            "SOUNDHIVE_API_TOKEN_FILE) where it runs; `soundhive up` makes one per session")


class LabelScore(BaseModel):
    label: str
    score: float


def api_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def redis_client(request: Request) -> redis.Redis:
    return request.app.state.redis


def topology(request: Request) -> Topology:
    return request.app.state.topology


Settings = Annotated[ApiSettings, Depends(api_settings)]
RedisClient = Annotated[redis.Redis, Depends(redis_client)]
Shards = Annotated[Topology, Depends(topology)]


# Declared as a security scheme, so that /docs has an Authorize button for the token.
BEARER = HTTPBearer(auto_error=False, description="SOUNDHIVE_API_TOKEN")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def require_write(settings: Settings, credentials: Credentials) -> None:
    """Writes, uploads and configuration: always the bearer token."""
    check_token(settings.token, credentials.credentials if credentials else None)


def require_read(settings: Settings, credentials: Credentials) -> None:
    if settings.read_auth:
        check_token(settings.token, credentials.credentials if credentials else None)


def require_read_or_query_token(
    settings: Settings,
    token: Annotated[str | None, Query(
        description="the read token, for clients that cannot send headers (EventSource, "
                    "<audio>, <img>)")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    if token is not None and settings.read_auth:
        check_token(settings.token, token)
    else:
        check_read(settings, authorization)


WRITE = Depends(require_write)
READ = Depends(require_read)
READ_OR_QUERY_TOKEN = Depends(require_read_or_query_token)


def check_read(settings: ApiSettings, authorization: str | None) -> None:
    """Reads: the bearer token only with SOUNDHIVE_API_READ_AUTH=1."""
    if settings.read_auth:
        check_bearer(settings.token, authorization)


def check_bearer(token: str | None, authorization: str | None) -> None:
    """401 unless `authorization` is `Bearer <token>` (403 when token is None)."""
    scheme, _, given = (authorization or "").partition(" ")
    check_token(token, given if scheme.lower() == "bearer" else None)


def check_token(token: str | None, given: str | None) -> None:
    """401 unless `given` is `token`, compared in constant time; 403 when the api has no
    token (None)."""
    if token is None:
        raise HTTPException(403, NO_TOKEN)
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "a valid bearer token is needed (Authorization: Bearer "
                                 "<SOUNDHIVE_API_TOKEN>)", headers={"WWW-Authenticate": "Bearer"})
