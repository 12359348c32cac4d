"""The bus without the model: what one Redis node, and a 3-master Redis Cluster, spend per live
microphone, measured in one run on this machine.

N simulated microphones write a chunk each every 0.96 s (46.5 KB of PCM, as capture does) into
S shards; features workers with a STAND-IN embedder (FixedVectors: costs nothing, returns the
same vector for every patch; never a model) turn them into embeddings; the real classifier
(AudioSet head, event rules) writes predictions, events and detections in its transactions.
Each Redis node's own CPU time, commands, bytes and memory are read from INFO before and after,
and over IDLE_S with the workers polling and no microphone (the floor the per-microphone cost is
taken above):

    .venv/bin/python bench/bus_capacity.py [--mics 200 400] [--seconds 20] [--shards 6]

Both buses are started by the benchmark on loopback (TCP) and stopped on every exit path: one
redis-server, and a cluster of 3 (soundhive/redis_process.py LoopbackCluster, the services with
SOUNDHIVE_REDIS_CLUSTER=1). Needs SOUNDHIVE_MODELS (the classifier's head), redis-server and
redis-cli; writes bench/results/bus_capacity.json with the command, commit and load average.

On a small machine the Python workers run out of CPU long before Redis does, and the cluster's
nodes share the same cores: the figure to keep is Redis's CPU per microphone (all nodes
together), from which a node's capacity is extrapolated (a core's worth of Redis CPU), not
measured.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import machine
import numpy as np
import redis
from redis.cluster import RedisCluster

from services.features.service import make_handler
from services.features.settings import FeaturesSettings
from services.registry import SERVICES
from shared import bus, streams
from shared.messages import CHUNK_HOP_SECONDS, CHUNK_SAMPLES, PcmChunk
from shared.ports import free_port
from shared.topology import Topology
from soundhive.redis_process import LoopbackCluster, RedisProcess

RESULTS = Path(__file__).resolve().parent / "results" / "bus_capacity.json"
BUSES = ("one Redis", "3-master cluster")
WORKERS_LOAD_S = 8.0
IDLE_S = 5.0  # the workers' polling with no microphone: Redis's floor, subtracted per microphone
CATCH_UP_S = 3.0


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


@contextlib.contextmanager
def running_bus(kind: str, folder: Path) -> Iterator[tuple[dict[str, str], list[RedisProcess]]]:
    """The bus's environment for the services and its nodes, stopped on every exit path."""
    if kind == "one Redis":
        node = RedisProcess(folder / "redis", port=free_port())
        node.start()
        try:
            yield {"REDIS_URL": node.url}, [node]
        finally:
            node.stop()
        return
    cluster = LoopbackCluster(folder / "cluster", node_timeout_ms=30000)  # a loaded machine
    cluster.start()
    try:
        yield {"REDIS_URL": cluster.url, "SOUNDHIVE_REDIS_CLUSTER": "1"}, cluster.nodes
    finally:
        cluster.stop()


def microphones(topology: Topology, count: int, seconds: float) -> tuple[int, int]:
    """Write `count` microphones' chunks in real time for `seconds`; returns the chunks written
    and the ticks whose writes ended after the next tick was due (the writer fell behind).
    Each tick is one pipeline per Redis node, of plain clients (redis-py's cluster pipeline
    routes each command in Python: on this machine it, not Redis, fell behind at 50
    microphones)."""
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, CHUNK_SAMPLES).astype(np.float32)
    by_node: dict[int, tuple[redis.Redis, list[tuple[str, str]]]] = {}
    for mic in range(count):
        source = f"mic{mic:05d}"
        key = streams.shard_for(source, topology.count).key(streams.PCM_STREAM)
        client = node_client(topology, key)
        by_node.setdefault(id(client), (client, []))[1].append((source, key))
    written, late, started = 0, 0, time.time()
    for tick in range(int(seconds / CHUNK_HOP_SECONDS)):
        for client, mics in by_node.values():
            with client.pipeline(transaction=False) as pipe:
                for source, key in mics:
                    chunk = PcmChunk.from_samples(source, "bench", tick, time.time(),
                                                  tick * CHUNK_HOP_SECONDS, noise, False)
                    bus.publish(pipe, key, chunk)
                pipe.execute()
        written += count
        wait = started + (tick + 1) * CHUNK_HOP_SECONDS - time.time()
        late += wait < 0
        time.sleep(max(0.0, wait))
    return written, late


def node_client(topology: Topology, key: str) -> redis.Redis:
    """A plain client of the Redis node holding `key`."""
    if isinstance(topology.home, RedisCluster):
        return topology.home.get_node_from_key(key).redis_connection
    return topology.home


