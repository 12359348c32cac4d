"""Chaos, the long way (the CI test is tests/pipeline/test_chaos.py): real-time file sources
through replicas of features and classifier while a random worker is killed with SIGKILL (and
replaced) every few seconds, Redis (AOF) is restarted once and malformed messages are injected;
then the same audio through a clean 1 + 1 run, and a comparison.

    .venv/bin/python bench/chaos.py [--sources 8] [--seconds 120] [--features 2]
                                    [--classifiers 2] [--kill-every 15] [--out chaos.json]

Prints (and writes) JSON: chunks captured and predicted, duplicates, chunks never predicted,
dead letters, whether the events equal the clean run's, chunk-to-prediction latency (p50, p99,
max), the recovery after each kill and after the Redis restart (the worst latency of the chunks
captured in the RECOVERY_WINDOW_S after it), and Redis memory per source. Needs SOUNDHIVE_MODELS
and redis-server.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
import soundfile
from machine import CLIPS, REPO

from services.registry import SERVICES
from shared import streams
from shared.audio import find_audio_files, load_audio
from shared.messages import CHUNK_SAMPLES, Event, Prediction, SourceStatus
from shared.ports import free_port
from soundhive.redis_process import RedisProcess, die_with_parent

CHUNK_SECONDS = CHUNK_SAMPLES / 16000
RECOVERY_WINDOW_S = 10.0
GARBAGE = [b"\xc1 not msgpack", b"\x93\x01\x02\x03", b"\x81\xa4type\xa3pcm"]


def make_sources(folder: Path, count: int, seconds: float) -> list[Path]:
    clips = [load_audio(path) for path in find_audio_files(CLIPS)]
    audio = np.concatenate(clips)
    paths = []
    for i in range(count):
        rolled = np.roll(audio, -i * len(audio) // count)
        whole = np.tile(rolled, int(seconds * 16000 / len(audio)) + 1)
        paths.append(folder / f"mic{i:03d}.wav")
        soundfile.write(paths[-1], whole[: int(seconds * 16000)], 16000)
    return paths


class Pipeline:
    def __init__(self, folder: Path, redis_url: str):
        self.folder, self.redis_url = folder, redis_url
        self.processes: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = self.folder / f"{name}-{len(self.processes)}.log"
        with log.open("wb") as out:
            service = SERVICES[name]
            process = service.launch(
                {**os.environ, **env}, {"redis_url": self.redis_url, service.port_field: 0,
                                        service.host_field: "127.0.0.1"},
                options=args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent)
        self.processes.append((name, process))
        return process

    def workers(self) -> list[tuple[str, subprocess.Popen]]:
        return [(n, p) for n, p in self.processes if n != "capture" and p.poll() is None]

    def stop(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                process.terminate()
        for _, process in self.processes:
            process.wait(30)


def read(client: redis.Redis, stream: str, schema: type) -> list:
    return [schema.decode(f[streams.MESSAGE_FIELD]) for _, f in client.xrange(stream)]


def captured(client: redis.Redis) -> set[tuple[str, int]]:
    statuses = [SourceStatus.decode(raw) for raw in client.hvals(streams.SOURCES_HASH)]
    return {(s.source, seq) for s in statuses for seq in range(s.seq + 1)}


def ended_events(client: redis.Redis) -> list[tuple]:
    return sorted((e.source, e.label, round(e.start, 2), round(e.end, 2))
                  for e in read(client, streams.EVENTS_STREAM, Event) if e.kind == "end")


def wait_predicted(client: redis.Redis, timeout_s: float) -> None:
    chunks = captured(client)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = {(p.source, p.seq) for p in read(client, streams.PREDICTIONS_STREAM, Prediction)}
        if done >= chunks:
            time.sleep(2)
            return
        time.sleep(1)


def run_chaos(args: argparse.Namespace, folder: Path, sources: list[Path]) -> dict:
    server = RedisProcess(folder / "redis", port=free_port(), appendonly=True)
    server.start()
    pipeline = Pipeline(folder, server.url)
    env = {"SOUNDHIVE_BATCH_SIZE": "8"}
    for _ in range(args.features):
        pipeline.start("features", **env)
    for _ in range(args.classifiers):
        pipeline.start("classifier", **env)
    capture = pipeline.start("capture", *[a for p in sources for a in ("--source", f"file:{p}")])
    faults: list[tuple[str, float]] = []
    started = time.time()
    next_kill, restarted, injected = started + args.kill_every, False, 0
    try:
        while capture.poll() is None:
            now = time.time()
            if not injected and now - started > 5:
                client = server.client()
                for stream in (streams.PCM_STREAM, streams.EMBEDDINGS_STREAM):
                    for i in range(500):
                        client.xadd(stream, {streams.MESSAGE_FIELD: GARBAGE[i % len(GARBAGE)]})
                injected = 1000
            if now >= next_kill:
                name, victim = random.choice(pipeline.workers())
                victim.send_signal(signal.SIGKILL)
                faults.append((f"kill {name}", now))
                pipeline.start(name, **env)
                next_kill = now + args.kill_every
            if not restarted and now - started > args.seconds / 2:
                faults.append(("redis restart", time.time()))
                server.stop()
                server.start()
                restarted = True
            time.sleep(0.2)
        client = server.client()
        wait_predicted(client, 120)
        return {"client": client, "server": server, "pipeline": pipeline, "faults": faults,
                "injected": injected}
    except BaseException:
        pipeline.stop()
        server.stop()
        raise


def clean_events(folder: Path, sources: list[Path]) -> list[tuple]:
    server = RedisProcess(folder / "clean-redis", port=free_port())
    server.start()
    pipeline = Pipeline(folder, server.url)
    try:
        pipeline.start("features")
        pipeline.start("classifier")
        pipeline.start("capture", "--fast",
                       *[a for p in sources for a in ("--source", f"file:{p}")]).wait()
        wait_predicted(server.client(), 300)
        return ended_events(server.client())
    finally:
        pipeline.stop()
        server.stop()


def report(run: dict, reference: list[tuple]) -> dict:
    client: redis.Redis = run["client"]
    predictions = read(client, streams.PREDICTIONS_STREAM, Prediction)
    keys = [(p.source, p.seq) for p in predictions]
    chunks = captured(client)
    latency = {(p.source, p.seq): (p.t + CHUNK_SECONDS, p.written_at - p.t - CHUNK_SECONDS)
               for p in predictions}
    values = np.array([lat for _, lat in latency.values()])
    recovery = []
    for what, at in run["faults"]:
        after = [lat for end, lat in latency.values() if at <= end < at + RECOVERY_WINDOW_S]
        recovery.append({"fault": what, "worst_latency_s": round(max(after, default=0.0), 2)})
    states = [client.memory_usage(k) or 0 for k in client.scan_iter(f"{streams.PREFIX}:state:*")]
    letters = client.xlen(streams.DEADLETTER_STREAM)
    return {
        "chunks_captured": len(chunks),
        "predictions": len(keys),
        "duplicates": len(keys) - len(set(keys)),
        "never_predicted": len(chunks - set(keys)),
        "malformed_injected": run["injected"],
        "dead_letters": letters,
        "events_equal_clean_run": ended_events(client) == reference,
        "events": len(reference),
        "latency_s": {"p50": round(float(np.percentile(values, 50)), 3),
                      "p99": round(float(np.percentile(values, 99)), 3),
                      "max": round(float(values.max()), 3)},
        "recovery": recovery,
        "redis_state_bytes_per_source": round(float(np.mean(states)), 1) if states else 0,
        "redis_used_memory_mb": round(client.info("memory")["used_memory"] / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=8,
                        help="real-time file sources (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="how long the faulty run lasts (default: %(default)s)")
    parser.add_argument("--features", type=int, default=2,
                        help="features replicas (default: %(default)s)")
    parser.add_argument("--classifiers", type=int, default=2,
                        help="classifier replicas (default: %(default)s)")
    parser.add_argument("--kill-every", type=float, default=15.0,
                        help="seconds between SIGKILLs of a random worker (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random choices (default: %(default)s)")
    parser.add_argument("--out", type=Path,
                        help="also write the JSON report to this file")
    args = parser.parse_args()
    random.seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="soundhive-chaos-") as tmp:
        folder = Path(tmp)
        (folder / "sources").mkdir()
        sources = make_sources(folder / "sources", args.sources, args.seconds)
        run = run_chaos(args, folder, sources)
        try:
            reference = clean_events(folder, sources)
            result = {"setup": vars(args) | {"out": str(args.out)}, **report(run, reference)}
        finally:
            run["pipeline"].stop()
            run["server"].stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
