"""Events API speed against the real api process (uvicorn) and a real Redis, both started here on
free ports:

- GET /events latency (p50/p95/p99) over a large detection history (--history, --requests);
- GET /sources (the dashboard's pages) and /sources/summary over many sources (--sources);
- the events per second the SSE stream delivers to one client (--stream);
- fan-out: --clients concurrent SSE clients (asyncio sockets, spread over --client-processes
  processes) while events are published at --rate per second for --seconds: whether every
  client received every event in order (given up to DRAIN_S after the last one: on a loaded
  machine the tail takes seconds), the event -> client latency (from the entry's Redis
  stream id, which is Redis's clock in ms, to its arrival), the api's RSS and the CPU each
  process used.

    .venv/bin/python bench/api_speed.py [--history 100000] [--requests 300] [--stream 20000]
        [--sources 500] [--clients 1000] [--rate 50] [--seconds 30] [--client-processes 2]

A part whose count is 0 is skipped. Prints JSON. Events are written the way the classifier
writes them (events stream + detections), sources as capture and the classifier write them
(the tests' source_fleet.py).
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import machine
import numpy as np
import psutil
from machine import REPO

from services.api.service import allow_many_connections
from services.registry import SERVICES
from shared import bus, detections, streams
from shared.messages import Event
from shared.ports import free_port
from shared.writes import Writes
from soundhive.redis_process import RedisProcess, die_with_parent

sys.path.insert(0, str(REPO / "tests"))
from source_fleet import write_sources

EVENT_QUERIES = [{}, {"source": "mic7"}, {"label": "Siren", "min_score": 0.9}, {"limit": 200},
                 {"since": 1.7e9 + 50_000, "until": 1.7e9 + 60_000}]
# The dashboard's: a page, searched, one state, with an active event by latest, all of them.
SOURCE_QUERIES = [{"limit": 50}, {"limit": 50, "q": "mic-04"}, {"limit": 50, "state": "failed"},
                  {"limit": 50, "ongoing": "true", "sort": "last_event", "order": "desc"}, {}]
LABELS = ["Dog", "Speech", "Music", "Siren", "Glass", "Bark", "Cat", "Car"]


def event(n: int, kind: str = "end") -> Event:
    start_time = 1.7e9 + n
    return Event(f"mic{n % 400}/{LABELS[n % 8]}/{n}", f"mic{n % 400}", LABELS[n % 8], kind,
                 0.5 + (n % 50) / 100, float(n), None if kind == "start" else n + 2.0,
                 start_time, None if kind == "start" else start_time + 2, "yamnet")


def write(client, events: list[Event], per_script: int = 500) -> None:
    """As the classifier writes them (shared/writes.py), `per_script` events a script."""
    with client.pipeline(transaction=False) as pipe:
        for first in range(0, len(events), per_script):
            writes = Writes()
            for e in events[first:first + per_script]:
                writes.add(*bus.xadd(streams.EVENTS_STREAM, e, 1_000_000))
                detections.write(writes, e)
            writes.queue(pipe)
        pipe.execute()


def get_latency(url: str, requests: int, path: str = "/events",
                queries: list[dict] = EVENT_QUERIES) -> dict:
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(requests):
            started = time.perf_counter()
            answer = client.get(path, params=queries[i % len(queries)])
            times.append(time.perf_counter() - started)
            answer.raise_for_status()
    ms = np.array(times) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}


def sse_rate(url: str, client, count: int) -> dict:
    received = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{url}/events/stream", timeout=None) as answer:
            ready.set()
            for line in answer.iter_lines():
                if line.startswith("id:"):
                    received.append(time.perf_counter())
                    if len(received) == count:
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.5)
    started = time.perf_counter()
    for first in range(0, count, 1000):
        write(client, [event(10_000_000 + n, "start") for n in range(first, first + 1000)])
    thread.join(300)
    seconds = received[-1] - started if received else float("nan")
    return {"events": len(received), "seconds": round(seconds, 2),
            "events_per_s": round(len(received) / seconds) if received else 0}


STREAM_ID = re.compile(rb"^id: (\d+)-(\d+)\r?$", re.MULTILINE)
MAX_LATENCY_MS = 60_000
DRAIN_S = 30  # after the last event, the most the clients are given to receive every event


class SseCounter(asyncio.Protocol):
    """One SSE client on a raw socket (an HTTP client library would cost more CPU than the api):
    counts the ids it receives, checks their order, and adds each one's latency (arrival, from
    the ms of its stream id) to a histogram shared by the process. Chunked framing needs no
    decoding: every chunk holds whole SSE messages."""

    def __init__(self, request: bytes, histogram: np.ndarray, earliest: dict, delivered):
        self.request, self.histogram, self.earliest = request, histogram, earliest
        self.delivered = delivered  # the process's count, shared with the benchmark's
        self.status: bytes | None = None
        self.received, self.last, self.in_order = 0, (0, 0), True
        self.closed = asyncio.Event()
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now_ms = time.time() * 1000
        if self.status is None:
            self.status = data.split(b" ", 2)[1]
        data = self._tail + data
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        ids = STREAM_ID.findall(data, 0, cut)
        self.delivered.value += len(ids)
        for milliseconds, sequence in ids:
            position = int(milliseconds), int(sequence)
            self.in_order &= position > self.last
            self.last = position
            self.received += 1
            latency = now_ms - position[0]
            self.histogram[min(int(latency), MAX_LATENCY_MS)] += 1
            self.earliest[position] = min(latency, self.earliest.get(position, latency))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


def sse_clients(port: int, count: int, connected, stop, results, delivered) -> None:
    """A client process: `count` SSE clients until `stop`, then their figures on `results`;
    the events they received so far, all together, in `delivered`."""
    allow_many_connections()
    results.put(asyncio.run(_run_clients(port, count, connected, stop, delivered)))


async def _run_clients(port: int, count: int, connected, stop, delivered) -> dict:
    loop = asyncio.get_running_loop()
    histogram = np.zeros(MAX_LATENCY_MS + 1, np.int64)
    earliest: dict[tuple[int, int], float] = {}  # event -> its latency to the first client
    request = f"GET /events/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    clients = []
    for _ in range(count):
        _, client = await loop.create_connection(lambda: SseCounter(request, histogram, earliest,
                                                                    delivered),
                                                 "127.0.0.1", port)
        clients.append(client)
    while any(c.status is None for c in clients):
        await asyncio.sleep(0.05)
    connected.put(sorted({c.status.decode() for c in clients}))
    cpu_start = time.process_time()
    while not stop.is_set():
        await asyncio.sleep(0.1)
    return {"received": [c.received for c in clients], "in_order": all(c.in_order for c in clients),
            "closed": sum(c.closed.is_set() for c in clients), "histogram": histogram,
            "earliest": earliest,
            "cpu_s": time.process_time() - cpu_start}


def api_clients(url: str) -> int:
    text = httpx.get(f"{url}/metrics").text
    return int(float(re.search(r"^soundhive_api_sse_clients (\S+)$", text, re.MULTILINE)[1]))


def fan_out(url: str, port: int, client, processes: dict[str, psutil.Process], args) -> dict:
    """--clients SSE clients receiving events published at --rate/s for --seconds."""
    context = multiprocessing.get_context("spawn")
    connected, results, stop = context.Queue(), context.Queue(), context.Event()
    shares = np.array_split(np.arange(args.clients), args.client_processes)
    delivered = [context.RawValue("q", 0) for _ in shares]
    workers = [context.Process(target=sse_clients, args=(port, len(share), connected, stop,
                                                          results, count))
               for share, count in zip(shares, delivered, strict=True)]
    for worker in workers:
        worker.start()
    statuses = {s for _ in workers for s in connected.get(timeout=300)}
    assert statuses == {"200"}, statuses
    assert api_clients(url) == args.clients
    watched = {**processes, **{f"clients{i}": psutil.Process(w.pid)
                               for i, w in enumerate(workers)}}
    cpu_before = {name: sum(p.cpu_times()[:2]) for name, p in watched.items()}
    rss = []
    started = time.monotonic()
    published = 0
    for n in range(round(args.rate * args.seconds)):
        time.sleep(max(0.0, started + n / args.rate - time.monotonic()))
        write(client, [event(20_000_000 + n, "start")])
        published += 1
        if n % round(args.rate) == 0:
            rss.append(processes["api"].memory_info().rss)
    drained = time.monotonic() + DRAIN_S  # the last events' way to the clients
    while (sum(count.value for count in delivered) < published * args.clients
           and time.monotonic() < drained):
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    cpu = {name: round(100 * (sum(p.cpu_times()[:2]) - cpu_before[name]) / elapsed)
           for name, p in watched.items()}
    stop.set()
    figures = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
    received = np.concatenate([f["received"] for f in figures])
    histogram = sum(f["histogram"] for f in figures)
    earliest: dict = {}
    for f in figures:
        for position, latency in f["earliest"].items():
            earliest[position] = min(latency, earliest.get(position, latency))
    return {
        "clients": args.clients, "client_processes": args.client_processes,
        "published": published, "rate_per_s": args.rate,
        "clients_with_every_event": int((received == published).sum()),
        "fewest_received": int(received.min()), "in_order": all(f["in_order"] for f in figures),
        "streams_closed_early": sum(f["closed"] for f in figures),
        "latency_ms": {f"p{q}": _percentile(histogram, q) for q in (50, 95, 99, 100)},
        "first_client_latency_ms": {f"p{q}": round(float(np.percentile(list(earliest.values()),
                                                                        q))) for q in (50, 95)},
        "api_rss_mb": {"max": round(max(rss) / 2**20), "end": round(rss[-1] / 2**20)},
        "cpu_percent_of_a_core": cpu,
        "api_cpu_us_per_delivery": round(cpu["api"] * elapsed * 1e4 / received.sum(), 1),
        "load_average_1min": os.getloadavg()[0],
    }


def _percentile(histogram: np.ndarray, q: float) -> int:
    """The q-th percentile of a histogram of whole milliseconds."""
    cumulative = np.cumsum(histogram)
    return int(np.searchsorted(cumulative, cumulative[-1] * q / 100))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=100_000,
                        help="detections in the history GET /events reads (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=300,
                        help="GET requests timed per query (default: %(default)s)")
    parser.add_argument("--stream", type=int, default=20_000,
                        help="events sent through SSE to one client (default: %(default)s)")
    parser.add_argument("--sources", type=int, default=500,
                        help="sources listed by GET /sources and /sources/summary "
                             "(default: %(default)s)")
    parser.add_argument("--clients", type=int, default=1000,
                        help="concurrent SSE clients in the fan-out part (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=50,
                        help="events published per second during fan-out (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=30,
                        help="how long the fan-out publishes (default: %(default)s)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="processes the SSE clients are spread over (default: %(default)s)")
    args = parser.parse_args()
    result: dict = {"machine": machine.describe(),
                    "command": {"argv": sys.argv[1:], "commit": machine.git_commit()}}
    with tempfile.TemporaryDirectory(prefix="soundhive-api-bench-") as tmp:
        server = RedisProcess(Path(tmp), port=free_port())
        server.start()
        port = free_port()
        api = SERVICES["api"].launch(
            dict(os.environ), {"redis_url": server.url, "port": port, "host": "127.0.0.1"},
            cwd=REPO, preexec_fn=die_with_parent, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            client = server.client()
            url = f"http://127.0.0.1:{port}"
            while True:
                try:
                    if httpx.get(f"{url}/healthz").is_success:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            if args.clients:
                processes = {"api": psutil.Process(api.pid),
                             "redis": psutil.Process(server.process.pid)}
                result["fan_out"] = fan_out(url, port, client, processes, args)
            if args.history:
                for first in range(0, args.history, 5000):
                    write(client, [event(n) for n in range(first, min(first + 5000,
                                                                      args.history))])
                result.update(history=args.history,
                              get_events=get_latency(url, args.requests))
            if args.sources:
                write_sources(client, args.sources)
                result.update(
                    sources=args.sources,
                    get_sources=get_latency(url, args.requests, "/sources", SOURCE_QUERIES),
                    get_sources_summary=get_latency(url, args.requests, "/sources/summary",
                                                    [{}]))
            if args.stream:
                result["sse"] = sse_rate(url, client, args.stream)
        finally:
            api.terminate()
            try:
                api.wait(30)
            except subprocess.TimeoutExpired:
                api.kill()
                result["api_killed"] = "it had not stopped 30 s after SIGTERM"
            server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
