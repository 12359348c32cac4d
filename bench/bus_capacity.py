"""The bus without the model: what one Redis node spends per live microphone.

N simulated microphones write a chunk each every 0.96 s (46.5 KB of PCM, as capture does) into
S shards; features workers with a STAND-IN embedder (FixedVectors: costs nothing, returns the
same vector for every patch; never a model) turn them into embeddings; the real classifier
(AudioSet head, event rules) writes predictions, events and detections in its transactions.
Redis's own CPU time, commands, bytes and memory are read from INFO before and after:

    .venv/bin/python bench/bus_capacity.py [--mics 200 400] [--seconds 30] [--shards 4]

Needs SOUNDHIVE_MODELS (the classifier's head) and redis-server; writes
bench/results/bus_capacity.json. On a small machine the Python workers run out of CPU long
before Redis does: the figure to keep is Redis's cost per microphone, from which one node's
capacity is extrapolated (a core's worth of Redis CPU), not measured.
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

import numpy as np

from services.features.service import make_handler
from services.features.settings import FeaturesSettings
from services.registry import SERVICES
from shared import bus, streams
from shared.messages import CHUNK_HOP_SECONDS, CHUNK_SAMPLES, PcmChunk
from shared.topology import Topology
from soundhive.redis_process import RedisProcess

RESULTS = Path(__file__).resolve().parent / "results" / "bus_capacity.json"


class FixedVectors:
    """A STAND-IN embedder for measuring the bus: no model, the same vector for every patch."""

    name = "yamnet"
    embedding_size = 1024
    patch_hop_seconds = 0.48

    def embed(self, patches: np.ndarray) -> np.ndarray:
        return np.full((len(patches), self.embedding_size), 0.01, np.float32)


def stand_in_features() -> None:
    """A features worker process over every shard, with the stand-in embedder."""
    settings = FeaturesSettings(service="features")
    topology = Topology.connect(settings, settings.block_ms)
    stopper = bus.Stopper()
    handle = make_handler(FixedVectors())
    bus.run_in_turn([bus.Worker(settings, streams.PCM_STREAM, streams.FEATURES_GROUP,
                                PcmChunk, handle, stopper=stopper,
                                client=topology.client(shard),
                                output=streams.EMBEDDINGS_STREAM, shard=shard)
                     for shard in topology.served])


def microphones(topology: Topology, count: int, seconds: float, stop: threading.Event) -> int:
    """Write `count` microphones' chunks in real time for `seconds`; returns chunks written."""
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, CHUNK_SAMPLES).astype(np.float32)
    written, started = 0, time.time()
    for tick in range(int(seconds / CHUNK_HOP_SECONDS)):
        with topology.home.pipeline(transaction=False) as pipe:
            for mic in range(count):
                source = f"mic{mic:05d}"
                chunk = PcmChunk.from_samples(source, "bench", tick, time.time(),
                                              tick * CHUNK_HOP_SECONDS, noise, False)
                shard = streams.shard_for(source, topology.count)
                bus.publish(pipe, shard.key(streams.PCM_STREAM), chunk)
            pipe.execute()
        written += count
        if stop.wait(max(0.0, started + (tick + 1) * CHUNK_HOP_SECONDS - time.time())):
            break
    return written


def redis_figures(client) -> dict:
    info = client.info()
    return {"cpu_s": info["used_cpu_user"] + info["used_cpu_sys"],
            "commands": info["total_commands_processed"],
            "bytes_in": info["total_net_input_bytes"], "bytes_out": info["total_net_output_bytes"],
            "memory": info["used_memory"]}


def run(mics: int, seconds: float, shards: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        server = RedisProcess(Path(folder), port=None)
        server.start()
        env = {"REDIS_URL": server.url, "SOUNDHIVE_SHARDS": str(shards),
               "SOUNDHIVE_METRICS_PORT": "0", "SOUNDHIVE_LOG_LEVEL": "WARNING"}
        children = [subprocess.Popen([sys.executable, __file__, "--stand-in-features"],
                                     env={**dict(os.environ), **env}) for _ in range(workers)]
        children += [SERVICES["classifier"].launch({**dict(os.environ), **env})
                     for _ in range(workers)]
        try:
            topology = Topology.connect(FeaturesSettings(redis_url=server.url, shards=shards))
            time.sleep(8)  # the workers load
            before, started = redis_figures(server.client()), time.monotonic()
            written = microphones(topology, mics, seconds, threading.Event())
            after, elapsed = redis_figures(server.client()), time.monotonic() - started
            time.sleep(3)  # the workers catch up with the last chunks
            predicted = sum(server.client().xlen(shard.key(streams.PREDICTIONS_STREAM))
                            for shard in topology.every)
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(20)
            server.stop()
    cpu = (after["cpu_s"] - before["cpu_s"]) / elapsed
    return {
        "microphones": mics, "shards": shards, "seconds": round(elapsed, 1),
        "chunks_written": written,
        "predictions_in_streams": predicted,
        "redis_cpu_fraction": round(cpu, 3),
        "redis_cpu_ms_per_mic_second": round(1000 * cpu / mics, 3),
        "commands_per_s": round((after["commands"] - before["commands"]) / elapsed),
        "bytes_in_per_s": round((after["bytes_in"] - before["bytes_in"]) / elapsed),
        "bytes_out_per_s": round((after["bytes_out"] - before["bytes_out"]) / elapsed),
        "memory_bytes_per_mic": round((after["memory"] - before["memory"]) / mics),
        "mics_per_redis_core_extrapolated": round(mics / cpu) if cpu else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mics", type=int, nargs="+", default=[200, 400])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="features and classifiers each")
    parser.add_argument("--stand-in-features", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.stand_in_features:
        stand_in_features()
        return
    results = [run(mics, options.seconds, options.shards, options.workers)
               for mics in options.mics]
    for result in results:
        print(json.dumps(result))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
