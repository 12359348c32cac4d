"""GET /events/stream: Server-Sent Events, one per event start and end, fanned out by the api
process's readers (services/api/broadcast.py: one per shard); `Last-Event-ID` resumes. While a
recorder runs, an end carries its `clip` and `spectrogram` URLs (shared/clips.announced).

The response is Starlette's StreamingResponse of bytes already encoded (broadcast.Batch): one
ASGI send per write and nothing else per message (sse-starlette's EventSourceResponse took a
lock and a cancel scope per message, ~30 % of the api's CPU at 1,000 clients). Heartbeats come
from the broadcaster's one timer; a client's disconnect ends its stream (StreamingResponse
listens for it)."""

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated

import redis
from fastapi import APIRouter, Header, HTTPException, Request
from starlette.responses import StreamingResponse

from services.api.broadcast import (
    Batch,
    Broadcaster,
    Ended,
    Filter,
    Page,
    Reader,
    Subscription,
    position,
    reconnect_message,
    replay,
    resume_from,
)
from services.api.deps import ERRORS, READ_OR_QUERY_TOKEN, Settings

SSE_BLOCK_MS = 1000
SSE_PING_S = 15
HEARTBEAT = b": ping\r\n\r\n"  # a comment: keeps proxies from closing an idle stream
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy buffers it

router = APIRouter(tags=["events"])


@router.get("/events/stream", dependencies=[READ_OR_QUERY_TOKEN], responses=ERRORS)
async def event_stream(
    request: Request,
    settings: Settings,
    source: str | None = None,
    label: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Every event start and end as it happens (`event:` start|end, `id:` its stream id, or with
    several shards every shard's position when it went out, `data:` the event). Reconnecting
    with Last-Event-ID gets what was missed, once. A client more than
    SOUNDHIVE_API_SSE_QUEUE events behind, or whose replay Redis fails, gets a last event
    `reconnect` (`data:` the reason and its last event id) and the stream ends: reconnect
    with Last-Event-ID."""
    resume = None
    if last_event_id is not None:
        resume = resume_from(last_event_id, settings.shards)
        if resume is None:
            raise HTTPException(400, f"Last-Event-ID {last_event_id[:40]!r} is not an id this "
                                     "stream sent")
    entry_filter = Filter(source, label)
    broadcaster: Broadcaster = request.app.state.broadcaster
    # The first page of a resume is read here, so that no Redis connection to spare is a 503.
    first = await replay(broadcaster.readers, resume, entry_filter) if resume else None
    return StreamingResponse(_sse(broadcaster, broadcaster.readers, entry_filter, first),
                             headers=HEADERS, media_type="text/event-stream")


async def _sse(broadcaster: Broadcaster, readers: list[Reader], entry_filter: Filter,
               first_page: Page | None) -> AsyncIterator[bytes]:
    subscription = broadcaster.subscribe(entry_filter)
    sent_id = None
    try:
        after = None  # live entries up to these replayed ones (one per shard) were sent already
        if first_page is not None:
            async for page in _replay_pages(broadcaster, readers, entry_filter, first_page,
                                            subscription):
                if page.entries:
                    sent_id = page.entries[-1].id
                    yield b"".join(entry.message for entry in page.entries)
                after = [position(entry_id) for entry_id in page.positions]
        while True:
            batch = await subscription.next_batch()
            if batch is None:
                yield HEARTBEAT
                continue
            if after is not None:
                batch = Batch.of([entry for entry in batch.entries
                                  if entry.position > after[entry.shard]])
            if batch.entries:
                sent_id = batch.entries[-1].id
                yield batch.message
    except Ended as ended:
        yield reconnect_message(str(ended), sent_id)
    except redis.RedisError:
        yield reconnect_message("redis is unavailable", sent_id)
    finally:
        broadcaster.unsubscribe(subscription)


async def _replay_pages(broadcaster: Broadcaster, readers: list[Reader],
                        entry_filter: Filter, page: Page, subscription: Subscription
                        ) -> AsyncIterator[Page]:
    """`page` (read before subscribing), then pages up to the last shard's short one, each
    shard's read after it and after the readers started (until then, where their live entries
    will begin is unknown)."""
    yield page
    await broadcaster.started.wait()
    page = replace(page, shard=0)  # every shard again, from where it got to before
    while True:
        if subscription.ended:
            raise Ended(subscription.ended)
        page = await replay(readers, page, entry_filter)
        yield page
        if page.complete:
            return
