"""Capture service: sources -> gapless 16 kHz mono int16 PCM chunks on the PCM stream.

Each source runs in its own thread, except HTTP(S) MP3/AAC streams, which one hub thread
reads together (services/capture/hub.py), and is cut into self-contained chunks (layout in
shared/messages.py). One publisher thread writes them to Redis, never more than the pipeline
reads: while the features group is SOUNDHIVE_BACKLOG_MAX chunks behind (or Redis is away), chunks
wait in a bounded queue (MAX_QUEUED_CHUNKS). Files then wait too (back-pressure: a file of any
length gives exactly one prediction per chunk, read block by block in bounded memory); live
sources (microphones, network streams) cannot wait: past MAX_QUEUED_LIVE chunks of a source
queued, its oldest audio is dropped and counted in soundhive_audio_dropped_seconds_total
{reason=backlog|redis} (and what a stop leaves unwritten: reason=shutdown). Sequence numbers
are given as chunks are written, so a dropped chunk leaves no hole in a source's sequence.
With several shards (SOUNDHIVE_SHARDS) each source's chunks go to its shard's audio stream
(streams.shard_for), and the bound is that of the shard furthest behind.

A source that fails for now (unplugged device, unreachable server) is marked `retrying` and
retried with backoff (up to 30 s); one that can never be read (missing, empty, truncated or not
audio) is marked `failed` with the reason, once. The others go on. The service exits when every
source has ended (files, finished streams) or on SIGTERM/SIGINT: 0, or 1 when a source failed.
Files and network streams are paced in real time, or taken as fast as the pipeline takes them
with `fast` (which also treats a network stream as a recording that waits rather than drops).
`save_path` keeps each source's captured audio as WAV files. Metrics on :9101 by default.
"""

import logging
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np
import redis
import soundfile
from redis.backoff import EqualJitterBackoff

from services.capture.hub import Hub
from services.capture.hub import accepts as hub_accepts
from services.capture.settings import CaptureSettings
from services.capture.sources import SourceGone, SourceSpec, parse_sources
from shared import bus, metrics, params, streams
from shared.config import ConfigError
from shared.errors import one_line
from shared.messages import (
    CHUNK_HOP_SAMPLES,
    CHUNK_HOP_SECONDS,
    CHUNK_SAMPLES,
    Message,
    PcmChunk,
    SourceStatus,
)
from shared.redact import redact
from shared.topology import Topology

log = logging.getLogger("soundhive.capture")

MAX_QUEUED_CHUNKS = 500  # about 23 MB of audio waiting for Redis or the pipeline
MAX_QUEUED_LIVE = 8  # chunks of one live source that may wait (about 8 s) before drops begin
RETRY_MAX_S = 30.0
PUBLISH_BATCH = 64
HOLD_POLL_S = 0.2
# Each write costs Redis round trips (the backlog check, the pipeline), and many sources woke
# the publisher for nearly every chunk: chunks gather this long between writes (a chunk
# waits at most this much more; at 100 streams the publisher's CPU falls from 3-6 % to 2 %).
GATHER_S = 0.05
CHUNK_SECONDS = CHUNK_SAMPLES / params.SAMPLE_RATE


