"""Classifier service: embeddings -> per-chunk predictions and detection events.

Replicas are stateless: each source's sequence state (sequencer.py: next chunk, open events,
recent embeddings for window heads) lives in Redis, and a batch's outputs (predictions, events,
new states, chunks parked for reordering) are written in one optimistic transaction, so every
chunk reaches the event tracker and the head's window once, in order, whatever the replicas.
Each replica also remembers the last state it committed of each source, and the Redis epoch
(streams.EPOCH) it committed it under: a state missing under another epoch was lost with
Redis's data, and the source resumes from the remembered one (sequencer.py says how).
With several shards (SOUNDHIVE_SHARDS) a replica runs one Classifier per shard it serves, each
writing only its shard's keys (a source's state, epoch, outputs and detections share its
shard's hash tag): every transaction stays in one shard.
Metrics and health on SOUNDHIVE_METRICS_PORT (default 9103).
"""

import json
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import redis

from services.classifier.events import EventTracker, Rules, RulesError
from services.classifier.sequencer import Plan, SourceState, plan, resume_after_loss
from services.classifier.settings import ClassifierSettings
from shared import bus, detections, metrics, status, streams
from shared.hierarchy import LabelTree
from shared.labels import Ontology
from shared.messages import (
    CHUNK_SAMPLES,
    Embeddings,
    Event,
    Prediction,
)
from shared.models import AUDIOSET_HEAD, ModelError, WindowHead, load_head, models_dir
from shared.params import SAMPLE_RATE
from shared.ranking import specific_labels, top_labels
from shared.topology import Topology
from shared.writes import Writes

log = logging.getLogger("soundhive.classifier")

CHORES_INTERVAL_S = 5.0
OVERDUE_CHECK_S = 0.25  # how often the overdue reorder gaps are looked for (not every turn)
STATE_TTL_S = 7 * 24 * 3600  # a source silent for a week starts afresh
RELOAD_CHECK_S = 2.0


def label_tree(class_names: list[str]) -> LabelTree:
    """The head's classes related by the AudioSet ontology of the models folder (when its
    classes are AudioSet's: a trained head's own classes relate to nothing)."""
    path = models_dir() / "ontology.json"
    return LabelTree(class_names, Ontology.from_json(path) if path.is_file() else None)


def model_name(head: WindowHead) -> str:
    """What events say scored them: the embedding model, and the trained head's name."""
    if head.name == AUDIOSET_HEAD:
        return head.embedding_model
    return f"{head.embedding_model}/{head.name}"


@dataclass
class Scored:
    """A source's chunks ready in this transaction, with their scores."""

    plan: Plan
    chunks: list[Embeddings]
    scores: list[np.ndarray] = field(default_factory=list)  # [P, C] per chunk


