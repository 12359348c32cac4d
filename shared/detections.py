"""Detections: every event's latest state (its start, replaced by its end), indexed by start time
(all of them, and per source and per label or category, so a filtered page reads only what it
shows),
for the events API and `soundhive up`'s view. The classifier writes them in the transaction that
writes the events; any number of readers get the same answer from Redis.

    write(pipe, event)                 the classifier, per event
    trim(client, keep)                 the classifier's chores: the newest `keep` stay
    page(client, query)                newest first, filtered, with an opaque cursor
    recent(client, count)              the newest, for a view
    ongoing(client)                    those still going on (a start without its end yet)
    latest_by_source(client)           each source's latest
"""

import base64
import json
from dataclasses import dataclass

import redis

from shared import streams
from shared.errors import UserError
from shared.messages import Event, MessageError

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


def write(pipe: redis.client.Pipeline, event: Event) -> None:
    pipe.hset(streams.DETECTIONS_HASH, event.id, event.encode())
    for index in _indexes(event):
        pipe.zadd(index, {event.id: event.start_time})
    if event.end is None:
        pipe.zadd(streams.DETECTIONS_ONGOING, {event.id: event.start_time})
        pipe.hset(streams.DETECTIONS_LATEST, event.source, event.id)  # starts come in order
    else:
        pipe.zrem(streams.DETECTIONS_ONGOING, event.id)


def _indexes(event: Event) -> list[str]:
    """Every index of a detection: all of them, its source's, its label's and categories'."""
    return [streams.DETECTIONS_INDEX, streams.detections_by_source(event.source),
            *map(streams.detections_by_label, event.names())]


def trim(client: redis.Redis, keep: int) -> int:
    """Forget all but the newest `keep` detections; returns how many went."""
    excess = client.zcard(streams.DETECTIONS_INDEX) - keep
    if excess <= 0:
        return 0
    ids = client.zrange(streams.DETECTIONS_INDEX, 0, excess - 1)
    events = [_decode(raw) for raw in client.hmget(streams.DETECTIONS_HASH, ids)]
    with client.pipeline(transaction=True) as pipe:
        pipe.zrem(streams.DETECTIONS_INDEX, *ids)
        pipe.zrem(streams.DETECTIONS_ONGOING, *ids)
        for event in events:
            for index in _indexes(event)[1:] if event else []:
                pipe.zrem(index, event.id)
        pipe.hdel(streams.DETECTIONS_HASH, *ids)
        pipe.execute()
    _forget_latest(client, [event for event in events if event])
    return len(ids)


def _forget_latest(client: redis.Redis, trimmed: list[Event]) -> None:
    """Sources whose latest detection was trimmed have none left."""
    sources = list({event.source for event in trimmed})
    latest = client.hmget(streams.DETECTIONS_LATEST, sources) if sources else []
    trimmed_ids = {event.id.encode() for event in trimmed}
    gone = [source for source, latest_id in zip(sources, latest, strict=True)
            if latest_id in trimmed_ids]
    if gone:
        client.hdel(streams.DETECTIONS_LATEST, *gone)


def page(client: redis.Redis, query: Query) -> tuple[list[Event], str | None]:
    """Up to query.limit detections, newest start first, and the cursor of the next page (None
    when there is no more)."""
    top, after_id = _decode_cursor(query.cursor) if query.cursor else (None, None)
    highest = min(x for x in (top, query.until, float("inf")) if x is not None)
    lowest = query.since if query.since is not None else float("-inf")
    found: list[Event] = []
    offset = 0
    index = (streams.detections_by_source(query.source) if query.source is not None
             else streams.detections_by_label(query.label) if query.label is not None
             else streams.DETECTIONS_INDEX)
    while len(found) < query.limit:
        batch = client.zrevrangebyscore(index, highest, lowest, start=offset,
                                        num=SCAN_BATCH, withscores=True)
        if not batch:
            return found, None
        offset += len(batch)
        raws = client.hmget(streams.DETECTIONS_HASH, [member for member, _ in batch])
        for (member, score), raw in zip(batch, raws, strict=True):
            if top is not None and score == top and member.decode() >= after_id:
                continue  # at or before the cursor among equal start times
            event = _decode(raw)
            if event is not None and query.matches(event):
                found.append(event)
                if len(found) == query.limit:
                    return found, _encode_cursor(score, member.decode())
    return found, None


def recent(client: redis.Redis, count: int) -> list[Event]:
    return page(client, Query(limit=count))[0]


def ongoing(client: redis.Redis) -> list[Event]:
    """The detections still going on, oldest start first."""
    ids = client.zrange(streams.DETECTIONS_ONGOING, 0, -1)
    found = map(_decode, client.hmget(streams.DETECTIONS_HASH, ids) if ids else [])
    return [event for event in found if event is not None]


def latest_by_source(client: redis.Redis) -> dict[str, Event]:
    """Each source's detection with the latest start (sources without one left out)."""
    ids = list(client.hgetall(streams.DETECTIONS_LATEST).values())
    found = map(_decode, client.hmget(streams.DETECTIONS_HASH, ids) if ids else [])
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
