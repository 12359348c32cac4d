"""GET /events/stream: Server-Sent Events, one per event start and end, fanned out by the api
process's one reader (services/api/broadcast.py); `Last-Event-ID` resumes. Not yet over
sharded streams (SOUNDHIVE_SHARDS > 1): 501, poll /events instead."""

import re
from collections.abc import AsyncIterator
from typing import Annotated

import redis
import redis.asyncio
from fastapi import APIRouter, Header, HTTPException, Query, Request
from sse_starlette.sse import EventSourceResponse

from services.api.broadcast import (
    Broadcaster,
    Dropped,
    Filter,
    Page,
    Subscription,
    position,
    reconnect_message,
    replay,
)
from services.api.deps import ERRORS, Settings, check_read, check_token

SSE_BLOCK_MS = 1000
SSE_PING_S = 15
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

router = APIRouter(tags=["events"])


SHARDED = ("the live stream does not read sharded streams yet (SOUNDHIVE_SHARDS > 1): poll "
           "/events instead")


@router.get("/events/stream", responses={**ERRORS, 501: {"description": SHARDED}})
async def event_stream(
    request: Request,
    settings: Settings,
    source: str | None = None,
    label: str | None = None,
    token: Annotated[str | None, Query(
        description="the read token, for clients that cannot send headers (EventSource)"
    )] = None,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Every event start and end as it happens (`event:` start|end, `id:` its stream id,
    `data:` the event). Reconnecting with Last-Event-ID gets what was missed, once. A client
    more than SOUNDHIVE_API_SSE_QUEUE events behind, or whose replay Redis fails, gets a last
    event `reconnect` (`data:` the reason and its last event id) and the stream ends:
    reconnect with Last-Event-ID."""
    if token is not None and settings.read_auth:
        check_token(settings.token, token)
    else:
        check_read(settings, authorization)
    if settings.shards > 1:
        raise HTTPException(501, SHARDED)
    if last_event_id is not None and not STREAM_ID.match(last_event_id):
        raise HTTPException(400, f"Last-Event-ID {last_event_id[:40]!r} is not an id this "
                                 "stream sent")
    entry_filter = Filter(source, label)
    aclient: redis.asyncio.Redis = request.app.state.async_redis
    # The first page of a resume is read here, so that no Redis connection to spare is a 503.
    first = await replay(aclient, last_event_id, entry_filter) if last_event_id else None
    return EventSourceResponse(
        _sse(request.app.state.broadcaster, aclient, entry_filter, first), ping=SSE_PING_S)


async def _sse(broadcaster: Broadcaster, aclient: redis.asyncio.Redis, entry_filter: Filter,
               first_page: Page | None) -> AsyncIterator[bytes]:
    subscription = broadcaster.subscribe(entry_filter)
    sent_id = None
    try:
        after = None  # live entries up to this replayed one were sent already
        if first_page is not None:
            async for page in _replay_pages(broadcaster, aclient, entry_filter, first_page,
                                            subscription):
                if page.entries:
                    sent_id = page.entries[-1].id
                    yield b"".join(entry.message for entry in page.entries)
                after = position(page.last_id)
        while True:
            batch = [entry for entry in await subscription.next_batch()
                     if after is None or entry.position > after]
            if batch:
                sent_id = batch[-1].id
                yield b"".join(entry.message for entry in batch)
    except Dropped:
        yield reconnect_message(f"too slow: more than {subscription.size} events behind", sent_id)
    except redis.RedisError:
        yield reconnect_message("redis is unavailable", sent_id)
    finally:
        broadcaster.unsubscribe(subscription)


async def _replay_pages(broadcaster: Broadcaster, aclient: redis.asyncio.Redis,
                        entry_filter: Filter, page: Page, subscription: Subscription
                        ) -> AsyncIterator[Page]:
    """`page` (read before subscribing), then pages up to a short one read after it and after
    the reader started (until then, where its live entries will begin is unknown)."""
    yield page
    await broadcaster.started.wait()
    while True:
        if subscription.dropped:
            raise Dropped
        page = await replay(aclient, page.last_id, entry_filter)
        yield page
        if page.complete:
            return