class Classifier:
    def __init__(self, client: redis.Redis, head: WindowHead, tracker: EventTracker,
                 settings: ClassifierSettings, head_spec: str | None = None,
                 shard: streams.Shard = streams.Shard()):
        self.redis, self.head, self.tracker, self.shard = client, head, tracker, shard
        self.maxlen, self.timeout_s = settings.stream_maxlen, settings.reorder_timeout_s
        self.events_maxlen, self.events_backlog_max = (settings.events_maxlen,
                                                       settings.events_backlog_max)
        self.head_spec = head_spec or head.name
        self._next_reload_check = time.monotonic() + RELOAD_CHECK_S
        self._next_chores = self._next_overdue_check = 0.0
        self._epoch: bytes | None = None  # the Redis epoch of the last commit
        # Each source's last committed state, and the epoch it was committed under.
        self._committed: dict[str, tuple[bytes, SourceState]] = {}

    def head_info(self) -> dict:
        """The head in service, for the api's /labels and /config/events."""
        return {"head": self.head.name, "model": model_name(self.head),
                "labels": self.head.class_names, "rules": self.tracker.rules.summary()}

    def handle(self, batch: list[bus.Delivery[Embeddings]],
               acknowledgement: bus.Acknowledgement | None = None) -> int:
        """Admit a batch into its sources' sequences, acknowledged (where it comes from the
        bus) in the same transaction; returns the number of messages written."""
        self._reload_if_replaced()
        arrivals: dict[str, list[Embeddings]] = defaultdict(list)
        for delivery in batch:
            message = delivery.message
            if message.model != self.head.embedding_model:
                raise bus.PermanentError(
                    f"head {self.head.name} scores {self.head.embedding_model} embeddings, "
                    f"got {message.model}")
            arrivals[message.source].append(message)
        return self._advance(arrivals, acknowledgement)

    def tick(self) -> None:
        """The chores: keep the detections and the events stream bounded and say which head is
        in service, now and then; move on the sources that have waited too long for a missing
        chunk (looked for every OVERDUE_CHECK_S: one round trip a turn was one per chunk at
        low load)."""
        now = time.monotonic()
        if now >= self._next_chores:
            self._next_chores = now + CHORES_INTERVAL_S
            detections.trim(self.redis, self.events_maxlen, self.shard)
            bus.trim_history(self.redis, self.shard.key(streams.EVENTS_STREAM),
                             self.shard.key(streams.EVENTS_LOST), self.events_maxlen,
                             self.events_backlog_max)
            self.redis.set(streams.HEAD_INFO, json.dumps(self.head_info()))
        if now < self._next_overdue_check:
            return
        self._next_overdue_check = now + OVERDUE_CHECK_S
        overdue = self.redis.zrangebyscore(self.shard.key(streams.REORDER_GAPS), "-inf",
                                           time.time() - self.timeout_s)
        if not overdue:
            return
        try:
            self._advance({source.decode(): [] for source in overdue})
        except redis.RedisError:
            raise
        except Exception as exc:  # a bug: the overdue sources stay as they are, the loop goes on
            log.exception("cannot move on %d overdue source(s): %s", len(overdue), exc)

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
            tracker = EventTracker(self.tracker.rules, label_tree(head.class_names),
                                   model_name(head))
        except (ModelError, RulesError) as exc:
            log.warning("head %s changed on disk but cannot be used yet: %s", self.head_spec, exc)
            return
        self.head, self.tracker = head, tracker
        log.info("reloaded head %s (%d classes)", head.name, len(head.class_names))

    def _advance(self, arrivals: dict[str, list[Embeddings]],
                 acknowledgement: bus.Acknowledgement | None = None) -> int:
        sources = sorted(arrivals)
        keys = [self.shard.key(streams.source_state_key(source)) for source in sources]
        epoch_key = self.shard.key(streams.EPOCH)
        while True:
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*keys, epoch_key)
                    # Read after the WATCH (a change since aborts the EXEC), by the client:
                    # redis-py's cluster pipelines refuse MGET.
                    *raws, epoch = self.redis.mget([*keys, epoch_key])
                    now = time.time()
                    plans = [plan(self._state(source, raw, epoch, now), arrivals[source], now,
                                  self.timeout_s)
                             for source, raw in zip(sources, raws, strict=True)]
                    scored = self._score(pipe, sources, plans)
                    writes = Writes()
                    if epoch is None:
                        epoch = secrets.token_hex(8).encode()
                        writes.add("SET", epoch_key, epoch)
                    written = self._write(writes, sources, scored)
                    if acknowledgement is not None:
                        acknowledgement.add_to(writes)
                    pipe.multi()
                    writes.queue(pipe)
                    pipe.execute()
                except redis.WatchError:
                    continue  # another replica advanced one of these sources: plan again
            self._committed_under(epoch, sources, plans)
            self._count(sources, scored, written)
            return len(written)

    def _state(self, source: str, raw: bytes | None, epoch: bytes | None, now: float
               ) -> SourceState | Plan | None:
        """The source's state in Redis; where Redis has lost it (this replica committed it
        under another epoch), the plan that resumes it from the state committed then."""
        state = SourceState.loads(raw)
        committed_epoch, last = self._committed.get(source, (None, None))
        if state is not None or last is None or committed_epoch == epoch:
            return state
        return resume_after_loss(last, now)

    def _committed_under(self, epoch: bytes, sources: list[str], plans: list[Plan]) -> None:
        if epoch != self._epoch:
            if self._epoch is not None:
                metrics.REDIS_DATA_LOST.inc()
                log.warning("redis lost its data: each source resumes from its last state "
                            "here as its chunks arrive, and its open events end")
            self._epoch = epoch
        for source, source_plan in zip(sources, plans, strict=True):
            assert source_plan.state is not None
            self._committed[source] = (epoch, source_plan.state)

    def _score(self, pipe: redis.client.Pipeline, sources: list[str], plans: list[Plan]
               ) -> list[Scored]:
        """Fetch the parked chunks each plan needs, then score every ready chunk at once."""
        scored = []
        for source, source_plan in zip(sources, plans, strict=True):
            parked = source_plan.from_buffer
            reorder = self.shard.key(streams.reorder_key(source))
            raws = pipe.hmget(reorder, parked) if parked else []
            loaded = {seq: Embeddings.decode(raw) for seq, raw in zip(parked, raws, strict=True)
                      if raw is not None}
            chunks = [source_plan.arrived.get(seq) or loaded[seq] for seq in source_plan.ready
                      if seq in source_plan.arrived or seq in loaded]
            scored.append(Scored(source_plan, chunks))
        windows, lengths = self._windows(scored)
        if len(windows):
            scores = self.head.score_windows(windows, lengths)
            first = 0
            for item in scored:
                for chunk in item.chunks:
                    item.scores.append(scores[first:first + chunk.rows])
                    first += chunk.rows
        return scored

    def _windows(self, scored: list[Scored]) -> tuple[np.ndarray, np.ndarray]:
        """Each ready patch's window of the `window` latest embeddings of its source, and the
        sources' new recent embeddings (kept in their states)."""
        size = self.head.window
        if size == 1:  # each patch alone (the AudioSet head): no history to keep
            return self._patches_alone(scored)
        windows, lengths = [], []
        for item in scored:
            state = item.plan.state
            assert state is not None
            history = [np.frombuffer(row, "<f4") for row in state.window]
            for chunk in item.chunks:
                for row in chunk.vectors():
                    history.append(row)
                    recent = history[-size:]
                    window = np.zeros((size, len(row)), np.float32)
                    window[: len(recent)] = recent
                    windows.append(window)
                    lengths.append(len(recent))
            state.window = [row.astype("<f4").tobytes() for row in history[-(size - 1):]]
        if not windows:
            return np.zeros((0, size, 0), np.float32), np.zeros(0, np.int64)
        return np.stack(windows), np.array(lengths, np.int64)

    @staticmethod
    def _patches_alone(scored: list[Scored]) -> tuple[np.ndarray, np.ndarray]:
        """Windows of one embedding: each ready patch's own."""
        blocks = []  # each chunk's rows
        for item in scored:
            assert item.plan.state is not None
            item.plan.state.window = []
            blocks += [chunk.vectors() for chunk in item.chunks]
        if not blocks:
            return np.zeros((0, 1, 0), np.float32), np.zeros(0, np.int64)
        vectors = np.concatenate(blocks)
        return vectors[:, None, :], np.ones(len(vectors), np.int64)

    def _write(self, writes: Writes, sources: list[str], scored: list[Scored]
               ) -> list[Prediction | Event]:
        written: list[Prediction | Event] = []
        states: list[SourceState] = []
        for item in scored:
            assert item.plan.state is not None
            states.append(item.plan.state)
        tracked = self.tracker.update_sources(  # the rules' numbers for every chunk at once
            [(state.track, list(zip(item.chunks, item.scores, strict=True)))
             for state, item in zip(states, scored, strict=True)])
        for source, item, state, (track, events) in zip(sources, scored, states, tracked,
                                                       strict=True):
            for ended in item.plan.ended_tracks:
                written += self.tracker.close(ended, source)
            state.track = track
            for chunk, scores, chunk_events in zip(item.chunks, item.scores, events,
                                                   strict=True):
                written += [self._prediction(chunk, scores), *chunk_events]
            self._write_state(writes, source, item.plan)
        predictions_key, events_key = (self.shard.key(name) for name in (
            streams.PREDICTIONS_STREAM, streams.EVENTS_STREAM))
        for message in written:
            if isinstance(message, Prediction):
                writes.add(*bus.xadd(predictions_key, message, self.maxlen))
            else:  # trimmed by tick()
                writes.add(*bus.xadd(events_key, message))
                detections.write(writes, message, self.shard)
        status.record(writes, [m for m in written if isinstance(m, Prediction)], self.shard)
        return written

    def _prediction(self, m: Embeddings, scores: np.ndarray) -> Prediction:
        peak = scores.max(axis=0)
        tree, count = self.tracker.tree, Prediction.TOP_LABELS
        top = specific_labels(peak, tree, count) if tree.ontology is not None \
            else top_labels(peak, tree.class_names, count)  # the dashboard's: Bark before Dog
        return Prediction(
            m.source, m.session, m.seq, m.t, m.offset, m.rms, self.head.name,
            [(name, round(score, 4)) for name, score in top], time.time(),
        )

    def _write_state(self, writes: Writes, source: str, source_plan: Plan) -> None:
        state = source_plan.state
        assert state is not None
        reorder, gaps = (self.shard.key(name) for name in (streams.reorder_key(source),
                                                          streams.REORDER_GAPS))
        if source_plan.dropped_buffers:
            writes.add("DEL", reorder)
        if source_plan.from_buffer:
            writes.add("HDEL", reorder, *source_plan.from_buffer)
        if source_plan.to_buffer:
            writes.add("HSET", reorder, *(field for m in source_plan.to_buffer
                                          for field in (m.seq, m.encode())))
            writes.add("EXPIRE", reorder, STATE_TTL_S)
        if state.gap_since is None:
            if source_plan.gap_indexed:
                writes.add("ZREM", gaps, source)
        else:
            writes.add("ZADD", gaps, state.gap_since, source)
        writes.add("SET", self.shard.key(streams.source_state_key(source)), state.dumps(),
                   "EX", STATE_TTL_S)

    @staticmethod
    def _count(sources: list[str], scored: list[Scored], written: list[Prediction | Event]
               ) -> None:
        for source, item in zip(sources, scored, strict=True):
            metrics.DUPLICATES.inc(item.plan.duplicates + item.plan.stale)
            metrics.CHUNKS_REORDERED.inc(item.plan.reordered)
            if item.plan.lost:
                metrics.CHUNKS_LOST.inc(item.plan.lost)
                log.warning("%s: %d chunk(s) never arrived; skipped", source, item.plan.lost)
        for message in written:
            if isinstance(message, Prediction):
                metrics.END_TO_END_LATENCY.observe(
                    max(0.0, message.written_at - message.t - CHUNK_SAMPLES / SAMPLE_RATE))
            else:
                metrics.EVENTS.labels(message.label, message.kind).inc()
                log.info("%s %s %s at %.2f s", message.source, message.label, message.kind,
                         message.start if message.kind == "start" else message.end)


def main(settings: ClassifierSettings) -> None:
    head = load_head(settings.head, settings.model)
    rules = Rules.load(settings.events_config)
    tree = label_tree(head.class_names)
    rules.check_labels(tree, settings.events_config)
    tracker = EventTracker(rules, tree, model_name(head))
    health = metrics.Health()
    server = metrics.serve(settings.metrics_port, health, settings.metrics_host)
    log.info("classifier: head %s (%d classes), metrics on :%d", head.name,
             len(head.class_names), server.server_port)
    topology = Topology.connect(settings, settings.block_ms)
    stopper = bus.Stopper()
    workers = []
    for shard in topology.served:
        client = topology.client(shard)
        classifier = Classifier(client, head, tracker, settings, settings.head, shard)
        workers.append(bus.Worker(settings, streams.EMBEDDINGS_STREAM, streams.CLASSIFIER_GROUP,
                                  Embeddings, classifier.handle, health, stopper, client,
                                  tick=classifier.tick, shard=shard, acknowledging=True))
    bus.run_in_turn(workers, topology.prepare_to_write)
