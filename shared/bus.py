"""The one Redis Streams worker loop every service uses (in the spirit of arq: small on purpose).

    worker = Worker(settings, stream, group, MessageClass, handle)
    worker.run()          # until SIGTERM/SIGINT, then finishes the batch in hand and returns
    run_in_turn([worker_of_shard_0, worker_of_shard_3, ...])   # several shards, one thread

A worker serves one shard (shared/streams.py) of its stream: it reads, acknowledges, claims,
dead-letters and writes its outputs in that shard's keys, so each transaction stays in one
shard (one Redis Cluster slot). run_in_turn serves several shards from one thread, one turn
of each in turn, their blocking reads sharing block_ms; one shard's Redis trouble holds back
only that shard's turns.

Each turn of the loop:
  1. every claim interval, XAUTOCLAIM entries idle for claim_idle_s: a dead consumer's work, or
     an entry whose processing failed. A live consumer never loses its batch that way however
     long it takes: a lease thread renews its in-flight entries (XCLAIM JUSTID resets their idle
     time) every claim_idle_s / 4, so takeover is quick and never doubles a slow worker's work;
  2. unless the output stream's backlog is past its bound (back-pressure: nothing piles up
     downstream of a stalled consumer; looked at every _BACKLOG_CHECK_S), XREADGROUP COUNT
     batch_size BLOCK block_ms new entries;
  3. decode each entry (shared/messages.py); a malformed one, or one delivered more than
     max_deliveries times, goes to the dead-letter stream with the reason and is acknowledged;
  4. `handle(deliveries)` returns the output messages; they are written and the inputs
     acknowledged in one transaction, the acknowledgement last (shared/writes.py), so an
     output is never lost: at-least-once. A handler may
     write its own outputs and return a count instead; one that writes them in a transaction
     of its own (the classifier: `acknowledging`) is given the batch's Acknowledgement to
     add to it, so outputs and acknowledgement commit together in one round trip.
     A batch that raises is retried one by one; an entry raising PermanentError (a message this
     service can never use) is dead-lettered at once, any other error leaves it pending to be
     retried after claim_idle_s, up to max_deliveries. A handler interrupted by the stop
     (Interrupted: a notifier sink waiting for its destination) is no failure: its batch is
     released at once for the next consumer, that delivery not counted;
  5. trim the input stream, if it is a pipeline stream (streams.CONSUMER_GROUPS, not a history
     such as the events), of what every consumer group has acknowledged (never an unread or
     pending entry: a dead consumer's work survives until it is claimed).
Redis trouble (unreachable, restarted empty, stream or group deleted, out of memory, read-only
replica) is weather, not death: logged once when it starts and once when it clears, retried
with exponential backoff and jitter up to 2 s (redis-py's EqualJitterBackoff); a batch in hand
is kept and retried, so outages do not count towards max_deliveries.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis
from redis.backoff import EqualJitterBackoff

from shared import metrics, streams
from shared.config import Settings
from shared.errors import one_line
from shared.messages import DeadLetter, Message, MessageError
from shared.writes import Writes

log = logging.getLogger("soundhive.bus")

M = TypeVar("M", bound=Message)

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError)
# Redis turning this client away: a wrong user or password (an AuthenticationError is also a
# ConnectionError), or a command its ACL user may not run. Waited out as other trouble (an ACL
# change applies at once), but named as what it is.
REFUSALS = (redis.AuthenticationError, redis.exceptions.NoPermissionError)
# A command of a script (shared/writes.py) its ACL user may not run: a plain error reply.
_SCRIPT_REFUSAL = "The user executing the script can't run this command"
_TRIM_INTERVAL_S = 1.0
_BACKPRESSURE_WAIT_S = 0.2
# The output's backlog is looked at no more often than this: at low load a turn is one entry,
# and a look each turn was a round trip per entry. A bound thousands of entries deep moves by a
# few entries in that time.
_BACKLOG_CHECK_S = 0.1


class PermanentError(Exception):
    """A message this service can never use: dead-lettered at once, not retried."""


class Interrupted(Exception):
    """The service is stopping while the handler waits with the batch in hand: the batch stays
    pending, released for the next consumer without counting the interrupted delivery."""


@dataclass(frozen=True)
class Delivery(Generic[M]):
    entry_id: str
    message: M
    deliveries: int


@dataclass(frozen=True)
class Output:
    stream: str
    message: Message


@dataclass(frozen=True)
class Acknowledgement:
    """What acknowledges a batch: XACK of its entries, and their failure notes deleted where
    an earlier delivery of one failed."""

    stream: str
    group: str
    errors_key: str
    ids: tuple[str, ...]
    redelivered: bool

    def add_to(self, writes: Writes) -> None:
        """As the last of a transaction's writes: a write that fails before it leaves the batch
        pending, to be delivered again (shared/writes.py)."""
        writes.add("XACK", self.stream, self.group, *self.ids)
        if self.redelivered:
            writes.add("HDEL", self.errors_key, *self.ids)


Handler = Callable[[list[Delivery[M]]], list[Output] | int]
# Writes its outputs in its own transaction, the Acknowledgement added last; returns a count.
AcknowledgingHandler = Callable[[list[Delivery[M]], Acknowledgement], int]


def connect(url: str, block_ms: int = 1000) -> redis.Redis:
    """A client whose socket timeout outlasts a blocking read; bytes in, bytes out."""
    return redis.Redis.from_url(
        url,
        socket_timeout=block_ms / 1000 + 10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


def publish(client: redis.Redis | redis.client.Pipeline, stream: str, message: Message,
            maxlen: int | None = None) -> None:
    """XADD one message (xadd() says how)."""
    client.execute_command(*xadd(stream, message, maxlen))


def xadd(stream: str, message: Message, maxlen: int | None = None) -> tuple:
    """The XADD of one message, as a command's arguments (for a client or shared/writes.py).
    Pipeline streams get no maxlen: their consumers trim them (trim_acknowledged), and so does
    the events stream: its writer trims it (trim_history); other history streams are capped at
    maxlen, approximately (whole radix-tree nodes at a time)."""
    bound = () if maxlen is None else ("MAXLEN", "~", maxlen)
    return ("XADD", stream, *bound, "*", streams.MESSAGE_FIELD, message.encode())


def weather(exc: BaseException) -> str | None:
    """The kind of Redis trouble to wait out, or None for an error that is not Redis's."""
    if isinstance(exc, REFUSALS) or _SCRIPT_REFUSAL in str(exc):
        return "refused"
    if isinstance(exc, CONNECTION_ERRORS):
        return "unreachable"
    if not isinstance(exc, redis.RedisError):
        return None
    text = str(exc)
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM" in text:
        return "out of memory"
    if isinstance(exc, redis.exceptions.ReadOnlyError) or "READONLY" in text:
        return "read-only replica"
    if any(code in text for code in ("NOGROUP", "UNBLOCKED", "no such key")):
        return "stream or group gone"
    if any(code in text for code in ("MASTERDOWN", "TRYAGAIN", "MISCONF", "NOREPLICAS",
                                     "LOADING", "CLUSTERDOWN")):
        return "unavailable"
    return None


