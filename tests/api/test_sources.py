"""GET /sources filtered, sorted and paged, /sources/summary and /sources/{source}/detail, for
many sources written as the pipeline writes them, served by the real api process."""

import math
import time
from urllib.parse import quote

import httpx
import pytest
from pipeline_helpers import RedisServer, Services, start_api
from source_fleet import rms_of, source_id, state_of, write_event, write_sources

from shared import status, streams
from shared.messages import SourceStatus

COUNT = 120


@pytest.fixture
def url(services: Services, redis_server: RedisServer) -> str:
    write_sources(redis_server.client(), COUNT)
    return start_api(services)


def get(url: str, path: str, **params: object) -> dict:
    answer = httpx.get(f"{url}{path}", params=params, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def ids(page: dict) -> list[str]:
    return [s["source"] for s in page["sources"]]


def test_without_a_query_every_source_by_id(url: str):
    page = get(url, "/sources")
    assert ids(page) == [source_id(i) for i in range(COUNT)] and page["total"] == COUNT
    first = page["sources"][0]
    assert set(first) == {"source", "state", "detail", "last_seen", "chunks", "level", "silent",
                          "labels", "ongoing", "last_event"}
    assert first["ongoing"] == 1 and first["last_event"]["end_time"] is None
    assert page["sources"][1]["ongoing"] == 0 and page["sources"][1]["last_event"]["end_time"]


def test_pages_filters_and_sorts(url: str):
    page = get(url, "/sources", offset=40, limit=20)
    assert ids(page) == [source_id(i) for i in range(40, 60)] and page["total"] == COUNT
    assert ids(get(url, "/sources", q="MIC-01")) == [source_id(i) for i in range(10, 20)]

    failed = get(url, "/sources", state="failed")
    assert failed["total"] == sum(state_of(i) == "failed" for i in range(COUNT)) > 0
    assert {s["state"] for s in failed["sources"]} == {"failed"}
    silent = get(url, "/sources", state="silent")
    expected = [source_id(i) for i in range(COUNT)
                if state_of(i) == "running" and rms_of(i) < 1e-3]
    assert ids(silent) == expected and all(s["level"]["dbfs"] < status.SILENT_DBFS
                                           for s in silent["sources"])
    ongoing = get(url, "/sources", ongoing="true", state="running", limit=5)
    assert ongoing["total"] == sum(i % 3 == 0 and state_of(i) == "running"
                                   for i in range(COUNT))
    assert all(s["ongoing"] == 1 and s["state"] == "running" for s in ongoing["sources"])
    assert get(url, "/sources", ongoing="false")["total"] == COUNT - math.ceil(COUNT / 3)

    loudest = get(url, "/sources", sort="level", order="desc")["sources"]
    levels = [s["level"]["rms"] for s in loudest]
    assert levels == sorted(levels, reverse=True) and levels[0] > levels[-1]
    latest = get(url, "/sources", sort="last_event", order="desc", limit=3)
    assert ids(latest) == [source_id(i) for i in (COUNT - 1, COUNT - 2, COUNT - 3)]
    by_state = [s["state"] for s in get(url, "/sources", sort="state")["sources"]]
    assert by_state == sorted(by_state, key=status.STATES.index)
    scores = [s["labels"][0]["score"] for s in get(url, "/sources", sort="score")["sources"]]
    assert scores == sorted(scores)

    for bad in ({"state": "asleep"}, {"sort": "colour"}, {"limit": 0}, {"offset": -1},
                {"order": "up"}):
        answer = httpx.get(f"{url}/sources", params=bad)
        assert answer.status_code == 422 and "detail" in answer.json(), bad


def test_summary_counts(url: str, redis_server: RedisServer):
    summary = get(url, "/sources/summary")
    states = [state_of(i) for i in range(COUNT)]
    assert summary == {
        "sources": COUNT,
        "states": {state: states.count(state) for state in status.STATES},
        "silent": sum(s == "running" and rms_of(i) < 1e-3 for i, s in enumerate(states)),
        "with_ongoing": math.ceil(COUNT / 3),
        "ongoing": math.ceil(COUNT / 3),
    }
    with redis_server.client().pipeline() as pipe:  # a second detection going on for mic-000
        write_event(pipe, source_id(0), "Siren", 2e9)
        pipe.execute()
    summary = get(url, "/sources/summary")
    assert (summary["with_ongoing"], summary["ongoing"]) == (math.ceil(COUNT / 3),
                                                            math.ceil(COUNT / 3) + 1)


def test_a_sources_detail(url: str, redis_server: RedisServer):
    detail = get(url, f"/sources/{source_id(7)}/detail")
    assert detail["source"]["source"] == source_id(7)
    times = [point["t"] for point in detail["levels"]]
    assert len(times) == 5 and times == sorted(times)  # oldest first
    assert detail["levels"][-1]["dbfs"] == status.dbfs(rms_of(7) * 1.4)
    assert [e["source"] for e in detail["events"]] == [source_id(7)]
    folder_file = "recordings/dog.mp3"  # a folder's file: its id has a slash
    redis_server.client().hset(streams.SOURCES_HASH, folder_file, SourceStatus(
        folder_file, "finished", "", 0.1, 5, time.time()).encode())
    detail = get(url, f"/sources/{quote(folder_file, safe='')}/detail")
    assert detail["source"]["source"] == folder_file and detail["levels"] == []
    answer = httpx.get(f"{url}/sources/nowhere/detail")
    assert answer.status_code == 404 and answer.json()["detail"] == "no source 'nowhere'"
