"""GET /events/stream at scale, against the real api process (uvicorn) and a real redis-server:
one reader fans out to hundreds of clients, a slow client is dropped with a `reconnect` event,
Last-Event-ID resumes exactly across the replay and the live fan-out, Redis outages and pool
exhaustion are waited out or answered 503, never 500."""

import asyncio
import contextlib
import json
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from pipeline_helpers import RedisServer, Services, start_api, wait_for

from services.api.broadcast import RECONNECT_EVENT, REPLAY_PAGE
from services.api.routers import stream
from shared import bus, streams
from shared.messages import Event

WAIT_S = 60
LABELS = ["Bark", "Speech", "Siren"]
CATEGORIES = {"Bark": ["Dog", "Domestic animals, pets", "Animal"], "Speech": ["Human voice"],
              "Siren": ["Alarm"]}


def publish(client: redis.Redis, first: int, count: int, padding: int = 0) -> list[str]:
    """`count` events (sources mic0..mic2, labels in turn) written as the classifier writes
    them; their stream ids. `padding` lengthens each event's model name (bytes to send)."""
    with client.pipeline(transaction=False) as pipe:
        for n in range(first, first + count):
            label = LABELS[n % 3]
            bus.publish(pipe, streams.EVENTS_STREAM, Event(
                f"mic{n % 3}/{label}/{n}", f"mic{n % 3}", label, "start", 0.9, float(n), None,
                1.7e9 + n, None, "yamnet" + "-" * padding, CATEGORIES[label]))
        return [entry_id.decode() for entry_id in pipe.execute()]


def stream_ids(client: redis.Redis) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(streams.EVENTS_STREAM)]