class Weather:
    """Waits out Redis trouble: logs a kind of trouble once when it starts and once when it
    clears, counts every failed try, and gives the backoff before the next one."""

    def __init__(self, service: str, health: metrics.Health, part: str = ""):
        """`part`: what of the process meets the trouble (a shard), for its readiness."""
        self.service, self.health, self.part = service, health, part
        metrics.start_at_zero(metrics.REDIS_ERRORS, [service], metrics.REDIS_ERROR_KINDS)
        self._backoff = EqualJitterBackoff(cap=2.0, base=0.1)
        self._failures = 0
        self._kind: str | None = None
        self._since = 0.0

    def hit(self, exc: BaseException) -> float:
        """Seconds to wait before trying again."""
        kind = weather(exc) or "error"
        metrics.REDIS_ERRORS.labels(self.service, kind).inc()
        if kind != self._kind:
            log.warning("%s: redis %s (%s)%s; retrying with backoff until it clears",
                        self.service, kind, _reason(exc),
                        ": check REDIS_URL's user and password, and its ACL (docs/security.md)"
                        if kind == "refused" else "")
            self._since = self._since or time.monotonic()
            self._kind = kind
        self.health.fail(f"redis {kind}", self.part)
        self._failures += 1
        return self._backoff.compute(self._failures)

    def clear(self) -> None:
        if self._kind is not None:
            log.info("%s: redis is back after %.1f s", self.service,
                     time.monotonic() - self._since)
        self._kind, self._failures, self._since = None, 0, 0.0


class Stopper:
    """Set by stop(), or by SIGTERM/SIGINT when `signals` (and created in the main thread)."""

    def __init__(self, signals: bool = True) -> None:
        self._event = threading.Event()
        if signals and threading.current_thread() is threading.main_thread():
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


