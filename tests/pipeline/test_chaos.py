"""Chaos: the pipeline's promises under replicas, kill -9, a Redis restart, garbage, a flush and
Redis at maxmemory — every chunk predicted exactly once, the same events as a clean run.

The chaos runs replay files in real time (so the faults land mid-run); the clean reference runs
them as fast as possible: events depend on the audio, not on its pacing.
"""

import signal
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import redis
import soundfile
from pipeline_helpers import RedisServer, Services, captured_chunks, read_all, wait_for

from shared import streams
from shared.audio import find_audio_files, load_audio
from shared.messages import (
    CHUNK_SAMPLES,
    ENVELOPE_FRAMES,
    DeadLetter,
    Embeddings,
    Event,
    PcmChunk,
    Prediction,
)

SOURCE_SECONDS = 24.0
WAIT_S = 180


@pytest.fixture
def aof_redis(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def chaos_services(aof_redis: RedisServer, tmp_path: Path, models_dir: Path):
    running = Services(aof_redis, tmp_path, models_dir)
    yield running
    running.stop_all()


def make_sources(clips_dir: Path, folder: Path, count: int,
                 seconds: float = SOURCE_SECONDS) -> list[Path]:
    """`count` files of `seconds`, each the real clips in another order."""
    clips = [load_audio(path) for path in find_audio_files(clips_dir)]
    folder.mkdir()
    paths = []
    for i in range(count):
        order = clips[3 * i:] + clips[:3 * i]
        audio = np.concatenate(order)[: int(seconds * 16000)]
        paths.append(folder / f"mix{i}.wav")
        soundfile.write(paths[-1], audio, 16000)
    return paths


def source_args(paths: list[Path]) -> list[str]:
    return [arg for path in paths for arg in ("--source", f"file:{path}")]


def ended_events(client: redis.Redis) -> list[tuple[str, str, float, float]]:
    return sorted((e.source, e.label, round(e.start, 2), round(e.end, 2))
                  for e in read_all(client, streams.EVENTS_STREAM, Event) if e.kind == "end")


def predicted(client: redis.Redis) -> list[tuple[str, int]]:
    return [(p.source, p.seq) for p in read_all(client, streams.PREDICTIONS_STREAM, Prediction)]


def wait_until_done(client: redis.Redis, capture) -> set[tuple[str, int]]:
    assert capture.wait(WAIT_S) == 0
    chunks = captured_chunks(client)
    wait_for(lambda: set(predicted(client)) >= chunks, WAIT_S, "a prediction for every chunk")
    time.sleep(1)  # a duplicate, if any, would have time to appear
    return chunks


def garbage(count: int, stream: str) -> list[bytes]:
    """Malformed entries of every kind a worker must refuse."""
    good_pcm = msgpack.unpackb(PcmChunk.from_samples(
        "ghost", "g", 0, 0.0, 0.0, np.zeros(CHUNK_SAMPLES, np.float32), False).encode())
    good_embeddings = msgpack.unpackb(Embeddings(
        "ghost", "g", 0, 0.0, 0.0, 0.0, False, "yamnet", 4, np.zeros(8, "<f4").tobytes(),
        bytes(ENVELOPE_FRAMES)).encode())
    body = good_pcm if stream == streams.PCM_STREAM else good_embeddings
    nan = np.full(8, np.nan, "<f4").tobytes()
    kinds = [
        b"\xc1 not msgpack",
        msgpack.packb({**body, "v": 99}),
        msgpack.packb({**body, "type": "other"}),
        msgpack.packb({k: v for k, v in body.items() if k != "source"}),
        msgpack.packb([1, 2, 3]),
        msgpack.packb({**body, "pcm": b"\x00" * 10} if stream == streams.PCM_STREAM
                      else {**body, "data": nan}),
    ]
    return [kinds[i % len(kinds)] for i in range(count)]


def inject(client: redis.Redis, count: int) -> dict[tuple[str, str], bytes]:
    injected = {}
    for stream in (streams.PCM_STREAM, streams.EMBEDDINGS_STREAM):
        for raw in garbage(count, stream):
            entry_id = client.xadd(stream, {streams.MESSAGE_FIELD: raw})
            injected[(stream, entry_id.decode())] = raw
    return injected


def clean_events(clips_dir: Path, tmp_path: Path, models_dir: Path, paths: list[Path]) -> list:
    server = RedisServer(tmp_path / "clean-redis")
    server.start()
    services = Services(server, tmp_path, models_dir)
    try:
        services.start("features")
        services.start("classifier")
        capture = services.start("capture", "--fast", *source_args(paths))
        wait_until_done(server.client(), capture)
        return ended_events(server.client())
    finally:
        services.stop_all()
        server.stop()


def test_replicas_kills_restart_and_garbage_change_nothing(
        chaos_services: Services, aof_redis: RedisServer, clips_dir: Path, tmp_path: Path,
        models_dir: Path):
    paths = make_sources(clips_dir, tmp_path / "sources", 4)
    reference = clean_events(clips_dir, tmp_path, models_dir, paths)
    env = {"SOUNDHIVE_BATCH_SIZE": "4", "SOUNDHIVE_CLAIM_IDLE_S": "2"}
    features = [chaos_services.start("features", **env) for _ in range(2)]
    classifiers = [chaos_services.start("classifier", **env) for _ in range(2)]
    capture = chaos_services.start("capture", *source_args(paths))
    client = aof_redis.client()
    wait_for(lambda: client.xlen(streams.PREDICTIONS_STREAM) >= 8, WAIT_S, "first predictions")
    injected = inject(client, 1000)
    time.sleep(3)
    for victim in (features[0], classifiers[0]):
        victim.send_signal(signal.SIGKILL)
    time.sleep(3)
    aof_redis.stop()
    time.sleep(1)
    aof_redis.start()
    client = aof_redis.client()

    chunks = wait_until_done(client, capture)
    predictions = predicted(client)
    assert sorted(predictions) == sorted(chunks)  # every chunk once: none lost, none twice
    assert ended_events(client) == reference
    letters = {(letter.stream, letter.entry_id): letter
               for letter in read_all(client, streams.DEADLETTER_STREAM, DeadLetter)}
    assert injected.keys() <= letters.keys()  # every malformed message, with a reason
    assert all(letters[key].reason and letters[key].payload == raw[:1024]
               for key, raw in injected.items())
    assert all(p.poll() is None for p in (features[1], classifiers[1]))
    assert "redis is back" in chaos_services.log_text(features[1])


def test_flush_and_maxmemory_are_survived(chaos_services: Services, aof_redis: RedisServer,
                                          clips_dir: Path, tmp_path: Path):
    paths = make_sources(clips_dir, tmp_path / "sources", 2)
    env = {"SOUNDHIVE_REORDER_TIMEOUT_S": "2"}
    workers = [chaos_services.start("features", **env), chaos_services.start("classifier", **env)]
    capture = chaos_services.start("capture", *source_args(paths))
    client = aof_redis.client()
    wait_for(lambda: client.xlen(streams.PREDICTIONS_STREAM) >= 4, WAIT_S, "first predictions")
    client.flushall()
    wait_for(lambda: client.xlen(streams.PREDICTIONS_STREAM) >= 2, WAIT_S,
             "predictions after the flush")
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used + 64 * 1024))
    # Capture writes audio all the time; the workers write only what it gave them, so they
    # may or may not meet the full Redis (trimming frees a little memory now and then).
    wait_for(lambda: "redis out of memory" in chaos_services.log_text(capture), WAIT_S,
             "capture to meet the full Redis")
    time.sleep(3)
    client.config_set("maxmemory", "0")
    assert capture.wait(WAIT_S) == 0
    assert "dropped" not in chaos_services.log_text(capture)  # files wait, whatever Redis does
    assert all(p.poll() is None for p in workers)  # survived, and resume:
    wait_for(lambda: any(p.offset > SOURCE_SECONDS - 3 for p in read_all(
        client, streams.PREDICTIONS_STREAM, Prediction)), WAIT_S, "the files' last predictions")
    for process in (*workers, capture):
        log = chaos_services.log_text(process)
        # Logged when it starts and when it clears, not per retry (trimming can free a little
        # memory, so an episode may come back a few times).
        assert log.count("redis out of memory") <= 5, log
        assert "Traceback" not in log