class Chunker:
    """Cuts a stream of blocks into overlapping CHUNK_SAMPLES chunks every CHUNK_HOP_SAMPLES."""

    def __init__(self) -> None:
        self._buffer = np.empty(0, np.float32)
        self.start = 0  # sample index of the buffer's first sample

    def push(self, block: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        self._buffer = np.concatenate([self._buffer, block])
        while len(self._buffer) >= CHUNK_SAMPLES:
            yield self.start, self._buffer[:CHUNK_SAMPLES].copy()
            self._buffer = self._buffer[CHUNK_HOP_SAMPLES:]
            self.start += CHUNK_HOP_SAMPLES

    def finish(self) -> tuple[int, np.ndarray] | None:
        """The rest, zero-padded to a whole chunk (None when nothing is left)."""
        if not len(self._buffer):
            return None
        return self.start, np.pad(self._buffer, (0, CHUNK_SAMPLES - len(self._buffer)))


@dataclass(frozen=True)
class Queued:
    chunk: PcmChunk  # its seq is given when it is written
    live: bool
    stamp_on_write: bool  # fast replay: its capture time is when it is written


class Publisher:
    """The bounded queue between sources and Redis, and the thread that drains it into the audio
    stream no faster than the features group reads it. A subclass may send each chunk as
    another message (`message`) to another stream (edge mode: services/edge)."""

    stream = streams.PCM_STREAM
    reader_group = streams.FEATURES_GROUP  # whose backlog bounds the stream

    def __init__(self, settings: CaptureSettings, health: metrics.Health, stopper: bus.Stopper):
        self.settings, self.health, self.stopper = settings, health, stopper
        self.topology = Topology.connect(settings)
        self._queue: deque[Queued] = deque()
        self._queued_live: dict[str, int] = {}
        self._in_hand: list[Queued] = []  # taken from the queue, numbered, not yet written
        self._status: dict[str, SourceStatus] = {}
        self._next_seq: dict[tuple[str, str], int] = {}
        self._cond = threading.Condition()
        self._closing = False
        # Why chunks wait, while they do: "backlog" (the pipeline is behind) or "redis".
        self._holding_for: str | None = "redis"  # until the shard count is checked
        self.config_error: ConfigError | None = None  # the shard count refused: it stops
        self.dropped_seconds: Counter[str] = Counter()  # by reason, as the metric
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        health.watch(self._thread.is_alive, "the publisher thread died")
        self._thread.start()

    def put(self, chunk: PcmChunk, live: bool, stamp_on_write: bool = False) -> None:
        """Queue a chunk. A file's chunk waits for room; a live one, while the publisher holds
        back, makes room by dropping its source's oldest queued chunk past MAX_QUEUED_LIVE (a
        burst while all is well only queues)."""
        with self._cond:
            if live:
                if self._holding_for and self._queued_live.get(chunk.source, 0) >= MAX_QUEUED_LIVE:
                    self._drop_oldest_live(chunk.source)
                while len(self._queue) >= MAX_QUEUED_CHUNKS and self._drop_oldest_live():
                    pass
                self._queued_live[chunk.source] = self._queued_live.get(chunk.source, 0) + 1
            else:
                while len(self._queue) >= MAX_QUEUED_CHUNKS and not self.stopper.stopped:
                    self._cond.wait(HOLD_POLL_S)
            self._queue.append(Queued(chunk, live, stamp_on_write))
            self._cond.notify_all()

    def _drop_oldest_live(self, source: str | None = None) -> bool:
        """Drop the oldest queued live chunk (of `source`, or of any live source)."""
        oldest = next((q for q in self._queue
                       if q.live and source in (None, q.chunk.source)), None)
        if oldest is None:
            return False
        self._queue.remove(oldest)
        self._queued_live[oldest.chunk.source] -= 1
        self._count_dropped(oldest.chunk.source, self._holding_for or "backlog")
        return True

    def _count_dropped(self, source: str, reason: str) -> None:
        metrics.AUDIO_DROPPED_SECONDS.labels(source, reason).inc(CHUNK_HOP_SECONDS)
        self.dropped_seconds[reason] += CHUNK_HOP_SECONDS

    def status(self, source: str, state: str, detail: str = "", rms: float = 0.0,
               seq: int = -1) -> None:
        with self._cond:
            self._status[source] = SourceStatus(source, state, detail, rms, seq, time.time())
            self._cond.notify_all()

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued: files' audio however long Redis and the pipeline take,
        unless the service is being stopped (a signal); live audio, or anything once stopped,
        for up to timeout_s. What is still unwritten then is counted as dropped (`shutdown`)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None
        while self._thread.is_alive():
            self._thread.join(HOLD_POLL_S)
            if self.stopper.stopped or not self._file_audio_left():
                deadline = deadline or time.monotonic() + timeout_s
                if time.monotonic() > deadline:
                    break
        with self._cond:
            for queued in [*self._in_hand, *self._queue]:
                self._count_dropped(queued.chunk.source, "shutdown")
            self._queue.clear()
            self._in_hand = []
        if self.dropped_seconds:
            log.warning("capture: dropped %.1f s of audio (%s)", sum(
                self.dropped_seconds.values()), ", ".join(
                f"{reason} {seconds:.1f} s" for reason, seconds in self.dropped_seconds.items()))

    def _file_audio_left(self) -> bool:
        with self._cond:
            return any(not q.live for q in [*self._in_hand, *self._queue])

    def _run(self) -> None:
        weather = bus.Weather("capture", self.health)
        try:
            bus.persist(self.topology.claim_shard_count, self.stopper, weather)
        except ConfigError as exc:
            self.config_error = exc
            self.stopper.stop()
            return
        self._holding_for = None
        statuses: dict[str, SourceStatus] = {}
        while True:
            with self._cond:
                if not (self._in_hand or self._queue or self._status):
                    if self._closing:
                        return
                    self._cond.wait(1.0)
            try:
                room = self._room() - len(self._in_hand)
                with self._cond:
                    self._in_hand += self._take(room)
                    statuses.update(self._status)
                    self._status.clear()
                self._write([q.chunk for q in self._in_hand], statuses)
                with self._cond:
                    self._in_hand, statuses = [], {}
                weather.clear()
                self._holding_for = "backlog" if room <= 0 else None
                self.health.beat()
                if room <= 0:
                    self.stopper.wait(HOLD_POLL_S)
                else:
                    self._gather()
            except redis.RedisError as exc:
                self._holding_for = "redis"
                time.sleep(weather.hit(exc))

    def _gather(self) -> None:
        """Let up to GATHER_S of chunks come in before the next write (unless a batch is
        already waiting): one round of Redis calls for several chunks, not one per chunk."""
        with self._cond:
            if self._closing or len(self._queue) >= PUBLISH_BATCH:
                return
        self.stopper.wait(GATHER_S)

    def messages(self, chunks: list[PcmChunk]) -> list[Message]:
        """What goes to the stream for each chunk: the chunk itself."""
        return list(chunks)

    def _room(self) -> int:
        """How many chunks the streams take now: their reader group's backlog bound, on the
        shard furthest behind."""
        if not self._queue:
            return PUBLISH_BATCH
        unread = max(bus.backlog(self.topology.client(shard), shard.key(self.stream),
                                 self.reader_group) for shard in self.topology.every)
        return min(PUBLISH_BATCH, self.settings.backlog_max - unread)

    def _take(self, count: int) -> list[Queued]:
        """Up to `count` queued chunks, numbered in their source's sequence."""
        taken = []
        while self._queue and len(taken) < count:
            queued = self._queue.popleft()
            chunk = queued.chunk
            if queued.live:
                self._queued_live[chunk.source] -= 1
            key = (chunk.source, chunk.session)
            seq = self._next_seq.get(key, 0)
            self._next_seq[key] = seq + 1
            t = time.time() - CHUNK_SECONDS if queued.stamp_on_write else chunk.t
            taken.append(replace(queued, chunk=msgspec.structs.replace(chunk, seq=seq, t=t)))
        if taken:
            self._cond.notify_all()
        return taken

    def _write(self, chunks: list[PcmChunk], statuses: dict[str, SourceStatus]) -> None:
        if not (chunks or statuses):
            return
        pipes = {id(server): server.pipeline(transaction=False)
                 for server in self.topology.servers}
        for chunk, message in zip(chunks, self.messages(chunks) if chunks else [], strict=True):
            shard = streams.shard_for(chunk.source, self.topology.count)
            bus.publish(pipes[id(self.topology.client(shard))], shard.key(self.stream), message)
        home = pipes[id(self.topology.home)]
        for status in statuses.values():
            home.hset(streams.SOURCES_HASH, status.source, status.encode())
        for pipe in pipes.values():
            with pipe:
                pipe.execute()
        for chunk in chunks:
            metrics.CHUNKS_PUBLISHED.labels(chunk.source).inc()


class SourceRunner:
    """One source: its session, its statuses and its retries. Run in a thread of its own
    (`thread`), or driven by a hub (services/capture/hub.py) through the same hooks."""

    def __init__(self, spec: SourceSpec, publisher: Publisher, stopper: bus.Stopper, fast: bool,
                 save_path: Path | None):
        self.spec, self.publisher, self.stopper = spec, publisher, stopper
        self.fast, self.save_path = fast, save_path
        # --fast treats any source as a recording: as fast as the pipeline takes it, no drops.
        self.live = spec.live and not fast
        self.session = uuid.uuid4().hex[:12]
        self.session_start: float | None = None  # its first attempt's start
        self._attempt_start = 0.0
        self.chunks = 0
        self.rms = 0.0
        self.failed = False
        self.failures = 0  # attempts that failed, this session
        self._backoff = EqualJitterBackoff(cap=RETRY_MAX_S, base=0.5)
        self.thread = threading.Thread(target=self.run, name=f"source {spec.id}", daemon=True)
        metrics.start_at_zero(metrics.CHUNKS_PUBLISHED, [spec.id])
        metrics.start_at_zero(metrics.AUDIO_DROPPED_SECONDS, [spec.id], metrics.DROP_REASONS)
        metrics.start_at_zero(metrics.SOURCE_ERRORS, [spec.id], metrics.SOURCE_ERROR_KINDS)

    def run(self) -> None:
        while not self.stopper.stopped:
            self.starting()
            try:
                self._capture()
            except SourceGone as exc:
                self.gone(exc)
                return
            except Exception as exc:
                self.stopper.wait(self.retrying(exc))
                continue
            if not self.stopper.stopped:
                self.finished()
            return

    def starting(self) -> None:
        """An attempt begins (before the source is opened)."""
        self._attempt_start = time.time()
        self.session_start = self.session_start or self._attempt_start
        self.publisher.status(self.spec.id, "running", rms=self.rms, seq=self.chunks - 1)

    def finished(self) -> None:
        self.publisher.status(self.spec.id, "finished", rms=self.rms, seq=self.chunks - 1)
        log.info("capture: %s finished (%d chunks)", self.spec.id, self.chunks)

    def gone(self, exc: Exception) -> None:
        """The source can never be read: reported once."""
        self.failed = True
        metrics.SOURCE_ERRORS.labels(self.spec.id, "permanent").inc()
        self.publisher.status(self.spec.id, "failed", _reason(exc), seq=self.chunks - 1)
        log.error("capture: source %s failed: %s", self.spec.id, _reason(exc))

    def retrying(self, exc: Exception) -> float:
        """The source failed for now: reported; the seconds to wait before the next try."""
        self.failures += 1
        delay = self._backoff.compute(self.failures)
        metrics.SOURCE_ERRORS.labels(self.spec.id, "transient").inc()
        self.publisher.status(self.spec.id, "retrying", _reason(exc), seq=self.chunks - 1)
        log.warning("capture: source %s failed: %s; retrying in %.0f s", self.spec.id,
                    _reason(exc), delay)
        return delay

    def recording(self) -> "Recording":
        """The attempt's Recording: a live source's offsets go on from its session's start."""
        assert self.session_start is not None, "a recording belongs to an attempt"
        offset0 = self._attempt_start - self.session_start if self.spec.live else 0.0
        return Recording(self, offset0)

    def _capture(self) -> None:
        """Chunk the source's blocks, paced in real time unless --fast (a microphone paces
        itself); the last chunk is flagged when it ends (or is stopped), also when a file turns
        out truncated after some audio (then SourceGone follows)."""
        paced = self.spec.kind != "mic" and not self.fast
        with self.recording() as recording:
            for block in self.spec.blocks():
                if self.stopper.stopped:
                    break
                due = recording.arrived(len(block))
                if paced:
                    self.stopper.wait(due - time.time())
                recording.add(block)

    def emit(self, start: int, samples: np.ndarray, clock: float, offset0: float,
             last: bool) -> None:
        chunk = PcmChunk.from_samples(self.spec.id, self.session, -1,
                                      clock + start / params.SAMPLE_RATE,
                                      offset0 + start / params.SAMPLE_RATE, samples, last)
        self.publisher.put(chunk, self.live, stamp_on_write=self.fast)
        self.publisher.status(self.spec.id, "running", rms=chunk.rms, seq=self.chunks)
        metrics.SOURCE_LEVEL.labels(self.spec.id).set(chunk.rms)
        self.chunks += 1
        self.rms = chunk.rms


class Recording(AbstractContextManager):
    """One attempt at a source: its blocks cut into chunks stamped from the wall time of its
    first sample (`clock`), queued, kept as WAV with save_path; on exit the rest goes as the
    last chunk. A block `arrived` is due (heard, in real time) at the time that returns, and
    is then `add`ed: at once, or when due where the source is paced."""

    def __init__(self, runner: SourceRunner, offset0: float):
        self.runner, self.offset0 = runner, offset0
        self.chunker = Chunker()
        self.clock: float | None = None
        self.received = 0  # samples
        self._wav: soundfile.SoundFile | None = None

    def __enter__(self) -> "Recording":
        self._wav = self._open_wav()
        return self

    def arrived(self, samples: int) -> float:
        """Count a block of `samples` received now; the wall time when it is due."""
        if self.clock is None:
            self.clock = time.time() - samples / params.SAMPLE_RATE
        self.received += samples
        return self.clock + self.received / params.SAMPLE_RATE

    def add(self, block: np.ndarray) -> None:
        assert self.clock is not None, "a block is added after it arrived"
        if self._wav is not None:
            self._wav.write(block)
        for start, samples in self.chunker.push(block):
            self.runner.emit(start, samples, self.clock, self.offset0, last=False)

    def __exit__(self, *exc_info: object) -> None:
        try:
            rest = self.chunker.finish()
            if rest is not None and self.clock is not None:
                self.runner.emit(*rest, self.clock, self.offset0, last=True)
        finally:
            if self._wav is not None:
                self._wav.close()

    def _open_wav(self) -> soundfile.SoundFile | None:
        save_path, spec = self.runner.save_path, self.runner.spec
        if save_path is None:
            return None
        save_path.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.id).strip("_") or "source"
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return soundfile.SoundFile(save_path / f"{name}-{stamp}-{self.runner.session}.wav", "w",
                                   params.SAMPLE_RATE, 1, "PCM_16")


