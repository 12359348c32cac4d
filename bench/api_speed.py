"""Events API speed: GET /events latency (p50/p95/p99) over a large detection history, the
events per second the SSE stream delivers to a client, and GET /sources (the dashboard's pages)
and /sources/summary over many sources, against the real api process and a real Redis (both
started here on free ports).

    .venv/bin/python bench/api_speed.py [--history 100000] [--requests 300] [--stream 20000]
                                        [--sources 500]

Prints JSON. Events are written the way the classifier writes them (events stream + detections),
sources as capture and the classifier write them (the tests' source_fleet.py).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from services.registry import SERVICES
from shared import bus, detections, streams
from shared.messages import Event
from shared.ports import free_port
from soundhive.redis_process import RedisProcess, die_with_parent

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from source_fleet import write_sources  # noqa: E402  (the tests' sources, written as the pipeline does)

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


def write(client, events: list[Event]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for e in events:
            bus.publish(pipe, streams.EVENTS_STREAM, e, 1_000_000)
            detections.write(pipe, e)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--stream", type=int, default=20_000)
    parser.add_argument("--sources", type=int, default=500)
    args = parser.parse_args()
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
            write_sources(client, args.sources)
            for first in range(0, args.history, 5000):
                write(client, [event(n) for n in range(first, min(first + 5000, args.history))])
            url = f"http://127.0.0.1:{port}"
            while True:
                try:
                    if httpx.get(f"{url}/healthz").is_success:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            result = {"history": args.history, "get_events": get_latency(url, args.requests),
                      "sources": args.sources,
                      "get_sources": get_latency(url, args.requests, "/sources",
                                                 SOURCE_QUERIES),
                      "get_sources_summary": get_latency(url, args.requests,
                                                         "/sources/summary", [{}]),
                      "sse": sse_rate(url, client, args.stream)}
        finally:
            api.terminate()
            api.wait(20)
            server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
