"""One Redis reader per shard of the events stream, per api process, fans the events out to every
live-stream client.

Each reader (Broadcaster.running, entered by the app's lifespan) XREADs its shard's events
stream (shared/streams.py; one shard: streams.EVENTS_STREAM itself), decodes each entry and
formats its SSE message once, and offers the read to every subscription at once, as soon as
XREAD returns: the bytes of what a read holds for a filter are joined once for every
subscription with that filter (Batch). A subscription queues at most `queue_size` entries: a
client that falls further behind is dropped (its queue freed at once, counted in
soundhive_api_sse_dropped_total) and gets a final `reconnect` event; reconnecting with
Last-Event-ID, it misses nothing the stream still holds. A client whose previous write has not
gone out yet when more arrives gets them all in its next write: under load the writes coalesce
by themselves. Redis trouble: the reader waits it out with backoff and resumes after the last
entry it read; the clients stay connected meanwhile. Every SSE_PING_S a heartbeat wakes every
subscription (one timer for all); when the api stops, every subscription ends with a
`reconnect` event.

A client resuming with Last-Event-ID replays what it missed from the stream in bounded pages
(`replay`, on the request's pooled connection, one XRANGE at a time). Its first page is read
before its response starts (no Redis connection free: 503); then it subscribes and reads pages
until one comes back short. That page was read after the subscription began (and after the
reader started), so it reaches at least the reader's position then, and every later entry
comes live. Live entries at or before
the last replayed one are skipped (routers/stream.py): stream ids are monotonic, so no entry
is sent twice or skipped.

Shards. An event's SSE id is the position of every shard's reader when it went out, comma-
separated in shard order, its own shard's at the event itself: with one shard, the stream id
alone. Everything before those positions went out before it, so a resume replays each shard
after its position (one shard after another, each up to a short page) and skips the live
entries at or before where each shard's replay ended.
"""

import asyncio
import json
import re
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
REPLAY_PAGE = 500  # entries per XRANGE of a resuming client
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

Position = tuple[int, int]  # a stream id as numbers, ordered as Redis orders ids
Reader = tuple[redis.asyncio.Redis, str]  # a shard's events stream and the client of its Redis


def position(entry_id: str) -> Position:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def event_id(positions: list[str]) -> str:
    """The SSE id of an event sent when the shards' readers were at `positions`."""
    return ",".join(positions)


@dataclass(frozen=True, slots=True)
class Entry:
    """One event of the stream, ready to send: its SSE message is formatted once for all."""

    id: str  # its SSE id (event_id)
    shard: int
    position: Position  # in its shard's stream
    source: str
    names: frozenset[str]  # what a label filter matches: the label and its categories
    message: bytes

    @classmethod
    def decode(cls, fields: dict[bytes, bytes], shard: int, positions: list[str],
               recording: bool) -> "Entry | None":
        """The entry of `shard` at positions[shard], sent when the shards were at `positions`,
        or None for one that holds no event this version can read; while a recorder runs
        (`recording`), an end carries its clip's links."""
        try:
            event = Event.decode(fields[streams.MESSAGE_FIELD])
        except (MessageError, KeyError):
            return None
        sse_id = event_id(positions)
        data = event.fields() | clips.announced(event, recording)
        message = ServerSentEvent(json.dumps(data), event=event.kind, id=sse_id)
        return cls(sse_id, shard, position(positions[shard]), event.source,
                   frozenset(event.names()), message.encode())


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


@dataclass(frozen=True, slots=True)
class Batch:
    """Entries to send together and their SSE messages joined (one write's bytes)."""

    entries: list[Entry]
    message: bytes

    @classmethod
    def of(cls, entries: list[Entry]) -> "Batch":
        return cls(entries, b"".join(entry.message for entry in entries))

    @classmethod
    def joined(cls, batches: list["Batch"]) -> "Batch":
        if len(batches) == 1:
            return batches[0]
        return cls([entry for batch in batches for entry in batch.entries],
                   b"".join(batch.message for batch in batches))