def _reason(exc: Exception) -> str:
    """A source's failure as its status shows it: one line, any URL in it redacted (an
    unexpected error's message may hold the source's URL with its password)."""
    return redact(one_line(exc))


def main(settings: CaptureSettings, publisher_class: type[Publisher] = Publisher) -> int:
    """Run every source until it ends or the service is stopped; 1 when a source failed."""
    specs = settings.share(parse_sources(list(settings.sources)))
    health = metrics.Health()
    server = metrics.serve(settings.metrics_port, health, settings.metrics_host)
    stopper = bus.Stopper()
    publisher = publisher_class(settings, health, stopper)
    runners = [SourceRunner(spec, publisher, stopper, settings.fast, settings.save_path)
               for spec in specs]
    hub_runners = [runner for runner in runners if settings.hub and runner.spec.kind == "url"
                   and hub_accepts(runner.spec.target, settings.fast)]
    hub = None
    if hub_runners:
        hub = Hub(stopper, health, hand_back=lambda runner: runner.thread.start())
        for runner in hub_runners:
            hub.add(runner)
        hub.start()
    log.info("capture: %d source(s) (%d read by the hub), metrics on :%d", len(runners),
             len(hub_runners), server.server_port)
    in_hub = set(hub_runners)
    for runner in runners:
        if runner not in in_hub:
            runner.thread.start()
    while (hub is not None and hub.alive()) or any(r.thread.is_alive() for r in runners):
        time.sleep(0.5)
    publisher.close()
    if publisher.config_error is not None:
        raise publisher.config_error
    failed = [runner.spec.id for runner in runners if runner.failed]
    log.info("capture: stopped%s", f"; failed: {', '.join(failed)}" if failed else "")
    return 1 if failed or (hub is not None and hub.crashed) else 0
