"""What the classifier and notifier run with: GET /labels, /config/events, /sinks; the
dashboard's DeviceHive form: GET and PUT /config/devicehive (stored in Redis for the
notifier, tokens never shown back)."""

import json
import re

import redis
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, field_validator

from services.api.deps import ERRORS, READ, WRITE, RedisClient
from shared import streams
from shared.messages import MessageError, SinkStatus

DEVICE_ID = re.compile(r"^[a-zA-Z0-9-]{1,128}$")
DEVICEHIVE_SCHEMES = ("http://", "https://", "ws://", "wss://")

router = APIRouter()


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
def sinks(client: RedisClient) -> dict:
    """Each notifier sink's state, last error and counters."""
    found = []
    for raw in client.hvals(streams.SINKS_HASH):
        try:
            found.append(SinkStatus.decode(raw).fields())
        except MessageError:
            continue
    return {"sinks": sorted(found, key=lambda s: s["sink"])}


@router.get("/config/devicehive", tags=["notifier"], dependencies=[WRITE], responses=ERRORS)
def devicehive_config(client: RedisClient) -> dict:
    """The DeviceHive settings the dashboard stored (tokens: only whether they are set)."""
    return _devicehive_view(client)


@router.put("/config/devicehive", tags=["notifier"], dependencies=[WRITE], responses=ERRORS)
def store_devicehive_config(form: DeviceHiveForm, client: RedisClient) -> dict:
    """Store DeviceHive settings for the notifier (applied without a restart)."""
    values = form.model_dump(exclude_none=True)
    values = {k: v for k, v in values.items() if v != "" or not k.endswith("_token")}
    client.hset(streams.DEVICEHIVE_CONFIG, mapping=values)
    return _devicehive_view(client)


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
