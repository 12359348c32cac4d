"""Classifier service: embeddings -> per-chunk predictions and detection events.

Replicas are stateless: a source's recent embeddings (for window heads) and its open events live
in Redis, and each chunk's outputs (prediction, events, new event state, and its idempotency key
per (source, session, seq)) are written in one MULTI/EXEC, so a redelivered chunk changes nothing.
Metrics and health on SOUNDHIVE_METRICS_PORT (default 9103).
"""

import logging
import time
from typing import Protocol

import numpy as np
import redis

from services.classifier.events import EventTracker, Rules, RulesError, dumps_state, loads_state
from shared import bus, metrics, streams
from shared.config import Settings
from shared.messages import (
    CHUNK_SAMPLES,
    PATCH_HOP_SECONDS,
    PATCHES_PER_CHUNK,
    Embeddings,
    Prediction,
)
from shared.models import Head, ModelError, load_model
from shared.params import SAMPLE_RATE

log = logging.getLogger("soundhive.classifier")

TOP_LABELS = 10
DONE_TTL_S = 24 * 3600
STATE_TTL_S = 24 * 3600


class WindowHead(Protocol):
    """What the classifier scores with: a head over each patch's window of recent embeddings
    (oldest first, `lengths[i]` valid rows, the newest at `lengths[i] - 1`). Trained heads
    (shared.models.trained.TrainedHead) are window heads as they are."""

    name: str
    embedding_model: str  # the embedding model it expects
    class_names: list[str]
    window: int  # number of embeddings a window holds (1: the patch alone)

    def score_windows(self, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """float32 [n, window, D], int [n] -> float32 scores [n, C] in [0, 1]."""
        ...

    def changed_on_disk(self) -> bool:
        """Whether its files were replaced since it was loaded (for hot reload)."""
        ...


AUDIOSET_HEAD = "audioset"
RELOAD_CHECK_S = 2.0


class AudioSetHead:
    """A per-embedding AudioSet head seen as a window head of window 1."""

    name = AUDIOSET_HEAD
    window = 1

    def __init__(self, head: Head, embedding_model: str):
        self.embedding_model = embedding_model
        self.class_names = head.class_names
        self._head = head

    def score_windows(self, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self._head.score(windows[np.arange(len(windows)), lengths - 1])

    def changed_on_disk(self) -> bool:
        return False


def load_head(name: str, embedding_model: str) -> WindowHead:
    """`audioset` (the model's own head), or a head trained with `soundhive train`, by name
    ($SOUNDHIVE_MODELS/heads/NAME) or folder."""
    if name == AUDIOSET_HEAD:
        return AudioSetHead(load_model(embedding_model).head, embedding_model)
    from shared.models import trained  # TensorFlow: loaded only when a trained head is used

    head = trained.load_head(name)
    if head.embedding_model != embedding_model:
        raise ModelError(
            f"head {head.name!r} scores {head.embedding_model} embeddings, but the features "
            f"service makes {embedding_model} ones (set SOUNDHIVE_MODEL={head.embedding_model})"
        )
    return head


class Classifier:
    def __init__(self, client: redis.Redis, head: WindowHead, tracker: EventTracker,
                 maxlen: int, head_spec: str | None = None):
        self.redis, self.head, self.tracker, self.maxlen = client, head, tracker, maxlen
        self.head_spec = head_spec or head.name
        self._next_reload_check = time.monotonic() + RELOAD_CHECK_S

    def handle(self, batch: list[bus.Delivery[Embeddings]]) -> list[bus.Output]:
        self._reload_if_replaced()
        messages = [d.message for d in batch]
        for m in messages:
            if m.model != self.head.embedding_model:
                raise ValueError(f"head {self.head.name} scores {self.head.embedding_model} "
                                 f"embeddings, got {m.model}")
        windows, lengths = self._windows(messages)
        scores = self.head.score_windows(windows, lengths).reshape(
            len(messages), PATCHES_PER_CHUNK, -1
        )
        for message, chunk_scores in zip(messages, scores, strict=True):
            self._write(message, chunk_scores)
        return []

    def _reload_if_replaced(self) -> None:
        """Hot reload: a head retrained into the same folder is picked up within seconds."""
        now = time.monotonic()
        if now < self._next_reload_check:
            return
        self._next_reload_check = now + RELOAD_CHECK_S
        if not self.head.changed_on_disk():
            return
        try:
            head = load_head(self.head_spec, self.head.embedding_model)
            tracker = EventTracker(self.tracker.rules, head.class_names)
        except (ModelError, RulesError) as exc:
            log.warning("head %s changed on disk but cannot be used yet: %s", self.head_spec, exc)
            return
        self.head, self.tracker = head, tracker
        log.info("reloaded head %s (%d classes)", head.name, len(head.class_names))

    def _windows(self, messages: list[Embeddings]) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.stack([m.vectors() for m in messages])  # [n, P, D]
        n, p, dim = vectors.shape
        if self.head.window == 1:
            return vectors.reshape(n * p, 1, dim), np.ones(n * p, np.int64)
        return self._stored_windows(messages, vectors)

    def _stored_windows(self, messages: list[Embeddings], vectors: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Store each patch embedding under its source and patch index, then read back the
        `window` latest ones up to each patch (whatever replica stored them)."""
        size, dim = self.head.window, vectors.shape[2]
        with self.redis.pipeline(transaction=False) as pipe:
            for m, rows in zip(messages, vectors, strict=True):
                key = streams.window_key(f"{m.source}:{m.session}")
                first = m.seq * PATCHES_PER_CHUNK
                pipe.zadd(key, {_member(first + k, row): first + k for k, row in enumerate(rows)})
                pipe.zremrangebyscore(key, "-inf", first - 4 * size)
                pipe.expire(key, STATE_TTL_S)
            for m in messages:
                key = streams.window_key(f"{m.source}:{m.session}")
                first = m.seq * PATCHES_PER_CHUNK
                pipe.zrangebyscore(key, first - size + 1, first + PATCHES_PER_CHUNK - 1,
                                   withscores=True)
            replies = pipe.execute()[3 * len(messages):]
        windows = np.zeros((len(messages) * PATCHES_PER_CHUNK, size, dim), np.float32)
        lengths = np.zeros(len(windows), np.int64)
        for i, (m, reply) in enumerate(zip(messages, replies, strict=True)):
            stored = {int(score): np.frombuffer(member[8:], "<f4") for member, score in reply}
            for k in range(PATCHES_PER_CHUNK):
                index = m.seq * PATCHES_PER_CHUNK + k
                rows = [stored[j] for j in range(index - size + 1, index + 1) if j in stored]
                windows[i * PATCHES_PER_CHUNK + k, : len(rows)] = rows
                lengths[i * PATCHES_PER_CHUNK + k] = len(rows)
        return windows, lengths

    def _write(self, m: Embeddings, scores: np.ndarray) -> None:
        done = streams.done_key(m.source, m.session, m.seq)
        state_key = streams.event_state_key(m.source)
        peak = scores.max(axis=0)
        top = np.argsort(-peak, kind="stable")[:TOP_LABELS]
        offsets = m.offset + np.arange(PATCHES_PER_CHUNK) * PATCH_HOP_SECONDS
        times = m.t + np.arange(PATCHES_PER_CHUNK) * PATCH_HOP_SECONDS
        written: list = []

        def transaction(pipe: redis.client.Pipeline) -> None:
            written.clear()
            if pipe.exists(done):
                return
            state, events = self.tracker.update(
                loads_state(pipe.get(state_key)), m.source, m.session, offsets, times, scores,
                m.rms, m.last,
            )
            prediction = Prediction(
                m.source, m.session, m.seq, m.t, m.offset, m.rms, self.head.name,
                [[self.head.class_names[i], round(float(peak[i]), 4)] for i in top], time.time(),
            )
            pipe.multi()
            pipe.set(done, 1, ex=DONE_TTL_S)
            bus.publish(pipe, streams.PREDICTIONS_STREAM, prediction, self.maxlen)
            for event in events:
                bus.publish(pipe, streams.EVENTS_STREAM, event, self.maxlen)
                pipe.lpush(streams.EVENTS_HISTORY, event.encode())
            pipe.ltrim(streams.EVENTS_HISTORY, 0, streams.EVENTS_HISTORY_SIZE - 1)
            pipe.set(state_key, dumps_state(state), ex=STATE_TTL_S)
            written.extend(events)
            written.append(prediction)

        self.redis.transaction(transaction, done, state_key)
        if not written:
            metrics.DUPLICATES.inc()
            return
        prediction = written.pop()
        metrics.END_TO_END_LATENCY.observe(
            max(0.0, prediction.written_at - m.t - CHUNK_SAMPLES / SAMPLE_RATE)
        )
        for event in written:
            metrics.EVENTS.labels(event.kind).inc()
            log.info("%s %s %s at %.2f s", event.source, event.label, event.kind,
                     event.start if event.kind == "start" else event.end)


def _member(index: int, row: np.ndarray) -> bytes:
    return index.to_bytes(8, "big", signed=True) + np.ascontiguousarray(row, "<f4").tobytes()


def main(settings: Settings) -> None:
    head = load_head(settings.head, settings.model)
    rules = Rules.from_file(settings.events_config) if settings.events_config else Rules()
    tracker = EventTracker(rules, head.class_names)
    health = metrics.Health()
    server = metrics.serve(settings.metrics_port, health)
    log.info("classifier: head %s (%d classes), metrics on :%d", head.name,
             len(head.class_names), server.server_port)
    client = bus.connect(settings.redis_url, settings.block_ms)
    classifier = Classifier(client, head, tracker, settings.stream_maxlen, settings.head)
    bus.Worker(settings, streams.EMBEDDINGS_STREAM, streams.CLASSIFIER_GROUP, Embeddings,
               classifier.handle, health, client=client).run()
