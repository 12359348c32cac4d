"""The pipeline as separate processes over a real Redis: capture -> features -> classifier."""

import signal
from pathlib import Path

import msgpack
import numpy as np
import redis
import soundfile
from pipeline_helpers import RedisServer, Services, captured_chunks, read_all, wait_for

from services.features.service import READERS
from shared import bus, detections, streams
from shared.audio import load_audio
from shared.messages import (
    CHUNK_SAMPLES,
    DEADLETTER_PAYLOAD_MAX,
    DeadLetter,
    Embeddings,
    Event,
    PcmChunk,
    Prediction,
)

WAIT_S = 120  # generous: the machine may be loaded


def keys(messages: list) -> list[tuple[str, str, int]]:
    return [(m.source, m.session, m.seq) for m in messages]


def write_noise(path: Path, seconds: float, level: float = 0.2) -> Path:
    rng = np.random.default_rng(0)
    soundfile.write(path, (rng.standard_normal(int(16000 * seconds)) * level).astype(np.float32),
                    16000)
    return path


def test_end_to_end_dog_and_speech_events(services: Services, redis_server: RedisServer,
                                          clips_dir: Path):
    client = redis_server.client()
    services.start("features")
    services.start("classifier")
    capture = services.start("capture", "--fast", "--source", f"file:{clips_dir / 'dog.mp3'}",
                             "--source", f"file:{clips_dir / 'speech.wav'}")

    def ended() -> dict[tuple[str, str], Event]:
        events = read_all(client, streams.EVENTS_STREAM, Event)
        return {(e.source, e.label): e for e in events if e.kind == "end"}

    wanted = {("dog.mp3", "Bark"), ("speech.wav", "Speech")}
    events = wait_for(lambda: (found := ended()).keys() >= wanted and found, WAIT_S,
                      "a Bark event on dog.mp3 and a Speech event on speech.wav")
    assert capture.wait(WAIT_S) == 0
    for (source, label) in wanted:
        event = events[(source, label)]
        duration = len(load_audio(clips_dir / source)) / 16000
        assert 0 <= event.start < 1.0, event
        assert duration - 2.0 < event.end <= duration + CHUNK_SAMPLES / 16000, event
        assert event.start_time <= event.end_time and event.model == "yamnet"
    history = detections.recent(client, 1000)
    assert {(e.source, e.label, e.kind) for e in history} >= {(s, lab, "end") for s, lab in wanted}
    assert not any(e.source == "speech.wav" and "Animal" in e.names() for e in events.values())
    # one event per sound: the bark carries its ancestors, which make no events of their own
    assert events[("dog.mp3", "Bark")].categories == ["Dog", "Domestic animals, pets", "Animal"]
    assert not {label for source, label in events if source == "dog.mp3"} & {
        "Dog", "Domestic animals, pets", "Animal"}


def test_two_workers_each_process_every_chunk_once(services: Services, redis_server: RedisServer,
                                                   clips_dir: Path):
    client = redis_server.client()
    for _ in range(2):
        services.start("features", SOUNDHIVE_BATCH_SIZE="4")
        services.start("classifier", SOUNDHIVE_BATCH_SIZE="4")
    capture = services.start("capture", "--fast", "--source", f"file:{clips_dir}")
    assert capture.wait(WAIT_S) == 0
    chunks = captured_chunks(client)
    assert len(chunks) > 40

    def predictions() -> list:
        return [(p.source, p.seq) for p in read_all(client, streams.PREDICTIONS_STREAM,
                                                    Prediction)]

    wait_for(lambda: set(predictions()) == chunks, WAIT_S, "a prediction for every chunk")
    assert sorted(predictions()) == sorted(chunks)  # and none twice
    for stream, group, loops in ((streams.PCM_STREAM, streams.FEATURES_GROUP, READERS),
                                 (streams.EMBEDDINGS_STREAM, streams.CLASSIFIER_GROUP, 1)):
        # on a busy machine one replica may take every batch: what counts is once each
        consumers = client.xinfo_consumers(stream, group)
        assert 1 <= len(consumers) <= 2 * loops, consumers
        # The classifier writes its outputs in its own transaction and acknowledges after it.
        wait_for(lambda s=stream, g=group: client.xpending(s, g)["pending"] == 0, WAIT_S,
                 f"every entry of {stream} acknowledged")


