"""GET /events/stream: Server-Sent Events, one per event start and end; `Last-Event-ID`
resumes. While a recorder runs, an end carries its `clip` and `spectrogram` URLs
(shared/clips.announced)."""

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated

import redis
import redis.asyncio
from fastapi import APIRouter, Header, HTTPException, Request
from sse_starlette.sse import EventSourceResponse

from services.api.deps import ERRORS, READ_OR_QUERY_TOKEN
from shared import clips, streams
from shared.messages import Event, MessageError

SSE_BLOCK_MS = 1000
SSE_PING_S = 15
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

router = APIRouter(tags=["events"])


@router.get("/events/stream", dependencies=[READ_OR_QUERY_TOKEN], responses=ERRORS)
async def event_stream(
    request: Request,
    source: str | None = None,
    label: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Every event start and end as it happens (`event:` start|end, `id:` its stream id,
    `data:` the event). Reconnecting with Last-Event-ID gets what was missed, once."""
    if last_event_id is not None and not STREAM_ID.match(last_event_id):
        raise HTTPException(400, f"Last-Event-ID {last_event_id[:40]!r} is not an id this "
                                 "stream sent")
    aclient: redis.asyncio.Redis = request.app.state.async_redis
    cursor = last_event_id or await _stream_end(aclient)
    return EventSourceResponse(_sse(request, aclient, cursor, source, label), ping=SSE_PING_S)


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
        recording = bool(reply) and bool(await aclient.exists(streams.RECORDER_ALIVE))
        for entry_id, fields in reply[0][1] if reply else []:
            cursor = entry_id.decode()
            try:
                event = Event.decode(fields[streams.MESSAGE_FIELD])
            except (MessageError, KeyError):
                continue
            if (source is None or event.source == source) and (label is None
                                                               or label in event.names()):
                data = event.fields() | clips.announced(event, recording)
                yield {"event": event.kind, "id": cursor, "data": json.dumps(data)}
