"""What the classifier and notifier run with: GET /labels, /config/events, /sinks (a sink's
last error only to holders of the token: it may quote a third party's answer); the dashboard's
DeviceHive form: GET and PUT /config/devicehive (stored in Redis for the notifier as one unit,
URL and credentials together, on SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS only; tokens never shown
back)."""

import json
import re
from typing import Annotated
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter, Header, HTTPException
from pydantic import BaseModel, Field, field_validator

from services.api.deps import ERRORS, READ, WRITE, RedisClient, Settings, check_bearer
from services.api.settings import ApiSettings
from shared import streams
from shared.devicehive import SCHEMES, where
from shared.messages import MessageError, SinkStatus

DEVICE_ID = re.compile(r"^[a-zA-Z0-9-]{1,128}$")
MAX_URL = 500
TOKENS = ("refresh_token", "access_token")
# What a sink's state tells a reader without the token (its detail may quote a server).
PUBLIC_DETAILS = {"failed": "refused by the server or misconfigured (the api token shows why)",
                  "connecting": "unreachable (the api token shows why)",
                  "retrying": "the server is busy or failing (the api token shows why)"}
BEHIND = re.compile(r"behind: \d+ lost")  # the notifier's own count, not a server's answer

router = APIRouter()


class DeviceHiveForm(BaseModel):
    """The dashboard's DeviceHive settings. A new URL needs its credentials; with the stored
    URL, an empty or missing token keeps the one stored for it. The URL is checked by the
    route (_checked_url): a validation error would echo it, and it may hold a password."""

    url: str
    device_id: str = Field(max_length=128)
    notification: str = Field("sound_event", min_length=1, max_length=128)
    refresh_token: str | None = Field(None, max_length=8192)
    access_token: str | None = Field(None, max_length=8192)

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, device_id: str) -> str:
        if not DEVICE_ID.match(device_id):
            raise ValueError("a DeviceHive device id is letters, digits and '-' only")
        return device_id


@router.get("/labels", tags=["model"], dependencies=[READ], responses=ERRORS)
def labels(client: RedisClient) -> dict:
    """The class names of the head the classifier serves."""
    info = _head_info(client)
    return {"head": info["head"], "model": info["model"], "labels": info["labels"]}


@router.get("/config/events", tags=["model"], dependencies=[READ], responses=ERRORS)
def event_rules(client: RedisClient) -> dict:
    """The event rules in force (services/classifier/events.py)."""
    info = _head_info(client)
    return {"head": info["head"], "model": info["model"], "rules": info["rules"]}


@router.get("/sinks", tags=["notifier"], dependencies=[READ], responses=ERRORS)
def sinks(client: RedisClient, settings: Settings,
          authorization: Annotated[str | None, Header()] = None) -> dict:
    """Each notifier sink's state, last error and counters. The last error itself only with
    the token (a wrong one: 401); without, a generic word for the state."""
    detailed = authorization is not None and settings.token is not None
    if detailed:
        check_bearer(settings.token, authorization)
    found = []
    for raw in client.hvals(streams.SINKS_HASH):
        try:
            status = SinkStatus.decode(raw).fields()
        except MessageError:
            continue
        if not detailed and status["detail"]:
            status["detail"] = _public_detail(status["state"], status["detail"])
        found.append(status)
    return {"sinks": sorted(found, key=lambda s: s["sink"])}


def _public_detail(state: str, detail: str) -> str:
    """A sink's detail for readers without the token: a generic word for the state (the detail
    may quote a third-party server) and how many events were lost, if any."""
    parts = [PUBLIC_DETAILS.get(state, ""), *BEHIND.findall(detail)]
    return "; ".join(part for part in parts if part)


@router.get("/config/devicehive", tags=["notifier"], dependencies=[WRITE], responses=ERRORS)
def devicehive_config(client: RedisClient, settings: Settings) -> dict:
    """The DeviceHive settings the dashboard stored (tokens: only whether they are set) and the
    hosts it may set."""
    return _devicehive_view(client, settings)


@router.put("/config/devicehive", tags=["notifier"], dependencies=[WRITE], responses=ERRORS)
def store_devicehive_config(form: DeviceHiveForm, client: RedisClient,
                            settings: Settings) -> dict:
    """Store DeviceHive settings for the notifier (applied without a restart): the URL, device,
    notification and credentials replace the whole stored configuration."""
    url = _checked_url(form.url)
    if not settings.devicehive.allows(url):
        raise HTTPException(400, settings.devicehive.refusal(url))
    given = {name: token for name in TOKENS if (token := getattr(form, name))}

    def replace(pipe: redis.client.Pipeline) -> None:
        stored = _decoded(pipe.hgetall(streams.DEVICEHIVE_CONFIG))
        kept = {name: stored[name] for name in TOKENS if stored.get(name)} \
            if stored.get("url") == url else {}
        if not kept | given:
            raise HTTPException(400, "a new DeviceHive URL needs its own credentials: enter a "
                                     "refresh or an access token")
        pipe.multi()
        pipe.delete(streams.DEVICEHIVE_CONFIG)
        pipe.hset(streams.DEVICEHIVE_CONFIG, mapping={
            "url": url, "device_id": form.device_id, "notification": form.notification,
            **kept, **given})

    client.transaction(replace, streams.DEVICEHIVE_CONFIG)
    return _devicehive_view(client, settings)


def _checked_url(url: str) -> str:
    """The form's URL as where() shows it (so that the form sends back what it was shown); 400
    with one line, never quoting it, when it is not a DeviceHive URL."""
    problem = _url_problem(url)
    if problem:
        raise HTTPException(400, f"the DeviceHive URL {problem}")
    return where(url)


def _url_problem(url: str) -> str | None:
    if len(url) > MAX_URL:
        return f"is longer than {MAX_URL} characters"
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        return "is http(s)://host/... (REST) or ws(s)://host/... (WebSocket)"
    if "@" in parts.netloc:
        return "may not hold a user or password: enter the credentials in the token fields"
    if parts.query or parts.fragment or url.rstrip("?#") != url:
        return "takes no query or fragment"
    try:
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    return None


def _head_info(client: redis.Redis) -> dict:
    raw = client.get(streams.HEAD_INFO)
    if raw is None:
        raise HTTPException(503, "no classifier has reported its head yet")
    return json.loads(raw)


def _decoded(stored: dict[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in stored.items()}


def _devicehive_view(client: redis.Redis, settings: ApiSettings) -> dict:
    stored = _decoded(client.hgetall(streams.DEVICEHIVE_CONFIG))
    return {"url": where(stored["url"]) if stored.get("url") else "",
            "device_id": stored.get("device_id", ""),
            "notification": stored.get("notification", "sound_event"),
            "refresh_token_set": bool(stored.get("refresh_token")),
            "access_token_set": bool(stored.get("access_token")),
            "allowed_hosts": list(settings.devicehive.hosts())}