def backlog(client: redis.Redis, stream: str, group: str) -> int:
    """Entries of `stream` not yet delivered to `group`: all of them while it has no group, and
    the stream's length (an upper bound) where Redis cannot tell the lag (entries XDELeted)."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream
        return 0
    info = next((g for g in groups if _text(g["name"]) == group), None)
    if info is None or info.get("lag") is None:
        return int(client.xlen(stream))
    return int(info["lag"])


def group_backlogs(client: redis.Redis,
                   names: Sequence[str] = streams.GROUP_STREAMS) -> list[metrics.GroupBacklog]:
    """Every consumer group of the streams `names` with its lag and pending entries (XINFO
    GROUPS; a stream that does not exist yet has none), in one round trip. Where Redis cannot
    tell a group's lag, the stream's length stands for it, as in backlog()."""
    with client.pipeline(transaction=False) as pipe:
        for stream in names:
            pipe.xinfo_groups(stream)
            pipe.xlen(stream)
        replies = pipe.execute(raise_on_error=False)
    found = []
    for stream, groups, length in zip(names, replies[::2], replies[1::2], strict=True):
        if isinstance(groups, redis.ResponseError):  # no such stream
            continue
        found += [metrics.GroupBacklog(stream, _text(info["name"]),
                                       int(length if info.get("lag") is None else info["lag"]),
                                       int(info["pending"])) for info in groups]
    return found


def trim_acknowledged(client: redis.Redis, stream: str) -> None:
    """XTRIM MINID: drop the entries every consumer group of the stream has acknowledged; the
    recorder's group holds back no entry older than streams.RECORDER_HOLD_S (its ring is
    bounded: a recorder that is stopped or behind must not keep the audio stream growing)."""
    groups = client.xinfo_groups(stream)
    if not groups:
        return
    keep_from: tuple[int, int] | None = None
    for info in groups:
        ms, seq = _id(info["last-delivered-id"])
        first = (ms, seq + 1)
        if info["pending"]:
            # None: another replica acknowledged them since XINFO; last-delivered-id holds.
            oldest = client.xpending(stream, info["name"])["min"]
            if oldest is not None:
                first = _id(oldest)
        if _text(info["name"]) == streams.RECORDER_GROUP:
            seconds, micros = client.time()
            first = max(first, (seconds * 1000 + micros // 1000
                                - int(streams.RECORDER_HOLD_S * 1000), 0))
        keep_from = first if keep_from is None else min(keep_from, first)
    if keep_from is not None and keep_from > (0, 1):
        client.xtrim(stream, minid=f"{keep_from[0]}-{keep_from[1]}", approximate=True)


# Atomic, so that no group reads between the look at what it needs and the trim. The ids' parts
# are compared as numbers (exact in Lua's doubles up to 2^53 ms) and written back with %.0f.
_TRIM_HISTORY = """
local stream, lost = KEYS[1], KEYS[2]
local keep, bound = tonumber(ARGV[1]), math.max(tonumber(ARGV[1]), tonumber(ARGV[2]))
local length = redis.call('XLEN', stream)
if length <= keep then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function before(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
local groups, cutoff = {}, nil
for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = {}
  for i = 1, #raw, 2 do info[raw[i]] = raw[i + 1] end
  local delivered = parse(info['last-delivered-id'])
  local needed = {delivered[1], delivered[2] + 1}
  if info['pending'] > 0 then
    needed = parse(redis.call('XPENDING', stream, info['name'])[2])
  end
  if cutoff == nil or before(needed, cutoff) then cutoff = needed end
  groups[#groups + 1] = {info['name'], delivered}
end
local unneeded = length - keep
if cutoff ~= nil then
  local exclusive = string.format('(%.0f-%.0f', cutoff[1], cutoff[2])
  unneeded = #redis.call('XRANGE', stream, '-', exclusive, 'COUNT', unneeded)
end
local remove = math.max(unneeded, length - bound)
if remove <= 0 then return 0 end
local lost_total = 0
if remove > unneeded then
  local removed = redis.call('XRANGE', stream, '-', '+', 'COUNT', remove)
  for _, group in ipairs(groups) do
    local undelivered = 0
    for _, entry in ipairs(removed) do
      if before(group[2], parse(entry[1])) then undelivered = undelivered + 1 end
    end
    if undelivered > 0 then
      redis.call('HINCRBY', lost, group[1], undelivered)
      lost_total = lost_total + undelivered
    end
  end
end
redis.call('XTRIM', stream, 'MAXLEN', length - remove)
return lost_total
"""


def trim_history(client: redis.Redis, stream: str, lost_key: str, keep: int,
                 bound: int) -> int:
    """Trim a history stream read by consumer groups to its newest `keep` entries, keeping
    older ones a group has not been delivered or has pending, up to `bound` entries in all.
    Past the bound the oldest go all the same: each group's count of the entries it had not
    been delivered is added to its field of the hash `lost_key` (its reader counts them and
    takes them away). Returns how many such undelivered entries went."""
    script = client.register_script(_TRIM_HISTORY)
    return int(script(keys=[stream, lost_key], args=[keep, bound]))


class Leases:
    """A thread that keeps the entries in hand owned by this consumer (XCLAIM JUSTID resets
    their idle time), so only a dead consumer's entries become idle enough to be claimed."""

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str,
                 every_s: float, stopper: Stopper):
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.every_s, self.stopper = every_s, stopper
        self._ids: tuple[str, ...] = ()
        self._thread = threading.Thread(target=self._run, name="leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def hold(self, ids: Iterable[str]) -> None:
        self._ids = tuple(ids)

    def _run(self) -> None:
        while not self.stopper.wait(self.every_s):
            ids = self._ids
            if not ids:
                continue
            try:
                self.client.xclaim(self.stream, self.group, self.consumer, 0, list(ids),
                                   justid=True)
            except redis.RedisError as exc:  # the main loop reports Redis trouble
                log.debug("lease renewal failed: %s", exc)


class Worker(Generic[M]):
    def __init__(
        self,
        settings: Settings,
        stream: str,
        group: str,
        schema: type[M],
        handle: Handler[M] | AcknowledgingHandler[M],
        health: metrics.Health | None = None,
        stopper: Stopper | None = None,
        client: redis.Redis | None = None,
        output: str | None = None,
        tick: Callable[[], None] | None = None,
        gone: Callable[[int], None] | None = None,
        shard: streams.Shard = streams.Shard(),
        acknowledging: bool = False,
    ):
        """`stream`, `output` and the handler's outputs are named as in shared/streams.py;
        the worker reads and writes them in `shard`.
        `output`: the stream this worker feeds, whose backlog bounds its reading.
        `tick`: called every turn of the loop (the classifier's overdue reorder gaps).
        `gone`: told how many pending entries a claim found deleted from the stream (the
        events stream's bound trimmed them before their sink had them).
        `acknowledging`: `handle` is an AcknowledgingHandler."""
        self.settings = settings
        self.shard, self.name = shard, stream
        self.stream = shard.key(stream)
        self.group, self.schema, self.handle = group, schema, handle
        self.health = health or metrics.Health()
        self.stopper = stopper or Stopper()
        self.redis = client or connect(settings.redis_url, settings.block_ms)
        self.output, self.tick, self.gone = output, tick, gone
        self.acknowledging = acknowledging
        self.block_ms = settings.block_ms
        self._service = settings.service
        self._part = str(shard) if shard.count > 1 else ""  # its readiness's part
        self._errors_key = shard.key(streams.errors_hash(group))
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._next_claim = self._next_trim = self._next_backlog_check = 0.0
        self._downstream_was_full = False
        self._held: list[Delivery[M]] = []  # a batch interrupted by Redis trouble
        self.leases = Leases(self.redis, self.stream, group, settings.consumer,
                             max(0.2, settings.claim_idle_s / 4), self.stopper)
        self.health.watch(self.leases.alive, "the lease renewal thread died")
        for counter in (metrics.MESSAGES_IN, metrics.MESSAGES_OUT, metrics.MESSAGES_FAILED,
                        metrics.CLAIMED, metrics.BATCH_SIZE, metrics.PROCESSING_SECONDS):
            metrics.start_at_zero(counter, [self._service])
        metrics.start_at_zero(metrics.DEAD_LETTERS, [self._service], metrics.DEAD_LETTER_KINDS)

    def run(self) -> None:
        run_in_turn([self])

    def start(self) -> Weather:
        self.leases.start()
        log.info("%s: consumer %s reading %s as group %s", self._service,
                 self.settings.consumer, self.stream, self.group)
        return Weather(self._service, self.health, self._part)

    def turn(self, weather_: Weather) -> float:
        """One step; on Redis trouble, the seconds to wait before this worker's next one."""
        try:
            self.ensure_group()
            self.step()
        except redis.RedisError as exc:
            self._group_ready = False
            return weather_.hit(exc)
        weather_.clear()
        self.health.beat(self._part)
        return 0.0

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
        """One turn: retry a held batch, claim idle entries when due, read and process new
        ones, then the periodic chores."""
        if self._held:
            self._run_batch(self._held)
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + max(0.5, self.settings.claim_idle_s / 4)
            self._process(self._claim())
        if self._downstream_full():
            self.stopper.wait(_BACKPRESSURE_WAIT_S)
        else:
            reply = self.redis.xreadgroup(
                self.group, self.settings.consumer, {self.stream: ">"},
                count=self.settings.batch_size, block=self.block_ms,
            )
            self._process([(_text(eid), fields, 1) for _, items in reply or []
                           for eid, fields in items])
        if self.tick is not None:
            self.tick()
        self._chores()

    def _downstream_full(self) -> bool:
        if self.output is None:
            return False
        now = time.monotonic()
        if now >= self._next_backlog_check:
            self._next_backlog_check = now + _BACKLOG_CHECK_S
            group = streams.CONSUMER_GROUPS[self.output]
            self._downstream_was_full = (backlog(self.redis, self.shard.key(self.output), group)
                                         >= self.settings.backlog_max)
        return self._downstream_was_full

    def _chores(self) -> None:
        now = time.monotonic()
        if now >= self._next_trim and self.name in streams.CONSUMER_GROUPS:
            self._next_trim = now + _TRIM_INTERVAL_S
            trim_acknowledged(self.redis, self.stream)

    def _claim(self) -> list[tuple[str, dict, int]]:
        reply = self.redis.xautoclaim(
            self.stream, self.group, self.settings.consumer,
            min_idle_time=int(self.settings.claim_idle_s * 1000),
            start_id=self._claim_cursor, count=self.settings.batch_size,
        )
        next_id, claimed = reply[0], reply[1]
        if len(reply) > 2 and reply[2]:  # Redis 7: pending entries whose data is gone
            log.warning("%s: %d pending entries had been deleted from %s", self._service,
                        len(reply[2]), self.stream)
            if self.gone is not None:
                self.gone(len(reply[2]))
        self._claim_cursor = _text(next_id)
        claimed = [(eid, fields) for eid, fields in claimed if fields]
        if not claimed:
            return []
        metrics.CLAIMED.labels(self._service).inc(len(claimed))
        ids = [_text(eid) for eid, _ in claimed]
        pending = self.redis.xpending_range(
            self.stream, self.group, min=ids[0], max=ids[-1], count=len(ids) * 2,
            consumername=self.settings.consumer,
        )
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        log.info("%s: claimed %d idle entries", self._service, len(ids))
        return [(eid, fields, counts.get(eid, 1))
                for eid, (_, fields) in zip(ids, claimed, strict=True)]

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
        self._run_batch(batch)

    def _run_batch(self, batch: list[Delivery[M]]) -> None:
        """Handle a batch; on Redis trouble keep it (and its leases) for the next turn."""
        if not batch:
            return
        self._held = batch
        self.leases.hold(d.entry_id for d in batch)
        try:
            self._handle_or_split(batch)  # Redis weather propagates, leaving the batch held
        except Interrupted as exc:
            log.info("%s: %s; %d entries left for the next consumer", self._service, exc,
                     len(batch))
            self._release(batch)
        self._held = []
        self.leases.hold(())

    def _release(self, batch: list[Delivery[M]]) -> None:
        """Make an interrupted batch claimable at once, each entry's delivery count as it was
        before this delivery (XCLAIM IDLE and RETRYCOUNT; JUSTID counts nothing itself)."""
        idle_ms = int(self.settings.claim_idle_s * 1000)
        with self.redis.pipeline(transaction=False) as pipe:
            for delivery in batch:
                pipe.xclaim(self.stream, self.group, self.settings.consumer, 0,
                            [delivery.entry_id], idle=idle_ms,
                            retrycount=delivery.deliveries - 1, justid=True)
            pipe.execute()

    def _handle_or_split(self, batch: list[Delivery[M]]) -> None:
        try:
            self._handle(batch)
            return
        except Interrupted:
            raise
        except redis.RedisError as exc:
            if weather(exc) is not None:
                raise
            failure: Exception = exc
        except Exception as exc:
            failure = exc
        if len(batch) == 1:
            self._failed(batch[0], failure)
            return
        log.warning("%s: batch of %d failed (%s); retrying one by one", self._service,
                    len(batch), _reason(failure))
        for delivery in batch:
            self._handle_or_split([delivery])

    def _handle(self, batch: list[Delivery[M]]) -> None:
        started = time.perf_counter()
        acknowledgement = Acknowledgement(self.stream, self.group, self._errors_key,
                                          tuple(d.entry_id for d in batch),
                                          any(d.deliveries > 1 for d in batch))
        if self.acknowledging:
            written = self.handle(batch, acknowledgement)
        else:
            outputs = self.handle(batch)
            writes = Writes()
            for output in outputs if isinstance(outputs, list) else []:
                writes.add(*xadd(self.shard.key(output.stream), output.message,
                                 _maxlen(output.stream, self.settings)))
            acknowledgement.add_to(writes)
            with self.redis.pipeline(transaction=True) as pipe:
                writes.queue(pipe)
                pipe.execute()
            written = len(outputs) if isinstance(outputs, list) else outputs
        metrics.MESSAGES_OUT.labels(self._service).inc(written)
        metrics.BATCH_SIZE.labels(self._service).observe(len(batch))
        metrics.PROCESSING_SECONDS.labels(self._service).observe(time.perf_counter() - started)

    def _failed(self, delivery: Delivery[M], exc: Exception) -> None:
        metrics.MESSAGES_FAILED.labels(self._service).inc()
        reason = _reason(exc)
        if isinstance(exc, PermanentError | MessageError):
            self._dead_letter(delivery.entry_id, delivery.message.encode(), delivery.deliveries,
                              "unusable", reason)
            return
        log.warning("%s: entry %s (delivery %d) failed: %s", self._service, delivery.entry_id,
                    delivery.deliveries, reason)
        self.redis.hset(self._errors_key, delivery.entry_id, reason)

    def _dead_letter(self, entry_id: str, raw: bytes, deliveries: int, kind: str,
                     reason: str) -> None:
        log.warning("%s: entry %s dead-lettered: %s", self._service, entry_id, reason)
        letter = DeadLetter.now(self.stream, self.group, entry_id, reason, deliveries, raw)
        with self.redis.pipeline(transaction=True) as pipe:
            publish(pipe, self.shard.key(streams.DEADLETTER_STREAM), letter,
                    self.settings.stream_maxlen)
            pipe.xack(self.stream, self.group, entry_id)
            pipe.hdel(self._errors_key, entry_id)
            pipe.execute()
        metrics.DEAD_LETTERS.labels(self._service, kind).inc()


def persist(action: Callable[[], None], stopper: Stopper, weather_: Weather) -> None:
    """Run `action` until it succeeds or the stop, waiting out Redis trouble."""
    while not stopper.stopped:
        try:
            action()
        except redis.RedisError as exc:
            stopper.wait(weather_.hit(exc))
            continue
        weather_.clear()
        return


def run_in_turn(workers: Sequence[Worker], prepare: Callable[[], None] | None = None) -> None:
    """Run workers sharing one stopper (each of a shard) from this thread until it stops:
    one turn of each in turn, each blocking read block_ms / len(workers). A worker meeting
    Redis trouble sits its turns out for its backoff; the others go on. `prepare` (the shard
    count's check) runs first, retried while Redis is away; a ConfigError it raises ends
    the run."""
    stopper = workers[0].stopper
    weathers = [worker.start() for worker in workers]
    for worker in workers:
        worker.block_ms = max(1, worker.settings.block_ms // len(workers))
    if prepare is not None:
        persist(prepare, stopper, weathers[0])
    resume_at = [0.0] * len(workers)
    while not stopper.stopped:
        for i, (worker, weather_) in enumerate(zip(workers, weathers, strict=True)):
            if time.monotonic() >= resume_at[i] and not stopper.stopped:
                resume_at[i] = time.monotonic() + worker.turn(weather_)
        stopper.wait(max(0.0, min(resume_at) - time.monotonic()))
    log.info("%s: stopped", workers[0].settings.service)


def _maxlen(stream: str, settings: Settings) -> int | None:
    return None if stream in streams.CONSUMER_GROUPS else settings.stream_maxlen


def _id(value: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _reason(exc: BaseException) -> str:
    """A failure in one line, with its class name."""
    # redis-py names the failing pipeline command with its arguments (45 KB of audio): drop it.
    text = one_line(exc).rpartition(" of pipeline caused error: ")[2]
    name = type(exc).__name__
    return name if text == name else f"{name}: {text}"