def node_figures(node: RedisProcess) -> dict:
    info = node.client().info()
    return {"cpu_s": info["used_cpu_user"] + info["used_cpu_sys"],
            "commands": info["total_commands_processed"],
            "bytes_in": info["total_net_input_bytes"], "bytes_out": info["total_net_output_bytes"],
            "memory": info["used_memory"]}


def backlog(topology: Topology, stream: str) -> int:
    """Entries in `stream` on every shard."""
    return sum(topology.client(shard).xlen(shard.key(stream)) for shard in topology.every)


def run(kind: str, mics: int, seconds: float, shards: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as folder, running_bus(kind, Path(folder)) as (env, nodes):
        env |= {"SOUNDHIVE_SHARDS": str(shards), "SOUNDHIVE_METRICS_PORT": "0",
                "SOUNDHIVE_LOG_LEVEL": "WARNING"}
        children = [subprocess.Popen([sys.executable, __file__, "--stand-in-features"],
                                     env={**dict(os.environ), **env}) for _ in range(workers)]
        children += [SERVICES["classifier"].launch({**dict(os.environ), **env})
                     for _ in range(workers)]
        try:
            settings = FeaturesSettings(redis_url=env["REDIS_URL"], shards=shards,
                                        redis_cluster="SOUNDHIVE_REDIS_CLUSTER" in env)
            topology = Topology.connect(settings)
            time.sleep(WORKERS_LOAD_S)
            idle = [node_figures(n) for n in nodes]
            time.sleep(IDLE_S)
            before, started = [node_figures(n) for n in nodes], time.monotonic()
            written, late = microphones(topology, mics, seconds)
            after, elapsed = [node_figures(n) for n in nodes], time.monotonic() - started
            backlogs = {stream: backlog(topology, stream)
                        for stream in (streams.PCM_STREAM, streams.EMBEDDINGS_STREAM)}
            topology.close()
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(20)
    return figures(kind, mics, shards, elapsed, written, late, backlogs, idle, before, after)


def figures(kind: str, mics: int, shards: int, elapsed: float, written: int, late: int,
            backlogs: dict[str, int], idle: list[dict], before: list[dict], after: list[dict]
            ) -> dict:
    def rate(name: str, node: int) -> float:
        return (after[node][name] - before[node][name]) / elapsed

    nodes = range(len(before))
    cpu = [rate("cpu_s", node) for node in nodes]
    idle_cpu = [(before[n]["cpu_s"] - idle[n]["cpu_s"]) / IDLE_S for n in nodes]
    above_idle = sum(cpu) - sum(idle_cpu)
    return {
        "bus": kind, "microphones": mics, "shards": shards, "seconds": round(elapsed, 1),
        "chunks_written": written, "writer_late_ticks": late,
        "backlog_at_end": backlogs,
        "redis_cpu_fraction_per_node": [round(c, 3) for c in cpu],
        "idle_redis_cpu_fraction_per_node": [round(c, 3) for c in idle_cpu],
        "idle_commands_per_s": round(sum(before[n]["commands"] - idle[n]["commands"]
                                         for n in nodes) / IDLE_S),
        "redis_cpu_ms_per_mic_second": round(1000 * sum(cpu) / mics, 3),
        "redis_cpu_ms_per_mic_second_above_idle": round(1000 * above_idle / mics, 3),
        "commands_per_s": round(sum(rate("commands", node) for node in nodes)),
        "bytes_in_per_s": round(sum(rate("bytes_in", node) for node in nodes)),
        "bytes_out_per_s": round(sum(rate("bytes_out", node) for node in nodes)),
        "memory_bytes_per_mic": round(sum(after[n]["memory"] - before[n]["memory"]
                                          for n in nodes) / mics),
        "mics_per_redis_core_extrapolated": round(mics / sum(cpu)),
        "mics_per_redis_core_above_idle_extrapolated": round(mics / above_idle)
        if above_idle > 0 else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mics", type=int, nargs="+", default=[200, 400],
                        help="microphone counts, one run each per bus (default: 200 400)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long each run writes (default: %(default)s)")
    parser.add_argument("--shards", type=int, default=6,
                        help="shards the streams are split into (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="features and classifiers each")
    parser.add_argument("--buses", nargs="+", choices=BUSES, default=list(BUSES),
                        help="the buses to measure (default: all)")
    parser.add_argument("--stand-in-features", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.stand_in_features:
        stand_in_features()
        return
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = []
    for kind in options.buses:
        for mics in options.mics:
            runs.append(run(kind, mics, options.seconds, options.shards, options.workers))
            print(json.dumps(runs[-1]), flush=True)
    RESULTS.write_text(json.dumps({
        "command": {"argv": sys.argv[1:], "commit": machine.git_commit()},
        "machine": machine.describe(), "load_average_before": load_before,
        "stand_in_embedder": "FixedVectors: no model, a fixed vector per patch", "runs": runs,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
