"""Capture service: sources -> gapless 16 kHz mono int16 PCM chunks on the PCM stream.

Each source runs in its own thread and is cut into self-contained chunks (layout in
shared/messages.py). One publisher thread writes chunks to Redis; while Redis is slow or away
they wait in a bounded queue (MAX_QUEUED_CHUNKS), and overflow drops the oldest audio, counted in
soundhive_audio_dropped_seconds_total. A failing source (missing file, unplugged device, broken
stream) is logged, marked `retrying` in the sources hash and retried with backoff (up to 30 s);
the others go on. Files are replayed in real time, or as fast as possible with `fast`.
`save_path` keeps each source's captured audio as WAV files. Metrics on :9101 by default.
"""

import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile

from services.capture.sources import SourceSpec
from shared import bus, metrics, params, streams
from shared.config import Settings
from shared.messages import (
    CHUNK_HOP_SAMPLES,
    CHUNK_HOP_SECONDS,
    CHUNK_SAMPLES,
    PcmChunk,
    SourceStatus,
)

log = logging.getLogger("soundhive.capture")

MAX_QUEUED_CHUNKS = 500  # about 23 MB of audio waiting for Redis
RETRY_MAX_S = 30.0
PUBLISH_BATCH = 64


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


class Publisher:
    """The bounded queue between sources and Redis, and the thread that drains it."""

    def __init__(self, settings: Settings, health: metrics.Health):
        self.settings, self.health = settings, health
        self.redis = bus.connect(settings.redis_url)
        self._queue: deque[PcmChunk] = deque()
        self._status: dict[str, SourceStatus] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def put(self, chunk: PcmChunk) -> None:
        with self._cond:
            if len(self._queue) >= MAX_QUEUED_CHUNKS:
                dropped = self._queue.popleft()
                metrics.AUDIO_DROPPED_SECONDS.labels(dropped.source).inc(CHUNK_HOP_SECONDS)
            self._queue.append(chunk)
            self._cond.notify()

    def status(self, source: str, state: str, detail: str = "", rms: float = 0.0,
               seq: int = -1) -> None:
        with self._cond:
            self._status[source] = SourceStatus(source, state, detail, rms, seq, time.time())
            self._cond.notify()

    def close(self, timeout_s: float = 30.0) -> None:
        """Publish what is queued (waiting up to timeout_s for Redis), then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff = bus.Backoff()
        chunks: list[PcmChunk] = []
        statuses: dict[str, SourceStatus] = {}
        while True:
            with self._cond:
                while not (self._queue or self._status or chunks or statuses or self._closing):
                    self._cond.wait()
                while self._queue and len(chunks) < PUBLISH_BATCH:
                    chunks.append(self._queue.popleft())
                statuses.update(self._status)
                self._status.clear()
                if self._closing and not (chunks or statuses or self._queue):
                    return
            try:
                self._write(chunks, statuses)
                chunks, statuses = [], {}
                backoff.reset()
                self.health.beat()
            except bus.CONNECTION_ERRORS as exc:
                delay = backoff.next()
                metrics.RECONNECTS.labels("capture").inc()
                self.health.fail(f"redis unreachable: {exc}")
                log.warning("capture: redis unreachable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)

    def _write(self, chunks: list[PcmChunk], statuses: dict[str, SourceStatus]) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for chunk in chunks:
                bus.publish(pipe, streams.PCM_STREAM, chunk, self.settings.pcm_maxlen)
            for status in statuses.values():
                pipe.hset(streams.SOURCES_HASH, status.source, status.encode())
            pipe.execute()
        for chunk in chunks:
            metrics.CHUNKS_PUBLISHED.labels(chunk.source).inc()


class SourceRunner:
    """Runs one source until it ends (files) or the service stops, retrying failures."""

    def __init__(self, spec: SourceSpec, publisher: Publisher, stopper: bus.Stopper, fast: bool,
                 save_path: Path | None):
        self.spec, self.publisher, self.stopper = spec, publisher, stopper
        self.fast, self.save_path = fast, save_path
        self.session = uuid.uuid4().hex[:12]
        self.seq = 0
        self.rms = 0.0
        self.thread = threading.Thread(target=self.run, name=f"source {spec.id}", daemon=True)

    def run(self) -> None:
        backoff = bus.Backoff(first_s=1.0, max_s=RETRY_MAX_S)
        session_start = time.time()
        while not self.stopper.stopped:
            self.publisher.status(self.spec.id, "running", rms=self.rms, seq=self.seq - 1)
            try:
                self._capture(offset0=0.0 if self.fast else time.time() - session_start)
                if self.spec.finite:
                    self.publisher.status(self.spec.id, "finished", rms=self.rms, seq=self.seq - 1)
                    log.info("capture: %s finished (%d chunks)", self.spec.id, self.seq)
                    return
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                delay = backoff.next()
                metrics.SOURCE_ERRORS.labels(self.spec.id).inc()
                self.publisher.status(self.spec.id, "retrying", reason, seq=self.seq - 1)
                log.warning("capture: source %s failed: %s; retrying in %.0f s", self.spec.id,
                            reason, delay)
                self.stopper.wait(delay)

    def _capture(self, offset0: float) -> None:
        chunker = Chunker()
        started = time.time()
        received = 0
        with self._wav_writer() as wav:
            for block in self.spec.blocks():
                if self.stopper.stopped:
                    break
                if wav is not None:
                    wav.write(block)
                received += len(block)
                for start, samples in chunker.push(block):
                    self._emit(start, samples, started, offset0, last=False)
                if not self.fast:
                    ahead = started + received / params.SAMPLE_RATE - time.time()
                    if ahead > 0:
                        self.stopper.wait(ahead)
            rest = chunker.finish()
            if rest is not None and (self.spec.finite or self.stopper.stopped):
                self._emit(*rest, started, offset0, last=True)

    def _emit(self, start: int, samples: np.ndarray, started: float, offset0: float,
              last: bool) -> None:
        t = (started + start / params.SAMPLE_RATE if not self.fast
             else time.time() - CHUNK_SAMPLES / params.SAMPLE_RATE)
        chunk = PcmChunk.from_samples(self.spec.id, self.session, self.seq, t,
                                      offset0 + start / params.SAMPLE_RATE, samples, last)
        self.publisher.put(chunk)
        self.publisher.status(self.spec.id, "running", rms=chunk.rms, seq=self.seq)
        metrics.SOURCE_LEVEL.labels(self.spec.id).set(chunk.rms)
        self.seq += 1
        self.rms = chunk.rms

    def _wav_writer(self) -> AbstractContextManager[soundfile.SoundFile | None]:
        if self.save_path is None:
            return nullcontext()
        self.save_path.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.spec.id).strip("_") or "source"
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = self.save_path / f"{name}-{stamp}-{self.session}.wav"
        return soundfile.SoundFile(path, "w", params.SAMPLE_RATE, 1, "PCM_16")


def main(settings: Settings, specs: list[SourceSpec], fast: bool = False,
         save_path: Path | None = None) -> None:
    health = metrics.Health(stale_after_s=float("inf"))
    server = metrics.serve(settings.metrics_port, health)
    stopper = bus.Stopper()
    publisher = Publisher(settings, health)
    runners = [SourceRunner(spec, publisher, stopper, fast, save_path) for spec in specs]
    log.info("capture: %d source(s), metrics on :%d", len(runners), server.server_port)
    for runner in runners:
        runner.thread.start()
    for runner in runners:
        while runner.thread.is_alive():
            runner.thread.join(0.5)
    publisher.close()
    log.info("capture: stopped")