def gauge(url: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", httpx.get(f"{url}/metrics").text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def parse(lines: list[str]) -> list[dict[str, str]]:
    """The SSE messages of a stream's lines (comments, such as pings, left out)."""
    messages, fields = [], {}
    for line in lines:
        if not line:
            if "data" in fields:
                messages.append(fields)
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return messages


class Listener:
    """An SSE client on a thread that keeps every message it receives."""

    def __init__(self, url: str, params: dict | None = None, headers: dict | None = None):
        self.lines: list[str] = []
        self.ended = threading.Event()
        self._opened = threading.Event()
        threading.Thread(target=self._run, args=(url, params, headers), daemon=True).start()
        assert self._opened.wait(WAIT_S)

    def _run(self, url: str, params: dict | None, headers: dict | None) -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream(  # the api stops at the end
                "GET", f"{url}/events/stream", params=params, headers=headers,
                timeout=None) as answer:
            assert answer.status_code == 200
            self._opened.set()
            for line in answer.iter_lines():
                self.lines.append(line)
        self.ended.set()

    def ids(self) -> list[str]:
        return [m["id"] for m in parse(list(self.lines)) if "id" in m]


async def _receive(client: httpx.AsyncClient, url: str, params: dict, expected: int
                   ) -> list[str]:
    """One async SSE client: the ids of its first `expected` events."""
    ids: list[str] = []
    async with client.stream("GET", f"{url}/events/stream", params=params) as answer:
        assert answer.status_code == 200
        async for line in answer.aiter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
                if len(ids) == expected:
                    return ids
    return ids


def test_hundreds_of_clients_each_receive_every_event_they_asked_for(
        services: Services, redis_server: RedisServer):
    url = start_api(services)
    client = redis_server.client()
    count = 30
    # mic1: the events n % 3 == 1; Animal, a category of Bark: n % 3 == 0
    filters = [({}, range(count)), ({"source": "mic1"}, range(1, count, 3)),
               ({"label": "Animal"}, range(0, count, 3))]
    clients_per_filter = 100

    async def run() -> list[list[str]]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(limits=limits, timeout=WAIT_S) as http:
            tasks = [asyncio.create_task(_receive(http, url, params, len(wanted)))
                     for params, wanted in filters for _ in range(clients_per_filter)]
            while gauge(url, "soundhive_api_sse_clients") < len(tasks):
                await asyncio.sleep(0.2)
            await asyncio.to_thread(publish, client, 0, count)
            return await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)

    received = asyncio.run(run())
    every = stream_ids(client)
    for n, ids in enumerate(received):
        wanted = filters[n // clients_per_filter][1]
        assert ids == [every[i] for i in wanted], f"client {n}"


def slow_client(url: str) -> socket.socket:
    """A stream whose reader has stopped reading: a small receive buffer, headers read."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /events/stream HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                 .encode())
    assert sock.recv(12).startswith(b"HTTP/1.1 200")
    return sock


def read_to_end(sock: socket.socket) -> list[str]:
    """The lines of the stream's body, once the api has ended it."""
    sock.settimeout(WAIT_S)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    body, rest = b"", data.partition(b"\r\n\r\n")[2]  # after the headers: chunks
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        body, rest = body + rest[:int(size, 16)], rest[int(size, 16) + 2:]
    return body.decode().split("\r\n")


def test_a_slow_client_is_dropped_with_a_reconnect_event_while_others_keep_up(
        services: Services, redis_server: RedisServer):
    url = start_api(services, SOUNDHIVE_API_SSE_QUEUE="50")
    client = redis_server.client()
    fast = [Listener(url) for _ in range(2)]
    slow = slow_client(url)
    published = 0
    while gauge(url, "soundhive_api_sse_dropped_total") < 1:  # until the kernel's buffers fill
        assert published < 20_000, "the slow client was never dropped"
        publish(client, published, 500, padding=1500)
        published += 500
        time.sleep(0.2)
    publish(client, published, 10)  # the others go on receiving
    every = stream_ids(client)
    for listener in fast:
        wait_for(lambda listener=listener: len(listener.ids()) == len(every), WAIT_S,
                 "a fast client's events")
        assert listener.ids() == every and not listener.ended.is_set()
    *events, last = parse(read_to_end(slow))
    assert last["event"] == RECONNECT_EVENT and "retry" in last
    got = [m["id"] for m in events]
    assert 0 < len(got) < len(every) and got == every[:len(got)]  # in order, nothing skipped
    assert json.loads(last["data"])["last_event_id"] == got[-1]
    assert "too slow" in json.loads(last["data"])["reason"]
    wait_for(lambda: gauge(url, "soundhive_api_sse_clients") == 2, WAIT_S, "the slow client gone")


def test_last_event_id_resumes_exactly_across_replay_and_live_events(
        services: Services, redis_server: RedisServer):
    url = start_api(services)
    client = redis_server.client()
    backlog = publish(client, 0, 3 * REPLAY_PAGE + 7)  # several replay pages
    live = 1500

    def write_live() -> None:  # events go on arriving while clients replay and join the fan-out
        for first in range(len(backlog), len(backlog) + live, 10):
            publish(client, first, 10)
            time.sleep(0.005)

    writer = threading.Thread(target=write_live)
    writer.start()
    resumes = [(n, params) for n in (0, 99, 1200, len(backlog) - 1)
               for params in ({}, {"label": "Speech"})]
    listeners = [Listener(url, params, {"Last-Event-ID": backlog[n]}) for n, params in resumes]
    writer.join()
    every = stream_ids(client)
    assert len(every) == len(backlog) + live
    for (after, params), listener in zip(resumes, listeners, strict=True):
        # Speech: the events n % 3 == 1
        expected = [every[n] for n in range(after + 1, len(every)) if not params or n % 3 == 1]
        wait_for(lambda listener=listener, n=len(expected): len(listener.ids()) >= n, WAIT_S,
                 f"the events after #{after}")
        time.sleep(0.3)  # a duplicate would arrive by now
        assert listener.ids() == expected, (after, params)


def test_clients_stay_connected_through_a_redis_restart(
        services: Services, redis_server: RedisServer):
    url = start_api(services)
    listener = Listener(url)
    before = publish(redis_server.client(), 0, 2)
    wait_for(lambda: listener.ids() == before, WAIT_S, "events before the restart")
    redis_server.stop()
    time.sleep(2)  # the reader fails and backs off; the client stays connected
    redis_server.start()  # empty (no persistence): new ids still come after the reader's last
    after = publish(redis_server.client(), 2, 5)
    wait_for(lambda: listener.ids() == before + after, WAIT_S, "events after the restart")
    assert not listener.ended.is_set()
    assert gauge(url, 'soundhive_redis_errors_total{kind="unreachable",worker="api"}') > 0


@pytest.mark.timeout(120)
def test_no_free_redis_connection_is_503_with_retry_after(
        services: Services, redis_server: RedisServer):
    url = start_api(services, SOUNDHIVE_API_REDIS_MAX_CONNECTIONS="2")
    client = redis_server.client()
    publish(client, 0, 3)
    first = stream_ids(client)[0]
    client.execute_command("CLIENT", "PAUSE", "9000", "ALL")  # every command waits: pools fill

    def get(path: str, headers: dict | None) -> tuple[str, int, str | None, str]:
        with httpx.stream("GET", f"{url}{path}", headers=headers, timeout=30) as answer:
            streaming = answer.status_code == 200 and path.endswith("stream")
            body = "" if streaming else answer.read().decode()
            return path, answer.status_code, answer.headers.get("retry-after"), body

    requests = [("/events", None)] * 5 + [("/events/stream", {"Last-Event-ID": first})] * 3
    with ThreadPoolExecutor(len(requests)) as pool:  # all at once
        answers = list(pool.map(lambda request: get(*request), requests))
    refused = [answer for answer in answers if answer[1] == 503]
    assert {code for _, code, _, _ in answers} == {200, 503}
    # 3 of the 5 /events (2 connections); 1 or 2 of the streams (the reader may hold one)
    assert {path for path, _, _, _ in refused} == {"/events", "/events/stream"}
    assert len(refused) >= 4
    for _, _, retry_after, body in refused:
        assert retry_after == "1" and "retry shortly" in json.loads(body)["detail"]


def test_heartbeats_keep_an_idle_stream_alive_and_stopping_the_api_ends_it_with_reconnect(
        services: Services, redis_server: RedisServer):
    url = start_api(services)
    api = services.processes[-1][0]
    listener = Listener(url)
    sent = publish(redis_server.client(), 0, 2)
    wait_for(lambda: listener.ids() == sent, WAIT_S, "the events")
    wait_for(lambda: any(line.startswith(":") for line in list(listener.lines)),
             stream.SSE_PING_S + 10, "a heartbeat")
    api.send_signal(signal.SIGTERM)
    api.wait(10)  # it does not wait for the open stream to end by itself
    assert listener.ended.wait(WAIT_S)
    last = parse(list(listener.lines))[-1]
    assert last["event"] == RECONNECT_EVENT
    assert json.loads(last["data"]) == {"reason": "the api is stopping",
                                        "last_event_id": sent[-1]}


def test_a_last_event_id_beyond_the_stream_resumes_at_its_end(
        services: Services, redis_server: RedisServer):
    """An id from a Redis that has since lost its data (or a forged one) is later than every
    entry: the client gets what comes next, not silence forever."""
    url = start_api(services)
    client = redis_server.client()
    publish(client, 0, 5)
    listener = Listener(url, headers={"Last-Event-ID": "99999999999999-0"})
    fresh = publish(client, 5, 3)
    wait_for(lambda: len(listener.ids()) >= 3, WAIT_S, "the events after the resume")
    assert listener.ids() == fresh