class Ended(Exception):
    """The api ends this client's stream: the reason (the client should reconnect)."""


class Subscription:
    """One client's bounded queue of live entries that pass its filter."""

    def __init__(self, entry_filter: Filter, queue_size: int):
        self.filter = entry_filter
        self.size = queue_size
        self.ended: str | None = None  # why the api ends the stream
        self._batches: list[Batch] = []
        self._queued = 0  # entries in _batches
        self._heartbeat = False
        self._wakeup: asyncio.Future[None] | None = None

    def offer(self, batch: Batch) -> bool:
        """Queue `batch` (its entries passed the filter); False (and the queue freed) when it
        would overflow the queue."""
        if self._queued + len(batch.entries) > self.size:
            self.end(f"too slow: more than {self.size} events behind")
            return False
        self._batches.append(batch)
        self._queued += len(batch.entries)
        self._wake()
        return True

    def beat(self) -> None:
        """A heartbeat is due (when nothing else is queued)."""
        self._heartbeat = True
        self._wake()

    def end(self, reason: str) -> None:
        self.ended = reason
        self._batches.clear()
        self._queued = 0
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def next_batch(self) -> Batch | None:
        """Every entry queued since the last call, once there is one, or None for a heartbeat;
        Ended when the api ends the stream."""
        while not (self._batches or self._heartbeat or self.ended):
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
        self._heartbeat = False
        if self.ended:
            raise Ended(self.ended)
        batches, self._batches, self._queued = self._batches, [], 0
        return Batch.joined(batches) if batches else None


class Broadcaster:
    """The api process's readers of the events stream's shards and its subscriptions."""

    def __init__(self, readers: list[Reader], queue_size: int, block_ms: int = 1000,
                 heartbeat_s: float = 15):
        self.readers = readers
        self._queue_size = queue_size
        self._block_ms = block_ms
        self._heartbeat_s = heartbeat_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscriptions: set[Subscription] = set()
        # Each shard's last entry read; None until the stream's end is known.
        self._cursors: list[str | None] = [None] * len(readers)
        self._ready = [asyncio.Event() for _ in readers]
        self.started = asyncio.Event()  # set once every reader knows where its stream ends

    def subscribe(self, entry_filter: Filter) -> Subscription:
        """A subscription to every entry read from now on; unsubscribe it when done."""
        subscription = Subscription(entry_filter, self._queue_size)
        self._subscriptions.add(subscription)
        metrics.SSE_CLIENTS.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        metrics.SSE_CLIENTS.dec()

    def stop_soon(self) -> None:
        """End every stream (with a `reconnect` event), soon; safe from a signal handler: the
        server waits for its open responses to end before it stops, and a live one never would.
        """
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._end_all, "the api is stopping")

    def _end_all(self, reason: str) -> None:
        for subscription in self._subscriptions:
            subscription.end(reason)
        self._subscriptions.clear()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The readers and the heartbeat run as tasks while in the context."""
        self._loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(self._read_forever(shard), name=f"events-reader-{shard}")
                 for shard in range(len(self.readers))]
        tasks.append(asyncio.create_task(self._beat_forever(), name="events-heartbeat"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task

    async def _read_forever(self, shard: int) -> None:
        weather = bus.Weather("api", metrics.Health())
        while True:
            try:
                entries = await self._read(shard)
            except redis.RedisError as exc:
                await asyncio.sleep(weather.hit(exc))
                continue
            weather.clear()
            if entries:
                self._fan_out(entries)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            for subscription in self._subscriptions:
                subscription.beat()

    async def _read(self, shard: int) -> list[Entry]:
        client, stream = self.readers[shard]
        if self._cursors[shard] is None:
            last = await client.xrevrange(stream, count=1)
            self._cursors[shard] = last[0][0].decode() if last else "0-0"
            self._ready[shard].set()
            if all(ready.is_set() for ready in self._ready):
                self.started.set()
        await self.started.wait()  # an event's id holds every shard's position
        # Never more at once than a queue holds: a client keeping up is never dropped.
        reply = await client.xread({stream: self._cursors[shard]},
                                   count=min(READ_COUNT, self._queue_size),
                                   block=self._block_ms)
        # From here to the fan-out nothing awaits: the positions are those the entries go out at.
        entries = []
        recording = bool(reply) and await _recording(self.readers)
        for entry_id, fields in reply[0][1] if reply else ():
            self._cursors[shard] = entry_id.decode()
            entry = Entry.decode(fields, shard, self._positions(), recording)
            if entry is not None:
                entries.append(entry)
        return entries

    def _positions(self) -> list[str]:
        return [cursor or "0-0" for cursor in self._cursors]

    def _fan_out(self, entries: list[Entry]) -> None:
        batches: dict[Filter, Batch] = {}  # what passes each filter, joined once
        dropped = []
        for subscription in self._subscriptions:
            batch = batches.get(subscription.filter)
            if batch is None:
                batch = batches[subscription.filter] = Batch.of(
                    subscription.filter.select(entries))
            if batch.entries and not subscription.offer(batch):
                dropped.append(subscription)
        for subscription in dropped:
            self._subscriptions.discard(subscription)
            metrics.SSE_DROPPED.inc()


@dataclass(frozen=True)
class Page:
    entries: list[Entry]  # those passing the filter
    positions: list[str]  # each shard's last entry read (the next page starts after them)
    shard: int  # the shard the next page reads
    complete: bool  # the last shard's page was short: it reached the end of every stream


def resume_from(last_event_id: str, shards: int) -> Page | None:
    """The (empty) page a resume after `last_event_id` starts from; None for an id that is
    not one of this stream's."""
    positions = last_event_id.split(",")
    if len(positions) != shards or not all(STREAM_ID.match(p) for p in positions):
        return None
    return Page([], positions, 0, False)


