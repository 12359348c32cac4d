"""Detections (shared/detections.py) on a real Redis: an end replaces its start, newest first,
filters, cursor pages that neither skip nor repeat (equal start times included), trimming."""

import pytest

from shared import detections, streams
from shared.messages import Event
from shared.writes import Writes


def event(n: int, kind: str = "start", source: str = "a", label: str = "Dog",
          start_time: float | None = None, score: float = 0.5) -> Event:
    start_time = 1000.0 + n if start_time is None else start_time
    end = None if kind == "start" else n + 1.0
    end_time = None if kind == "start" else start_time + 1.0
    return Event(f"{source}/{label}/{n}", source, label, kind, score, float(n), end, start_time,
                 end_time, "yamnet")


def store(client, *events: Event) -> None:
    writes = Writes()
    for e in events:
        detections.write(writes, e)
    with client.pipeline() as pipe:
        writes.queue(pipe)
        pipe.execute()


def test_an_end_replaces_its_start_and_pages_cover_everything_once(redis_server):
    client = redis_server.client()
    store(client, *[event(n) for n in range(30)])
    store(client, *[event(n, start_time=1005.0, source="b") for n in range(30, 40)])  # ties
    store(client, event(3, "end"))
    seen, cursor = [], None
    while True:
        found, cursor = detections.page(client, detections.Query(limit=7, cursor=cursor))
        seen += found
        if cursor is None:
            break
    assert len(seen) == 40 and len({e.id for e in seen}) == 40
    assert [e.start_time for e in seen] == sorted((e.start_time for e in seen), reverse=True)
    assert next(e for e in seen if e.id == "a/Dog/3").kind == "end"


def test_filters(redis_server):
    client = redis_server.client()
    store(client, *[event(n, source="ab"[n % 2], label=["Dog", "Cat", "Cow"][n % 3],
                          score=n / 20) for n in range(20)])
    query = detections.Query(source="a", label="Dog", since=1003, until=1015, min_score=0.4)
    found, cursor = detections.page(client, query)
    assert [e.id for e in found] == ["a/Dog/12"]  # even, a multiple of 3, 3..15, 8 and up
    assert cursor is None


def test_trim_keeps_the_newest_and_bad_cursors_are_refused(redis_server):
    client = redis_server.client()
    store(client, *[event(n) for n in range(10)])
    assert detections.trim(client, 4) == 6
    newest = [f"a/Dog/{n}" for n in (9, 8, 7, 6)]
    assert [e.id for e in detections.recent(client, 100)] == newest
    for query in (detections.Query(source="a"), detections.Query(label="Dog")):
        assert [e.id for e in detections.page(client, query)[0]] == newest
    assert client.zcard(streams.detections_by_source("a")) == 4  # the indexes shrink too
    with pytest.raises(detections.CursorError):
        detections.page(client, detections.Query(cursor="nonsense"))


def test_ongoing_follows_starts_ends_and_trims(redis_server):
    client = redis_server.client()
    store(client, *[event(n, source="ab"[n % 2]) for n in range(6)])
    store(client, event(2, "end", source="a"), event(3, "end", source="b"))
    assert [e.id for e in detections.ongoing(client)] == ["a/Dog/0", "b/Dog/1", "a/Dog/4",
                                                          "b/Dog/5"]
    assert detections.trim(client, 3) == 3  # 0, 1 and 2 go
    assert [e.id for e in detections.ongoing(client)] == ["a/Dog/4", "b/Dog/5"]
    latest = detections.latest_by_source(client)
    assert {source: e.id for source, e in latest.items()} == {"a": "a/Dog/4", "b": "b/Dog/5"}
    assert detections.trim(client, 1) == 2  # a's last one goes: a has none
    assert {source: e.id for source, e in detections.latest_by_source(client).items()} == {
        "b": "b/Dog/5"}
