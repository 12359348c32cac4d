"""What the pipeline says about its sources right now: capture's status of each source with the
classifier's latest prediction for it (level, top labels), its recent levels, its detections
going on and its latest one. Read by the api and `soundhive up`; the classifier writes the
predictions and levels with record().

    record(writes, predictions)   the classifier, per batch: latest predictions, level history
    read_sources(where)           every source's view, in a few round trips whatever their number
    select(views, query)          a filtered, sorted page of them, and how many matched
    summary(views)                counts by state, silent sources, detections going on
    levels(where, source)         a source's recent levels, oldest first

`where`: a client (one shard: today's keys) or a Topology (every shard; shared/detections.py).
"""

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from shared import detections, streams
from shared.messages import Event, MessageError, Prediction, SourceStatus
from shared.writes import Writes

SILENCE_DBFS = -100.0
# A running source quieter than this is "silent": a muted, unplugged or dead microphone.
SILENT_DBFS = -60.0
# Levels kept per source: about five minutes at one chunk per 1.45 s.
LEVEL_HISTORY = 200
LEVELS_TTL_S = 3600  # the history of a source gone quiet for an hour goes
STATES = ("failed", "retrying", "running", "finished")  # capture's, in the order sorted by


@dataclass(frozen=True)
class SourceView:
    status: SourceStatus
    latest: Prediction | None
    ongoing: int = 0  # its detections going on
    last_event: Event | None = None  # its detection with the latest start

    @property
    def rms(self) -> float:
        return self.latest.rms if self.latest else self.status.rms

    @property
    def dbfs(self) -> float:
        return dbfs(self.rms)

    @property
    def silent(self) -> bool:
        return self.status.state == "running" and self.dbfs < SILENT_DBFS

    @property
    def top_score(self) -> float:
        return self.latest.labels[0][1] if self.latest and self.latest.labels else 0.0


SORTS = {
    "source": lambda view: view.status.source,
    "state": lambda view: (STATES.index(view.status.state) if view.status.state in STATES
                           else len(STATES), view.silent),
    "level": lambda view: view.rms,
    "score": lambda view: view.top_score,
    "last_event": lambda view: view.last_event.start_time if view.last_event else -math.inf,
}
SORT_KEYS = tuple(SORTS)


@dataclass(frozen=True)
class SourceQuery:
    search: str = ""  # a part of the source's id, any case
    state: str | None = None  # one of STATES, or "silent"
    ongoing: bool | None = None  # True: with a detection going on; False: without
    sort: str = "source"  # one of SORT_KEYS
    descending: bool = False
    offset: int = 0
    limit: int | None = None  # None: all

    def matches(self, view: SourceView) -> bool:
        return (self.search.casefold() in view.status.source.casefold()
                and (self.state is None or (view.silent if self.state == "silent"
                                            else view.status.state == self.state))
                and (self.ongoing is None or (view.ongoing > 0) == self.ongoing))


def dbfs(rms: float) -> float:
    """RMS (full scale 1.0) in dB relative to full scale, floored at SILENCE_DBFS."""
    return round(max(SILENCE_DBFS, 20 * math.log10(rms)) if rms > 0 else SILENCE_DBFS, 1)


# Each source's LPUSH (the newest first), LTRIM and EXPIRE, for every source of a batch in one
# command: three commands a source cost the classifier more CPU than the rest of its writes.
# ARGV: LEVEL_HISTORY, LEVELS_TTL_S, then for each key its number of entries and the entries.
def record(writes: Writes, predictions: Sequence[Prediction],
           shard: streams.Shard = streams.Shard()) -> None:
    """Sources' latest predictions, and their levels in each source's history (in its shard),
    from predictions in each source's order."""
    if not predictions:
        return
    writes.add("HSET", shard.key(streams.LATEST_PREDICTIONS),  # each source's last
               *(field for p in predictions for field in (p.source, p.encode())))
    levels: dict[str, list[str]] = defaultdict(list)
    for prediction in predictions:
        levels[prediction.source].append(f"{prediction.written_at:.3f} {prediction.rms:.6g}")
    for source, entries in levels.items():
        key = shard.key(streams.source_levels(source))
        writes.add("LPUSH", key, *entries)
        writes.add("LTRIM", key, 0, LEVEL_HISTORY - 1)
        writes.add("EXPIRE", key, LEVELS_TTL_S)


def read_sources(where: detections.Where) -> list[SourceView]:
    """Every source capture reported, sorted by id (six round trips per shard whatever their
    number)."""
    places = detections.places(where)
    statuses = _decode_all(places[0][0].hgetall(streams.SOURCES_HASH), SourceStatus)
    latest = {}
    for client, shard in places:
        latest.update(_decode_all(client.hgetall(shard.key(streams.LATEST_PREDICTIONS)),
                                  Prediction))
    ongoing = Counter(event.source for event in detections.ongoing(where))
    names = sorted(statuses)
    last = detections.latest_by_source(where)
    return [SourceView(statuses[name], latest.get(name), ongoing[name], last.get(name))
            for name in names]


def select(views: list[SourceView], query: SourceQuery) -> tuple[list[SourceView], int]:
    """The page of `views` that `query` asks for, and how many matched in all."""
    matched = [view for view in views if query.matches(view)]
    matched.sort(key=lambda view: view.status.source)  # ties keep the id order
    matched.sort(key=SORTS[query.sort], reverse=query.descending)
    end = None if query.limit is None else query.offset + query.limit
    return matched[query.offset:end], len(matched)


def summary(views: list[SourceView]) -> dict:
    """How many sources there are, by capture state; how many are silent; how many have a
    detection going on, and how many detections go on."""
    states = Counter(view.status.state for view in views)
    return {"sources": len(views), "states": {state: states[state] for state in STATES},
            "silent": sum(view.silent for view in views),
            "with_ongoing": sum(view.ongoing > 0 for view in views),
            "ongoing": sum(view.ongoing for view in views)}


def levels(where: detections.Where, source: str) -> list[tuple[float, float]]:
    """(unix time, dBFS) of a source's recent chunks, oldest first."""
    places = detections.places(where)
    client, shard = places[streams.shard_of(source, len(places))]
    found = []
    for raw in reversed(client.lrange(shard.key(streams.source_levels(source)), 0, -1)):
        t, rms = map(float, raw.split())
        found.append((t, dbfs(rms)))
    return found


def _decode_all(raws: dict[bytes, bytes], schema: type) -> dict:
    decoded = {}
    for key, raw in raws.items():
        try:
            decoded[key.decode()] = schema.decode(raw)
        except MessageError:
            continue
    return decoded
