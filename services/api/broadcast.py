"""One Redis reader per api process fans the events stream out to every live-stream client.

The reader (Broadcaster.running, entered by the app's lifespan) XREADs streams.EVENTS_STREAM,
decodes each entry and formats its SSE message once, and offers it to every subscription whose
filters match. A subscription queues at most `queue_size` messages: a client that falls further
behind is dropped (its queue freed at once, counted in soundhive_api_sse_dropped_total) and gets
a final `reconnect` event; reconnecting with Last-Event-ID, it misses nothing the stream still
holds. Redis trouble: the reader waits it out with backoff and resumes after the last entry it
read; the clients stay connected meanwhile.

A client resuming with Last-Event-ID replays what it missed from the stream in bounded pages
(`replay`, on the request's pooled connection, one XRANGE at a time). Its first page is read
before its response starts (no Redis connection free: 503); then it subscribes and reads pages
until one comes back short. That page was read after the subscription began (and after the
reader started), so it reaches at least the reader's position then, and every later entry
comes live. Live entries at or before
the last replayed one are skipped (routers/stream.py): stream ids are monotonic, so no entry
is sent twice or skipped.
"""

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import redis
import redis.asyncio
from sse_starlette import ServerSentEvent

from shared import bus, clips, metrics, streams
from shared.messages import Event, MessageError

RECONNECT_EVENT = "reconnect"  # the last event of a dropped client: reconnect with Last-Event-ID
RECONNECT_RETRY_MS = 1000  # the `retry:` a dropped client is given (EventSource waits that long)
READ_COUNT = 500  # entries per XREAD of the reader
# After a fan-out the reader waits this long per subscription (up to the cap) before reading
# again, so that events arriving meanwhile go out together: a write to a client's socket costs
# about 20 us however little it carries, so at 1,000 clients one write per event per client
# would take a whole core at 50 events/s. A lone dashboard waits nothing to speak of.
PAUSE_PER_SUBSCRIPTION_S = 50e-6
MAX_PAUSE_S = 0.05
REPLAY_PAGE = 500  # entries per XRANGE of a resuming client

Position = tuple[int, int]  # a stream id as numbers, ordered as Redis orders ids


def position(entry_id: str) -> Position:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


@dataclass(frozen=True, slots=True)
class Entry:
    """One event of the stream, ready to send: its SSE message is formatted once for all."""

    id: str
    position: Position
    source: str
    names: frozenset[str]  # what a label filter matches: the label and its categories
    message: bytes

    @classmethod
    def decode(cls, entry_id: bytes, fields: dict[bytes, bytes],
               recording: bool) -> "Entry | None":
        """The entry, or None for one that holds no event this version can read; while a
        recorder runs (`recording`), an end carries its clip's links."""
        try:
            event = Event.decode(fields[streams.MESSAGE_FIELD])
        except (MessageError, KeyError):
            return None
        text_id = entry_id.decode()
        data = event.fields() | clips.announced(event, recording)
        message = ServerSentEvent(json.dumps(data), event=event.kind, id=text_id)
        return cls(text_id, position(text_id), event.source, frozenset(event.names()),
                   message.encode())


@dataclass(frozen=True, slots=True)
class Filter:
    source: str | None = None
    label: str | None = None

    def matches(self, entry: Entry) -> bool:
        return ((self.source is None or entry.source == self.source)
                and (self.label is None or self.label in entry.names))

    def select(self, entries: list[Entry]) -> list[Entry]:
        if self.source is None and self.label is None:
            return entries
        return [entry for entry in entries if self.matches(entry)]


class Dropped(Exception):
    """The client fell more than its queue behind."""


class Subscription:
    """One client's bounded queue of live entries that pass its filter."""

    def __init__(self, entry_filter: Filter, queue_size: int):
        self.filter = entry_filter
        self.dropped = False
        self.size = queue_size
        self._queue: deque[Entry] = deque()
        self._waiting = asyncio.Event()

    def offer(self, entries: list[Entry]) -> bool:
        """Queue those of `entries` that pass the filter; False (and the queue freed) when they
        would overflow it."""
        wanted = self.filter.select(entries)
        if not wanted:
            return True
        if len(self._queue) + len(wanted) > self.size:
            self._queue.clear()
            self.dropped = True
            self._waiting.set()
            return False
        self._queue.extend(wanted)
        self._waiting.set()
        return True

    async def next_batch(self) -> list[Entry]:
        """Every entry queued since the last call, once there is one; Dropped when dropped."""
        await self._waiting.wait()
        self._waiting.clear()
        if self.dropped:
            raise Dropped
        batch = list(self._queue)
        self._queue.clear()
        return batch


