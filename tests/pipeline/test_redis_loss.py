"""Redis losing its data mid-run (FLUSHALL, or a restart without persistence): the classifier
counts as lost exactly the chunks that were never predicted, and every event open at the loss
ends, at a sink too."""

import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import soundfile
from notifier.notifier_helpers import WEBHOOK_SECRET, WebhookReceiver
from pipeline_helpers import RedisServer, Services, captured_chunks, wait_for

from shared import streams
from shared.audio import load_audio
from shared.messages import CHUNK_SAMPLES, Event, Prediction
from shared.params import SAMPLE_RATE
from shared.ports import free_port

WAIT_S = 120


def decoded(entries: list, schema: type) -> list:
    return [schema.decode(fields[streams.MESSAGE_FIELD]) for _, fields in entries]


def lost_total(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=5).text
    return next(float(line.split()[1]) for line in text.splitlines()
                if line.startswith("soundhive_chunks_lost_total "))


def open_ids(events: list[Event]) -> set[str]:
    return {e.id for e in events if e.kind == "start"} - {e.id for e in events if e.kind == "end"}


def erase(client: redis.Redis, server: RedisServer, how: str) -> tuple[list, list]:
    """The predictions and events there were, read at once with the loss."""
    with client.pipeline(transaction=True) as pipe:
        pipe.xrange(streams.PREDICTIONS_STREAM)
        pipe.xrange(streams.EVENTS_STREAM)
        if how == "flush":
            pipe.flushall()
        predicted, events = pipe.execute()[:2]
    if how == "restart":  # the workers are idle: nothing was written since the reading
        server.stop()
        server.start()
    return predicted, events


@pytest.mark.parametrize("how", ["flush", "restart"])
def test_a_data_loss_mid_run_counts_only_the_chunks_lost_and_ends_every_open_event(
        redis_server: RedisServer, services: Services, clips_dir: Path, tmp_path: Path,
        webhook: WebhookReceiver, how: str):
    sources = []
    for name in ("dog.mp3", "duck.mp3"):  # 12 s of animals each, replayed in real time
        sources.append(tmp_path / f"{name}.wav")
        soundfile.write(sources[-1], np.tile(load_audio(clips_dir / name), 2), 16000)
    metrics_port = free_port()
    features = services.start("features")
    services.start("classifier", SOUNDHIVE_METRICS_PORT=str(metrics_port))
    services.start("notifier", SOUNDHIVE_WEBHOOK_URLS=webhook.url,
                   SOUNDHIVE_WEBHOOK_SECRET=WEBHOOK_SECRET)
    client = redis_server.client()
    wait_for(lambda: client.exists(streams.EVENTS_STREAM) and client.xinfo_groups(
        streams.EVENTS_STREAM), WAIT_S, "the notifier's group")
    capture = services.start("capture", *[f"--source=file:{path}" for path in sources])

    def events() -> list[Event]:
        return decoded(client.xrange(streams.EVENTS_STREAM), Event)

    wait_for(lambda: open_ids(events()), WAIT_S, "an event to start")
    features.send_signal(signal.SIGSTOP)  # chunks pile up in the audio stream, events stay open
    time.sleep(2.5)
    predicted_before, events_before = erase(client, redis_server, how)
    features.send_signal(signal.SIGCONT)
    open_at_flush = open_ids(decoded(events_before, Event))
    assert open_at_flush

    assert capture.wait(WAIT_S) == 0
    chunks = captured_chunks(client)
    last = {source: max(seq for s, seq in chunks if s == source) for source, _ in chunks}

    def predicted() -> set[tuple[str, int]]:
        return {(p.source, p.seq) for p in decoded(
            predicted_before + client.xrange(streams.PREDICTIONS_STREAM), Prediction)}

    wait_for(lambda: all((source, seq) in predicted() for source, seq in last.items()),
             WAIT_S, "each source's last chunk to be predicted")
    missing = chunks - predicted()
    assert missing  # the loss erased the chunks waiting in the audio stream
    assert lost_total(f"http://127.0.0.1:{metrics_port}/metrics") == len(missing)
    assert not open_ids(decoded(events_before, Event) + events())
    heard = {}  # each source's audio heard before the flush, up to (s)
    for p in decoded(predicted_before, Prediction):
        heard[p.source] = max(heard.get(p.source, 0.0), p.offset + CHUNK_SAMPLES / SAMPLE_RATE)
    ends = {e.id: e for e in events() if e.kind == "end"}
    assert all(ends[i].end <= heard[ends[i].source] for i in open_at_flush)  # last heard then
    wait_for(lambda: open_at_flush <= {r.body["event_id"] for r in webhook.received
                                       if r.body["kind"] == "end"},
             WAIT_S, "the webhook to get the end of every event open at the loss")
