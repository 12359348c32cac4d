"""What the recorder costs per live microphone: its CPU keeping each source's ring, the Redis
memory of a ring, and the CPU, time and disk of each clip it writes.

    .venv/bin/python bench/recorder_cost.py [--sources 20] [--seconds 40] [--format opus]

A private redis-server and the real recorder process (`soundhive serve recorder`). N simulated
live microphones send a chunk every 0.96 s (phases spread over the hop), as capture does, for
--seconds with no events (phase 1: the ring alone), then as long again with each microphone
ending a 3 s event every 10 s (phase 2: rings and clips). The recorder's CPU time (user + system)
and resident memory are read with psutil; a ring's size with MEMORY USAGE. Merges
`{format: figures}` into bench/results/recorder_cost.json.
"""

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import machine
import numpy as np
import psutil

from services.registry import SERVICES
from shared import bus, params, streams
from shared.messages import CHUNK_HOP_SECONDS, CHUNK_SAMPLES, Event, PcmChunk
from shared.ports import free_port
from soundhive.redis_process import RedisProcess

RESULTS = Path(__file__).resolve().parent / "results" / "recorder_cost.json"
EVENT_EVERY_S = 10.0
EVENT_S = 3.0


class Microphones:
    """N live sources writing a chunk each every hop, and an event end every EVENT_EVERY_S."""

    def __init__(self, url: str, count: int):
        self.client = bus.connect(url)
        self.count = count
        rng = np.random.default_rng(0)
        self.samples = rng.uniform(-0.3, 0.3, CHUNK_SAMPLES).astype(np.float32)
        self.seq = 0
        self.events = 0

    def run(self, seconds: float, with_events: bool) -> None:
        start = time.time()
        next_event = start + EVENT_EVERY_S
        while time.time() - start < seconds:
            hop_start = time.time()
            with self.client.pipeline(transaction=False) as pipe:
                for n in range(self.count):
                    offset = self.seq * CHUNK_HOP_SECONDS
                    chunk = PcmChunk.from_samples(f"mic{n}", "s1", self.seq, hop_start, offset,
                                                  self.samples, False)
                    bus.publish(pipe, streams.PCM_STREAM, chunk)
                    if with_events and hop_start >= next_event:
                        end = offset - 1.0
                        bus.publish(pipe, streams.EVENTS_STREAM, Event(
                            f"mic{n}/Bark/{self.seq}", f"mic{n}", "Bark", "end", 0.9,
                            end - EVENT_S, end, hop_start - 1 - EVENT_S, hop_start - 1,
                            "yamnet"), 100000)
                        self.events += 1
                pipe.execute()
            if with_events and hop_start >= next_event:
                next_event += EVENT_EVERY_S
            self.seq += 1
            time.sleep(max(0.0, hop_start + CHUNK_HOP_SECONDS - time.time()))


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--format", choices=("opus", "flac"), default="opus")
    args = parser.parse_args()
    run = Path(tempfile.mkdtemp(prefix="recorder-bench-"))
    redis_server = RedisProcess(run, port=free_port())
    redis_server.start()
    clips = run / "clips"
    recorder = SERVICES["recorder"].launch(
        dict(os.environ), {"redis_url": redis_server.url, "clips_dir": clips,
                           "clips_format": args.format, "metrics_port": 0},
        stdout=(run / "recorder.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        figures = measure(redis_server, recorder, clips, args)
    finally:
        recorder.terminate()
        recorder.wait(30)
        redis_server.stop()
    figures |= {"sources": args.sources, "seconds": args.seconds, **machine.describe()}
    print(json.dumps(figures, indent=2))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.format] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def measure(redis_server: RedisProcess, recorder: subprocess.Popen, clips: Path,
            args: argparse.Namespace) -> dict:
    client = redis_server.client()
    process = psutil.Process(recorder.pid)
    time.sleep(3)  # its imports and first reads
    microphones = Microphones(redis_server.url, args.sources)
    cpu0 = cpu_seconds(process)
    microphones.run(args.seconds, with_events=False)
    cpu_ring = cpu_seconds(process) - cpu0
    rss_ring = process.memory_info().rss
    cpu1 = cpu_seconds(process)
    microphones.run(args.seconds, with_events=True)
    deadline = time.time() + 30
    while client.zcard(streams.CLIP_JOBS) and time.time() < deadline:
        threading.Event().wait(0.5)
    cpu_clips = cpu_seconds(process) - cpu1 - cpu_ring  # phase 2 less the rings' share
    written = client.hlen(streams.CLIPS_HASH)
    ring_chunks = client.llen(streams.ring_key("mic0"))
    ring_bytes = client.memory_usage(streams.ring_key("mic0"), samples=0) or 0
    disk = sum(p.stat().st_size for p in clips.rglob("*") if p.is_file())
    per_mic = cpu_ring / args.seconds / args.sources
    return {
        "ring_cpu_percent_per_mic": round(100 * per_mic, 3),
        "ring_redis_mb_per_mic": round(ring_bytes / 2**20, 2),
        "ring_seconds": round(ring_chunks * CHUNK_HOP_SECONDS, 1),
        "recorder_rss_mb": round(rss_ring / 2**20, 1),
        "recorder_rss_mb_after_clips": round(process.memory_info().rss / 2**20, 1),
        "events": microphones.events,
        "clips_recorded": written,
        "clip_cpu_ms": round(1000 * cpu_clips / max(written, 1), 1),
        "clip_kb_with_spectrogram": round(disk / max(written, 1) / 1024, 1),
        "clip_seconds": EVENT_S + 4,
        "sample_rate": params.SAMPLE_RATE,
    }


if __name__ == "__main__":
    main()