async def replay(readers: list[Reader], after: Page, entry_filter: Filter) -> Page:
    """One bounded page of the shard `after` reads next, after its position."""
    client, stream = readers[after.shard]
    positions = list(after.positions)
    raw = await client.xrange(stream, min=f"({positions[after.shard]}", count=REPLAY_PAGE)
    if not raw:  # an id from beyond the stream's end (a Redis that lost its data) resumes there
        positions[after.shard] = min(positions[after.shard], await _last_id(client, stream),
                                     key=position)
    recording = bool(raw) and await _recording(readers)
    entries = []
    for entry_id, fields in raw:
        positions[after.shard] = entry_id.decode()
        entry = Entry.decode(fields, after.shard, positions, recording)
        if entry is not None:
            entries.append(entry)
    short = len(raw) < REPLAY_PAGE
    last_shard = after.shard == len(readers) - 1
    return Page(entry_filter.select(entries), positions,
                after.shard + 1 if short and not last_shard else after.shard, short and last_shard)


async def _last_id(client: redis.asyncio.Redis, stream: str) -> str:
    """The id of the last entry ever added to `stream` ("0-0" while it does not exist)."""
    try:
        info = await client.xinfo_stream(stream)
    except redis.ResponseError:  # no such key
        return "0-0"
    last = info["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else last


async def _recording(readers: list[Reader]) -> bool:
    """Whether a recorder runs (a global key: on the first server, which holds those)."""
    client, _stream = readers[0]
    return bool(await client.exists(streams.RECORDER_ALIVE))


def reconnect_message(reason: str, last_event_id: str | None) -> bytes:
    """The final event of a stream the api ends: why, and where to resume."""
    data = json.dumps({"reason": reason, "last_event_id": last_event_id})
    return ServerSentEvent(data, event=RECONNECT_EVENT, retry=RECONNECT_RETRY_MS).encode()
