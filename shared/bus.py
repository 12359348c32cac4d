"""The one Redis Streams worker loop every service uses (in the spirit of arq: small on purpose).

    worker = Worker(settings, stream, group, MessageClass, handle)
    worker.run()          # until SIGTERM/SIGINT, then finishes the batch in hand and returns

Each turn of the loop:
  1. every claim interval, XAUTOCLAIM entries that have sat unacknowledged for claim_idle_s
     (a consumer died, or a batch failed) — they count one more delivery;
  2. XREADGROUP COUNT batch_size BLOCK block_ms new entries;
  3. decode each entry (shared/messages.py); a malformed one, or one delivered more than
     max_deliveries times, goes to the dead-letter stream with the reason and is acknowledged;
  4. `handle(deliveries)` returns the output messages; they are written (XADD MAXLEN ~) and the
     inputs acknowledged in one MULTI/EXEC, so an output is never lost: at-least-once.
     A handler may also write its own outputs (the classifier does, idempotently) and return [].
     If a batch fails, its entries are retried one by one so one bad entry cannot block the
     rest; a failing entry stays pending with its error kept for the dead letter's reason.
Lost connections are retried with exponential backoff (0.1 s .. 5 s); a consumer group that
vanished (Redis restarted empty) is created again.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis

from shared import metrics, streams
from shared.config import Settings
from shared.messages import DeadLetter, Message, MessageError

log = logging.getLogger("soundhive.bus")

M = TypeVar("M", bound=Message)

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError)
_INFO_INTERVAL_S = 5.0


@dataclass(frozen=True)
class Delivery(Generic[M]):
    entry_id: str
    message: M
    deliveries: int


@dataclass(frozen=True)
class Output:
    stream: str
    message: Message


Handler = Callable[[list[Delivery[M]]], list[Output]]


def connect(url: str, block_ms: int = 1000) -> redis.Redis:
    """A client whose socket timeout outlasts a blocking read; bytes in, bytes out."""
    return redis.Redis.from_url(
        url,
        socket_timeout=block_ms / 1000 + 10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


def publish(
    client: redis.Redis | redis.client.Pipeline, stream: str, message: Message, maxlen: int
) -> None:
    client.xadd(stream, {streams.MESSAGE_FIELD: message.encode()}, maxlen=maxlen,
                approximate=True)


class Backoff:
    def __init__(self, first_s: float = 0.1, max_s: float = 5.0):
        self.first_s, self.max_s = first_s, max_s
        self._next = first_s

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


class Stopper:
    """Set by SIGTERM/SIGINT (when created in the main thread) or by stop()."""

    def __init__(self) -> None:
        self._event = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("%s: finishing the work in hand, then stopping", signal.Signals(signum).name)
        self._event.set()

    def stop(self) -> None:
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)


class Worker(Generic[M]):
    def __init__(
        self,
        settings: Settings,
        stream: str,
        group: str,
        schema: type[M],
        handle: Handler[M],
        health: metrics.Health | None = None,
        stopper: Stopper | None = None,
        client: redis.Redis | None = None,
    ):
        self.settings = settings
        self.stream, self.group, self.schema, self.handle = stream, group, schema, handle
        self.health = health or metrics.Health()
        self.stopper = stopper or Stopper()
        self.redis = client or connect(settings.redis_url, settings.block_ms)
        self._service = settings.service
        self._errors_key = streams.errors_hash(group)
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_info = 0.0

    def run(self) -> None:
        backoff = Backoff()
        log.info("%s: consumer %s reading %s as group %s", self._service,
                 self.settings.consumer, self.stream, self.group)
        while not self.stopper.stopped:
            try:
                self.ensure_group()
                self.step()
                backoff.reset()
                self.health.beat()
            except CONNECTION_ERRORS as exc:
                delay = backoff.next()
                metrics.RECONNECTS.labels(self._service).inc()
                self.health.fail(f"redis unreachable: {exc}")
                log.warning("%s: redis unreachable (%s); retrying in %.1f s", self._service,
                            exc, delay)
                self._group_ready = False
                self.stopper.wait(delay)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("%s: consumer group %s is gone; creating it again", self._service,
                            self.group)
                self._group_ready = False
        log.info("%s: stopped", self._service)

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def step(self) -> None:
        """One turn: claim stale entries when due, then read and process new ones."""
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + max(1.0, self.settings.claim_idle_s / 2)
            self._process(self._claim())
        if now >= self._next_info:
            self._next_info = now + _INFO_INTERVAL_S
            self._update_lag()
        reply = self.redis.xreadgroup(
            self.group, self.settings.consumer, {self.stream: ">"},
            count=self.settings.batch_size, block=self.settings.block_ms,
        )
        entries = [(_text(eid), fields, 1) for _, items in reply or [] for eid, fields in items]
        self._process(entries)

    def _claim(self) -> list[tuple[str, dict, int]]:
        reply = self.redis.xautoclaim(
            self.stream, self.group, self.settings.consumer,
            min_idle_time=int(self.settings.claim_idle_s * 1000),
            start_id=self._claim_cursor, count=self.settings.batch_size,
        )
        next_id, claimed = reply[0], reply[1]  # Redis 7 adds the ids of deleted entries
        self._claim_cursor = _text(next_id)
        if not claimed:
            return []
        metrics.CLAIMED.labels(self._service).inc(len(claimed))
        ids = [_text(eid) for eid, _ in claimed]
        pending = self.redis.xpending_range(
            self.stream, self.group, min=ids[0], max=ids[-1], count=len(ids) * 2,
            consumername=self.settings.consumer,
        )
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        log.info("%s: claimed %d stale entries", self._service, len(ids))
        return [(eid, fields or {}, counts.get(eid, 1)) for eid, (_, fields) in zip(ids, claimed,
                                                                                    strict=True)]

    def _process(self, entries: Sequence[tuple[str, dict, int]]) -> None:
        if not entries:
            return
        metrics.MESSAGES_IN.labels(self._service).inc(len(entries))
        batch: list[Delivery[M]] = []
        for entry_id, fields, deliveries in entries:
            raw = fields.get(streams.MESSAGE_FIELD)
            if raw is None:
                self._dead_letter(entry_id, b"", deliveries, "malformed",
                                  "entry has no 'm' field")
                continue
            if deliveries > self.settings.max_deliveries:
                error = self.redis.hget(self._errors_key, entry_id)
                reason = f"failed {deliveries - 1} deliveries" + (
                    f"; last error: {error.decode()}" if error else "")
                self._dead_letter(entry_id, raw, deliveries, "failed", reason)
                continue
            try:
                batch.append(Delivery(entry_id, self.schema.decode(raw), deliveries))
            except MessageError as exc:
                self._dead_letter(entry_id, raw, deliveries, "malformed", str(exc))
        if not batch:
            return
        try:
            self._handle(batch)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:
            if len(batch) == 1:
                self._failed(batch[0], exc)
                return
            log.warning("%s: batch of %d failed (%s); retrying one by one", self._service,
                        len(batch), _one_line(exc))
            for delivery in batch:
                try:
                    self._handle([delivery])
                except CONNECTION_ERRORS:
                    raise
                except Exception as single_exc:
                    self._failed(delivery, single_exc)

    def _handle(self, batch: list[Delivery[M]]) -> None:
        started = time.perf_counter()
        outputs = self.handle(batch)
        with self.redis.pipeline(transaction=True) as pipe:
            for output in outputs:
                publish(pipe, output.stream, output.message, self.settings.stream_maxlen)
            ids = [d.entry_id for d in batch]
            pipe.xack(self.stream, self.group, *ids)
            if any(d.deliveries > 1 for d in batch):
                pipe.hdel(self._errors_key, *ids)
            pipe.execute()
        metrics.MESSAGES_OUT.labels(self._service).inc(len(outputs))
        metrics.BATCH_SIZE.labels(self._service).observe(len(batch))
        metrics.PROCESSING_SECONDS.labels(self._service).observe(time.perf_counter() - started)

    def _failed(self, delivery: Delivery[M], exc: Exception) -> None:
        metrics.MESSAGES_FAILED.labels(self._service).inc()
        reason = _one_line(exc)
        log.warning("%s: entry %s (delivery %d) failed: %s", self._service, delivery.entry_id,
                    delivery.deliveries, reason)
        self.redis.hset(self._errors_key, delivery.entry_id, reason)

    def _dead_letter(self, entry_id: str, raw: bytes, deliveries: int, kind: str,
                     reason: str) -> None:
        log.warning("%s: entry %s dead-lettered: %s", self._service, entry_id, reason)
        letter = DeadLetter.now(self.stream, self.group, entry_id, reason, deliveries, raw)
        with self.redis.pipeline(transaction=True) as pipe:
            publish(pipe, streams.DEADLETTER_STREAM, letter, self.settings.stream_maxlen)
            pipe.xack(self.stream, self.group, entry_id)
            pipe.hdel(self._errors_key, entry_id)
            pipe.execute()
        metrics.DEAD_LETTERS.labels(self._service, kind).inc()

    def _update_lag(self) -> None:
        for info in self.redis.xinfo_groups(self.stream):
            if _text(info["name"]) == self.group:
                metrics.PENDING.labels(self._service).set(info["pending"])
                if info.get("lag") is not None:
                    metrics.STREAM_LAG.labels(self._service).set(info["lag"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