def test_killed_worker_pending_chunks_are_claimed(services: Services, redis_server: RedisServer,
                                                  tmp_path: Path):
    client = redis_server.client()
    capture = services.start("capture", "--fast", "--source",
                             f"file:{write_noise(tmp_path / 'long.wav', 240)}")
    assert capture.wait(WAIT_S) == 0
    chunks = keys(read_all(client, streams.PCM_STREAM, PcmChunk))
    victim = services.start("features", SOUNDHIVE_BATCH_SIZE="16")

    def victims_pending() -> list:  # the victim's loops are the group's only consumers
        try:
            return client.xpending_range(streams.PCM_STREAM, streams.FEATURES_GROUP, "-", "+",
                                         100)
        except redis.ResponseError:  # the worker has not created its group yet
            return []

    pending = wait_for(victims_pending, WAIT_S, "the first worker to hold a batch", 0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    pending_ids = {p["message_id"] for p in victims_pending()}
    assert pending and pending_ids
    survivor = services.start("features", SOUNDHIVE_BATCH_SIZE="16")

    def embedded() -> list:
        return keys(read_all(client, streams.EMBEDDINGS_STREAM, Embeddings))

    wait_for(lambda: set(embedded()) >= set(chunks), WAIT_S, "embeddings of every chunk")
    wait_for(lambda: client.xpending(streams.PCM_STREAM, streams.FEATURES_GROUP)["pending"] == 0,
             WAIT_S, "no pending entries")
    assert "claimed" in services.log_text(survivor)
    claimed_seqs = {PcmChunk.decode(fields[streams.MESSAGE_FIELD]).seq
                    for eid, fields in client.xrange(streams.PCM_STREAM) if eid in pending_ids}
    assert claimed_seqs <= {seq for _, _, seq in embedded()}


def test_malformed_messages_are_dead_lettered(services: Services, redis_server: RedisServer,
                                              clips_dir: Path):
    client = redis_server.client()
    features = services.start("features")
    classifier = services.start("classifier")
    good = PcmChunk.from_samples("ok", "s1", 0, 0.0, 0.0, np.zeros(CHUNK_SAMPLES, np.float32),
                                 True)
    body = msgpack.unpackb(good.encode())
    bad = {
        "garbage": b"\xc1\xff not msgpack",
        "wrong version": msgpack.packb({**body, "v": 99}),
        "short pcm": msgpack.packb({**body, "pcm": body["pcm"][:1000]}),
        "no type": msgpack.packb([1, 2, 3]),
    }
    for raw in bad.values():
        client.xadd(streams.PCM_STREAM, {streams.MESSAGE_FIELD: raw})
    client.xadd(streams.PCM_STREAM, {"other": b"field"})
    client.xadd(streams.EMBEDDINGS_STREAM, {streams.MESSAGE_FIELD: b"garbage"})
    bus.publish(client, streams.PCM_STREAM, good, 1000)

    wait_for(lambda: client.xlen(streams.PREDICTIONS_STREAM) >= 1, WAIT_S,
             "the good chunk's prediction")
    letters = wait_for(lambda: len(found := read_all(client, streams.DEADLETTER_STREAM,
                                                     DeadLetter)) >= 6 and found,
                       WAIT_S, "six dead letters")
    reasons = sorted((letter.stream, letter.reason) for letter in letters)
    text = "\n".join(r for _, r in reasons)
    assert "not msgpack" in text
    assert "schema version 99 is not supported" in text
    assert f"500 samples, expected {CHUNK_SAMPLES}" in text
    assert "not a msgpack map" in text
    assert "no 'm' field" in text
    assert [s for s, _ in reasons].count(streams.EMBEDDINGS_STREAM) == 1
    kept = {(letter.payload, letter.size) for letter in letters}
    assert kept >= {(raw[:DEADLETTER_PAYLOAD_MAX], len(raw)) for raw in bad.values()}
    assert max(len(letter.payload) for letter in letters) == DEADLETTER_PAYLOAD_MAX  # bounded
    assert features.poll() is None and classifier.poll() is None
    assert client.xpending(streams.PCM_STREAM, streams.FEATURES_GROUP)["pending"] == 0


def test_a_source_state_of_a_newer_version_dead_letters_its_chunk_once_with_the_reason(
        services: Services, redis_server: RedisServer):
    client = redis_server.client()
    client.set(streams.source_state_key("future"), msgpack.packb({"version": 99, "session": "s"}))
    classifier = services.start("classifier")
    for source in ("future", "today"):
        chunk = PcmChunk.from_samples(source, "s", 0, 0.0, 0.0,
                                      np.zeros(CHUNK_SAMPLES, np.float32), False)
        bus.publish(client, streams.EMBEDDINGS_STREAM,
                    Embeddings.of(chunk, "yamnet", np.zeros((2, 1024), np.float32)), 1000)
    wait_for(lambda: client.xlen(streams.DEADLETTER_STREAM), WAIT_S, "the dead letter")
    wait_for(lambda: client.xlen(streams.PREDICTIONS_STREAM), WAIT_S, "today's prediction")
    letters = read_all(client, streams.DEADLETTER_STREAM, DeadLetter)
    assert [(letter.reason, letter.deliveries) for letter in letters] == [
        ("PermanentError: source state version 99 is not one this classifier reads (1 to 2): "
         "upgrade the classifier", 1)]
    assert b"future" in letters[0].payload  # the first KB of the chunk that could not be used
    assert client.xpending(streams.EMBEDDINGS_STREAM, streams.CLASSIFIER_GROUP)["pending"] == 0
    assert classifier.poll() is None


def test_services_reconnect_after_redis_restart(services: Services, redis_server: RedisServer,
                                                tmp_path: Path):
    source = write_noise(tmp_path / "noise.wav", 25)
    features = services.start("features")
    classifier = services.start("classifier")
    capture = services.start("capture", "--source", f"file:{source}")
    client = redis_server.client()
    wait_for(lambda: client.xlen(streams.PREDICTIONS_STREAM) >= 2, WAIT_S,
             "predictions before the restart")
    redis_server.stop()
    redis_server.start()
    client = redis_server.client()
    assert client.xlen(streams.PREDICTIONS_STREAM) == 0  # an empty Redis came back

    def last_seen() -> bool:
        return any(p.offset > 20 for p in read_all(client, streams.PREDICTIONS_STREAM,
                                                   Prediction))

    wait_for(last_seen, WAIT_S, "predictions for the end of the file after the restart")
    assert capture.wait(WAIT_S) == 0
    assert features.poll() is None and classifier.poll() is None
    assert "redis unreachable" in services.log_text(features)