class Broadcaster:
    """The api process's one reader of the events stream and its subscriptions."""

    def __init__(self, client: redis.asyncio.Redis, queue_size: int, block_ms: int = 1000):
        self._client = client
        self._queue_size = queue_size
        self._block_ms = block_ms
        self._subscriptions: set[Subscription] = set()
        self._cursor: str | None = None  # the last entry read; None until the stream's end is known
        self.started = asyncio.Event()  # set once the reader knows where the stream ends

    def subscribe(self, entry_filter: Filter) -> Subscription:
        """A subscription to every entry read from now on; unsubscribe it when done."""
        subscription = Subscription(entry_filter, self._queue_size)
        self._subscriptions.add(subscription)
        metrics.SSE_CLIENTS.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        metrics.SSE_CLIENTS.dec()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The reader runs as a task while in the context."""
        reader = asyncio.create_task(self._read_forever(), name="events-broadcaster")
        try:
            yield
        finally:
            reader.cancel()
            with suppress(asyncio.CancelledError):
                await reader

    async def _read_forever(self) -> None:
        weather = bus.Weather("api", metrics.Health())
        while True:
            try:
                entries = await self._read()
            except redis.RedisError as exc:
                await asyncio.sleep(weather.hit(exc))
                continue
            weather.clear()
            if entries:
                self._fan_out(entries)
                await asyncio.sleep(min(MAX_PAUSE_S,
                                        PAUSE_PER_SUBSCRIPTION_S * len(self._subscriptions)))

    async def _read(self) -> list[Entry]:
        if self._cursor is None:
            last = await self._client.xrevrange(streams.EVENTS_STREAM, count=1)
            self._cursor = last[0][0].decode() if last else "0-0"
            self.started.set()
        # Never more at once than a queue holds: a client keeping up is never dropped.
        reply = await self._client.xread({streams.EVENTS_STREAM: self._cursor},
                                         count=min(READ_COUNT, self._queue_size),
                                         block=self._block_ms)
        entries = []
        recording = bool(reply) and await _recording(self._client)
        for entry_id, fields in reply[0][1] if reply else ():
            self._cursor = entry_id.decode()
            entry = Entry.decode(entry_id, fields, recording)
            if entry is not None:
                entries.append(entry)
        return entries

    def _fan_out(self, entries: list[Entry]) -> None:
        dropped = [s for s in self._subscriptions if not s.offer(entries)]
        for subscription in dropped:
            self._subscriptions.discard(subscription)
            metrics.SSE_DROPPED.inc()


@dataclass(frozen=True)
class Page:
    entries: list[Entry]  # those passing the filter
    last_id: str  # the last entry read (the next page starts after it)
    complete: bool  # short: it reached the end of the stream


async def replay(client: redis.asyncio.Redis, after_id: str, entry_filter: Filter) -> Page:
    """One bounded page of the stream after `after_id`."""
    raw = await client.xrange(streams.EVENTS_STREAM, min=f"({after_id}", count=REPLAY_PAGE)
    recording = bool(raw) and await _recording(client)
    entries = entry_filter.select([entry for entry_id, fields in raw
                                   if (entry := Entry.decode(entry_id, fields, recording))])
    return Page(entries, raw[-1][0].decode() if raw else after_id, len(raw) < REPLAY_PAGE)


async def _recording(client: redis.asyncio.Redis) -> bool:
    return bool(await client.exists(streams.RECORDER_ALIVE))


def reconnect_message(reason: str, last_event_id: str | None) -> bytes:
    """The final event of a stream the api ends: why, and where to resume."""
    data = json.dumps({"reason": reason, "last_event_id": last_event_id})
    return ServerSentEvent(data, event=RECONNECT_EVENT, retry=RECONNECT_RETRY_MS).encode()
