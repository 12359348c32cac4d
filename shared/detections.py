"""Detections: every event's latest state (its start, replaced by its end), indexed by start time
(all of them, and per source and per label or category, so a filtered page reads only what it
shows),
for the events API and `soundhive up`'s view. The classifier writes them in the transaction that
writes the events; any number of readers get the same answer from Redis.

    write(writes, event, shard)        the classifier, per event (shared/writes.py)
    trim(client, keep, shard)          the classifier's chores: the newest `keep` stay
    page(where, query)                 newest first, filtered, with an opaque cursor
    recent(where, count)               the newest, for a view
    ongoing(where)                     those still going on (a start without its end yet)
    latest_by_source(where)            each source's latest

Each shard (shared/streams.py) keeps its sources' detections and indexes under its hash tag,
written in the classifier's transaction. Readers take `where`: a client (one shard: today's
keys) or a Topology (every shard, merged newest first; a cursor holds across shards, since
equal start times are ordered by id in every shard alike).
"""

import base64
import heapq
import json
from dataclasses import dataclass
from itertools import islice

import redis

from shared import streams
from shared.errors import UserError
from shared.messages import Event, MessageError
from shared.streams import Shard
from shared.topology import Topology
from shared.writes import Writes

Where = redis.Redis | Topology

SCAN_BATCH = 500


@dataclass(frozen=True)
class Query:
    source: str | None = None
    label: str | None = None
    since: float | None = None  # start_time >= since (unix seconds)
    until: float | None = None  # start_time <= until
    min_score: float | None = None
    limit: int = 50
    cursor: str | None = None
    text: str | None = None  # a part of the label or of a category, in any case

    def matches(self, event: Event) -> bool:
        return ((self.source is None or event.source == self.source)
                and (self.label is None or self.label in event.names())
                and (self.min_score is None or event.score >= self.min_score)
                and (self.text is None
                     or any(self.text.casefold() in name.casefold() for name in event.names())))


class CursorError(UserError, ValueError):
    """A cursor this module did not make (one-line message)."""


def write(writes: Writes, event: Event, shard: Shard = Shard()) -> None:
    writes.add("HSET", shard.key(streams.DETECTIONS_HASH), event.id, event.encode())
    for index in _indexes(event, shard):
        writes.add("ZADD", index, event.start_time, event.id)
    ongoing_key = shard.key(streams.DETECTIONS_ONGOING)
    if event.end is None:
        writes.add("ZADD", ongoing_key, event.start_time, event.id)
        # starts come in order
        writes.add("HSET", shard.key(streams.DETECTIONS_LATEST), event.source, event.id)
    else:
        writes.add("ZREM", ongoing_key, event.id)


def _indexes(event: Event, shard: Shard) -> list[str]:
    """Every index of a detection: all of them, its source's, its label's and categories'."""
    return [shard.key(name) for name in (
        streams.DETECTIONS_INDEX, streams.detections_by_source(event.source),
        *map(streams.detections_by_label, event.names()))]


def trim(client: redis.Redis, keep: int, shard: Shard = Shard()) -> int:
    """Forget all but the newest `keep` detections of a shard; returns how many went."""
    index, details = shard.key(streams.DETECTIONS_INDEX), shard.key(streams.DETECTIONS_HASH)
    excess = client.zcard(index) - keep
    if excess <= 0:
        return 0
    ids = client.zrange(index, 0, excess - 1)
    events = [_decode(raw) for raw in client.hmget(details, ids)]
    with client.pipeline(transaction=True) as pipe:
        pipe.zrem(index, *ids)
        pipe.zrem(shard.key(streams.DETECTIONS_ONGOING), *ids)
        for event in events:
            for source_or_label in _indexes(event, shard)[1:] if event else []:
                pipe.zrem(source_or_label, event.id)
        pipe.hdel(details, *ids)
        pipe.execute()
    _forget_latest(client, [event for event in events if event], shard)
    return len(ids)


def _forget_latest(client: redis.Redis, trimmed: list[Event], shard: Shard) -> None:
    """Sources whose latest detection was trimmed have none left."""
    sources = list({event.source for event in trimmed})
    latest_key = shard.key(streams.DETECTIONS_LATEST)
    latest = client.hmget(latest_key, sources) if sources else []
    trimmed_ids = {event.id.encode() for event in trimmed}
    gone = [source for source, latest_id in zip(sources, latest, strict=True)
            if latest_id in trimmed_ids]
    if gone:
        client.hdel(latest_key, *gone)


def places(where: Where) -> list[tuple[redis.Redis, Shard]]:
    """Each shard to read and its client."""
    if isinstance(where, Topology):
        return [(where.client(shard), shard) for shard in where.every]
    return [(where, Shard())]


def find(where: Where, event_id: str) -> Event | None:
    """An event's latest state, from whichever shard has it; None when there is no such
    detection (or it was trimmed)."""
    for client, shard in places(where):
        if (raw := client.hget(shard.key(streams.DETECTIONS_HASH), event_id)) is not None:
            return _decode(raw)
    return None


def page(where: Where, query: Query) -> tuple[list[Event], str | None]:
    """Up to query.limit detections, newest start first (of every shard, merged), and the
    cursor of the next page (None when there is no more)."""
    pages = [_page(client, shard, query) for client, shard in places(where)]
    if len(pages) == 1:
        return pages[0][0], pages[0][1]
    merged = heapq.merge(*(found for found, _ in pages), reverse=True,
                         key=lambda event: (event.start_time, event.id))
    found = list(islice(merged, query.limit))
    left = sum(len(events) for events, _ in pages) > len(found)
    more = left or (len(found) == query.limit and any(cursor for _, cursor in pages))
    return found, _encode_cursor(found[-1].start_time, found[-1].id) if more else None


def _page(client: redis.Redis, shard: Shard, query: Query) -> tuple[list[Event], str | None]:
    """page() in one shard."""
    top, after_id = _decode_cursor(query.cursor) if query.cursor else (None, None)
    highest = min(x for x in (top, query.until, float("inf")) if x is not None)
    lowest = query.since if query.since is not None else float("-inf")
    found: list[Event] = []
    offset = 0
    index = shard.key(streams.detections_by_source(query.source) if query.source is not None
                      else streams.detections_by_label(query.label) if query.label is not None
                      else streams.DETECTIONS_INDEX)
    details = shard.key(streams.DETECTIONS_HASH)
    while len(found) < query.limit:
        batch = client.zrevrangebyscore(index, highest, lowest, start=offset,
                                        num=SCAN_BATCH, withscores=True)
        if not batch:
            return found, None
        offset += len(batch)
        raws = client.hmget(details, [member for member, _ in batch])
        for (member, score), raw in zip(batch, raws, strict=True):
            if top is not None and score == top and member.decode() >= after_id:
                continue  # at or before the cursor among equal start times
            event = _decode(raw)
            if event is not None and query.matches(event):
                found.append(event)
                if len(found) == query.limit:
                    return found, _encode_cursor(score, member.decode())
    return found, None


def recent(where: Where, count: int) -> list[Event]:
    return page(where, Query(limit=count))[0]


def ongoing(where: Where) -> list[Event]:
    """The detections still going on, oldest start first."""
    found = []
    for client, shard in places(where):
        ids = client.zrange(shard.key(streams.DETECTIONS_ONGOING), 0, -1)
        found += map(_decode, client.hmget(shard.key(streams.DETECTIONS_HASH), ids) if ids
                     else [])
    return sorted((event for event in found if event is not None),
                  key=lambda event: (event.start_time, event.id))


def latest_by_source(where: Where) -> dict[str, Event]:
    """Each source's detection with the latest start (sources without one left out)."""
    found = []
    for client, shard in places(where):
        ids = list(client.hgetall(shard.key(streams.DETECTIONS_LATEST)).values())
        found += map(_decode, client.hmget(shard.key(streams.DETECTIONS_HASH), ids) if ids
                     else [])
    return {event.source: event for event in found if event is not None}


def _decode(raw: bytes | None) -> Event | None:
    if raw is None:  # trimmed meanwhile
        return None
    try:
        return Event.decode(raw)
    except MessageError:
        return None


def _encode_cursor(score: float, member: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([score, member]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        score, member = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(score), str(member)
    except (ValueError, TypeError) as exc:
        raise CursorError(f"not a cursor from this API: {cursor!r}") from exc
