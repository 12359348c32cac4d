"""The delivery core every sink shares: its own queue, retries, filters, rate limit and status.

Queue. Each sink reads the events stream through a consumer group of its own
(`notifier:<sink>`, shared by the sink's replicas) with the shared bus (shared/bus.py), so a
sink's group *is* its queue: durable across restarts, in order, and independent of the other
sinks: a slow or dead sink only lets its own group fall behind, never the others. An event is
acknowledged in a sink's group once that sink has it or has given up on it (a dead letter written
in the same transaction). A new group starts at the end of the stream: enabling a sink never
replays the history. With several shards (SOUNDHIVE_SHARDS) a sink's loop reads its group on
every shard's events stream in turn (bus.run_in_turn): a source's events stay in order.

Bound. The classifier trims the events stream to its history (SOUNDHIVE_EVENTS_MAXLEN) but keeps
what a sink's group has not been delivered, up to SOUNDHIVE_EVENTS_BACKLOG_MAX entries in all
(bus.trim_history). Past that bound the oldest undelivered events go: the trim adds each group's
count to streams.EVENTS_LOST, and a pending event a claim finds deleted is counted the same way.
The sink takes those counts: soundhive_deliveries_total{outcome="lost"}, its status's `lost`, a
warning once per episode, and "behind: N lost" in its status until it has caught up.

Failures come in three kinds:
  - SinkDown: the sink cannot take anything now (unreachable, timeouts, credentials or
    configuration refused; SinkBusy: it answered "busy" or "down", 408, 429, 502-504). The event
    is not charged: the sink reconnects with exponential backoff and jitter (up to
    SOUNDHIVE_NOTIFY_BACKOFF_MAX_S) for as long as it takes, its entries held by the bus's leases,
    so an outage within the bound loses nothing and a fixed configuration lets everything through;
  - Rejected: the sink answered and refused this event. A permanent refusal (a 4xx) is
    dead-lettered at once with the reason; a transient one (a 5xx) is retried with a backoff of
    its own (it starts again at each event, bounded by SOUNDHIVE_NOTIFY_BACKOFF_MAX_S), the sink
    `retrying`, and dead-lettered after SOUNDHIVE_NOTIFY_MAX_ATTEMPTS attempts;
  - the stop: an event waiting for its sink when the notifier stops is no failure
    (bus.Interrupted): it is left for the next start, which sends it first, uncharged.

Filters and rate limit (per sink, `SOUNDHIVE_<SINK>_*`, SINK one of DEVICEHIVE, MQTT, WEBHOOK:
settings.Filter): labels, excluded labels, minimum score, kinds, starts per minute. They judge
an event's start; its end follows that judgement (a sink told a sound started is always told it
ended, one never told is never told), so a binary sensor is never left ON.
"""

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

import msgspec
import redis
from redis.backoff import EqualJitterBackoff

from services.notifier.settings import Filter, NotifierSettings
from shared import bus, clips, metrics, streams
from shared.config import Settings
from shared.messages import DeadLetter, Event, SinkStatus
from shared.topology import Topology

log = logging.getLogger("soundhive.notifier")

STATUS_INTERVAL_S = 1.0
HEARTBEAT_S = 10.0
PAIRS_REMEMBERED = 10000


class SinkDown(Exception):
    """The sink cannot take anything now; the text (one line, no secret) says why. Shown as
    `failed` (it refused the credentials, the device, ...): someone must act."""


class SinkUnreachable(SinkDown):
    """The sink cannot be reached now (network, server away): shown as `connecting` while
    retried with backoff, the text as its last error."""


class SinkBusy(SinkDown):
    """The sink answered that it cannot take anything now (busy, or its backend down): shown as
    `retrying`, the text as its last error."""


class Rejected(Exception):
    """The sink refused this event: for good (`permanent`) or for now."""

    @staticmethod
    def transient(code: int) -> bool:
        """Whether an HTTP refusal may pass on a later try (5xx, 408, 429)."""
        return code >= 500 or code in (408, 429)

    def __init__(self, reason: str, permanent: bool):
        super().__init__(reason)
        self.permanent = permanent


class Sink(Protocol):
    name: str

    def configured(self) -> bool:
        """False while the sink has no destination (DeviceHive before its URL is set)."""
        ...

    def connected(self) -> bool:
        ...

    def connect(self) -> None:
        """Open the session; raise SinkDown."""
        ...

    def send(self, event: Event, links: dict[str, str]) -> None:
        """Deliver one event with its clip's links (shared/clips.announced); raise SinkDown or
        Rejected."""
        ...

    def tick(self) -> None:
        """Periodic chores (configuration reload, levels); called often, must be quick."""
        ...

    def close(self) -> None:
        ...


class Gate:
    """Decides what a sink is sent: None (send it), or the outcome of not sending it."""

    def __init__(self, rules: Filter):
        self.rules = rules
        self._starts: OrderedDict[str, str | None] = OrderedDict()  # event id -> its start's
        self._recent: dict[tuple[str, str], deque[float]] = {}

    def decide(self, event: Event, now: float) -> str | None:
        if event.kind == "start":
            outcome = self._judge_start(event, now)
            self._starts[event.id] = outcome
            if len(self._starts) > PAIRS_REMEMBERED:
                self._starts.popitem(last=False)
        elif event.id in self._starts:
            outcome = self._starts.pop(event.id)
        else:  # its start went to another replica, or before this process started
            outcome = None if self.rules.admits(event) else "filtered"
        if outcome is None and event.kind not in self.rules.kinds:
            return "filtered"
        return outcome

    def _judge_start(self, event: Event, now: float) -> str | None:
        if not self.rules.admits(event):
            return "filtered"
        if not self.rules.rate_per_min:
            return None
        recent = self._recent.setdefault((event.source, event.label), deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= self.rules.rate_per_min:
            return "rate_limited"
        recent.append(now)
        return None


class Board:
    """A sink's status: counters, state and last error, written to streams.SINKS_HASH on every
    change of state and at most once a second otherwise (best effort: Redis trouble is the bus
    loop's to report)."""

    def __init__(self, sink: str, client: redis.Redis):
        self.client = client
        self.status = SinkStatus(sink, "connecting", "", None, 0, 0, 0, time.time())
        self.behind = 0  # events lost since the sink last caught up
        self._error = ""
        self._written = 0.0
        self._dirty = False

    def set(self, state: str, error: str = "") -> None:
        metrics.SINK_CONNECTED.labels(self.status.sink).set(state == "connected")
        metrics.SINK_ENABLED.labels(self.status.sink).set(state != "disabled")
        if (state, error) == (self.status.state, self._error):
            return
        # Logged on every change of state, and when a first error explains the current one
        # (a sink unreachable from the start stays "connecting").
        was = self.status.state
        if state != was or (error and not self._error):
            log.log(logging.INFO if state in ("connected", "disabled") else logging.WARNING,
                    "%s sink: %s%s%s", self.status.sink, state, f": {error}" if error else "",
                    f" (was {was})" if state != was else "")
        self._error = error
        self._update(state=state, detail=self._detail(), force=True)

    def lose(self, count: int) -> None:
        """Events the stream's bound dropped before this sink had them."""
        sink = self.status.sink
        metrics.DELIVERIES.labels(sink, "lost").inc(count)
        if not self.behind:
            log.warning("%s: %d events dropped before delivery (the events stream holds at most "
                        "SOUNDHIVE_EVENTS_BACKLOG_MAX); counted lost until it catches up",
                        sink, count)
        self.behind += count
        self._update(lost=self.status.lost + count, detail=self._detail(), force=True)

    def caught_up(self) -> None:
        log.info("%s: caught up, %d events lost while behind", self.status.sink, self.behind)
        self.behind = 0
        self._update(detail=self._detail(), force=True)

    def _detail(self) -> str:
        behind = f"behind: {self.behind} lost" if self.behind else ""
        return "; ".join(part for part in (self._error, behind) if part)

    def count(self, outcome: str, latency: float | None = None) -> None:
        sink = self.status.sink
        metrics.DELIVERIES.labels(sink, outcome).inc()
        if outcome == "delivered":
            metrics.DELIVERY_LATENCY.labels(sink).observe(max(0.0, latency or 0.0))
            self._error = ""
            self._update(state="connected", detail=self._detail(), last_delivery=time.time(),
                         delivered=self.status.delivered + 1)
        elif outcome == "failed":
            self._update(failed=self.status.failed + 1)
        elif outcome == "dead_lettered":
            self._update(dead_lettered=self.status.dead_lettered + 1)

    def tick(self) -> None:
        """Write what a throttled update left unwritten, and a heartbeat every HEARTBEAT_S
        (the dashboard tells a live notifier from a dead one by `updated`)."""
        age = time.monotonic() - self._written
        if (self._dirty and age >= STATUS_INTERVAL_S) or age >= HEARTBEAT_S:
            self._update(force=True)

    def _update(self, force: bool = False, **changes: object) -> None:
        self.status = msgspec.structs.replace(self.status, updated=time.time(), **changes)
        self._dirty = True
        if not force and time.monotonic() - self._written < STATUS_INTERVAL_S:
            return
        try:
            self.client.hset(streams.SINKS_HASH, self.status.sink, self.status.encode())
            self._written, self._dirty = time.monotonic(), False
        except redis.RedisError as exc:
            log.debug("sink status not written: %s", exc)


class Runner:
    """One sink's delivery loop: a bus worker on the events stream in a thread of its own."""

    TICK_INTERVAL_S = 0.5

    def __init__(self, sink: Sink, rules: Filter, settings: NotifierSettings,
                 stopper: bus.Stopper, topology: Topology):
        self.sink, self.gate, self.stopper = sink, Gate(rules), stopper
        self.name, self.group = sink.name, streams.notifier_group(sink.name)
        self.max_attempts = settings.notify_max_attempts
        self._backoff = EqualJitterBackoff(cap=settings.notify_backoff_max_s, base=0.2)
        self.settings: Settings = settings.model_copy(
            update={"service": f"notifier:{sink.name}"})
        self.topology = topology
        self.client = topology.home
        self.health = metrics.Health()
        self.board = Board(sink.name, self.client)
        self.links = clips.Announcer(self.client, settings.public_url)
        self._failures = 0
        self._next_try = self._next_tick = 0.0
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def ready(self) -> bool:
        return self.health.readiness()[0]

    def _run(self) -> None:
        try:
            for shard in self.topology.served:
                self._create_group(shard)
            bus.run_in_turn([bus.Worker(self.settings, streams.EVENTS_STREAM, self.group, Event,
                                        self.handle, self.health, self.stopper,
                                        self.topology.client(shard), tick=self.tick,
                                        gone=self.board.lose, shard=shard)
                             for shard in self.topology.served])
        finally:
            self.sink.close()
            self.board.set("disabled", "the notifier stopped")

    def _create_group(self, shard: streams.Shard) -> None:
        """At the stream's end: a new sink gets the events from now on, not the history."""
        while not self.stopper.stopped:
            try:
                self.topology.client(shard).xgroup_create(shard.key(streams.EVENTS_STREAM),
                                                          self.group, id="$", mkstream=True)
                return
            except redis.ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    return
                raise
            except redis.RedisError as exc:
                log.warning("%s: cannot create group %s yet: %s", self.name, self.group, exc)
                self.stopper.wait(1.0)

    def tick(self) -> None:
        """Between reads: the sink's chores, and an eager (re)connection, so its status is
        current before the next event comes."""
        now = time.monotonic()
        if now < self._next_tick:
            return
        self._next_tick = now + self.TICK_INTERVAL_S
        self.sink.tick()
        if not self.sink.configured():
            self.board.set("disabled")
        elif not self.sink.connected() and now >= self._next_try:
            self._try(self.sink.connect)
        self._take_losses()
        self.board.tick()

    def _take_losses(self) -> None:
        """Count what the streams' bound dropped before this sink had it (the count is taken
        away, so replicas count each loss once); end the episode once the group caught up."""
        lost = 0
        for shard in self.topology.served:
            with self.topology.client(shard).pipeline(transaction=True) as pipe:
                pipe.hget(shard.key(streams.EVENTS_LOST), self.group)
                pipe.hdel(shard.key(streams.EVENTS_LOST), self.group)
                lost += int(pipe.execute()[0] or 0)
        if lost:
            self.board.lose(lost)
        elif self.board.behind and all(map(self._caught_up, self.topology.served)):
            self.board.caught_up()

    def _caught_up(self, shard: streams.Shard) -> bool:
        client, stream = self.topology.client(shard), shard.key(streams.EVENTS_STREAM)
        group = next((g for g in client.xinfo_groups(stream)
                      if g["name"].decode() == self.group), None)
        last = client.xinfo_stream(stream)["last-generated-id"]
        return group is not None and not group["pending"] and group["last-delivered-id"] == last

    def handle(self, batch: list[bus.Delivery[Event]]) -> list[bus.Output]:
        """Send each event the gate lets through; the dead letters are written, and the batch
        acknowledged, by the bus in one transaction."""
        letters = []
        for delivery in batch:
            self.sink.tick()
            outcome = ("disabled" if not self.sink.configured()
                       else self.gate.decide(delivery.message, time.time()))
            if outcome is not None:
                self.board.count(outcome)
                continue
            reason = self._deliver(delivery)
            if reason is not None:
                letters.append(bus.Output(streams.DEADLETTER_STREAM, DeadLetter.now(
                    streams.EVENTS_STREAM, self.group, delivery.entry_id, reason,
                    delivery.deliveries, delivery.message.encode())))
        return letters

    def _deliver(self, delivery: bus.Delivery[Event]) -> str | None:
        """Until the sink has it (None) or gives up on it (the reason)."""
        attempts = 0  # refusals of this event: its own backoff
        event = delivery.message
        while True:
            if self.stopper.stopped:
                raise bus.Interrupted(f"{self.name}: stopping with event {event.id} undelivered")
            self.sink.tick()
            try:
                if not self.sink.connected():
                    self.sink.connect()
                self.sink.send(event, self.links(event))
            except SinkDown as exc:
                self._down(exc)
                wait = self._backoff.compute(self._failures)
            except Rejected as exc:
                attempts += 1
                self.board.count("failed")
                if exc.permanent or attempts >= self.max_attempts:
                    return self._give_up(event, f"{exc} (attempt {attempts})")
                log.warning("%s: %s %s %s refused (attempt %d): %s", self.name, event.source,
                            event.label, event.kind, attempts, exc)
                self.board.set("retrying", f"{exc} (attempt {attempts} of {self.max_attempts})")
                wait = self._backoff.compute(attempts)
            except Exception as exc:  # a sink's own bug with this event: counted, shown, kept
                log.exception("%s: could not send %s %s", self.name, event.id, event.kind)
                self.board.count("failed")
                self.board.set("failed", f"{type(exc).__name__} sending {event.id}")
                return self._give_up(event, f"{type(exc).__name__}: {exc}")
            else:
                self._failures = 0
                self.board.set("connected")
                self.board.count("delivered", time.time() - _written_at(delivery.entry_id))
                return None
            self.health.beat()  # waiting on the sink, not stuck
            self._take_losses()  # the bound may drop events while this one waits
            self.stopper.wait(wait)

    def _try(self, action: Callable[[], None]) -> None:
        try:
            action()
        except SinkDown as exc:
            self._down(exc)
            self._next_try = time.monotonic() + self._backoff.compute(self._failures)
        else:
            self._failures = 0
            self.board.set("connected")

    def _down(self, exc: SinkDown) -> None:
        self._failures += 1
        state = ("connecting" if isinstance(exc, SinkUnreachable)
                 else "retrying" if isinstance(exc, SinkBusy) else "failed")
        self.board.set(state, str(exc))

    def _give_up(self, event: Event, reason: str) -> str:
        self.board.count("dead_lettered")
        log.warning("%s: gave up on %s %s %s: %s", self.name, event.source, event.label,
                    event.kind, reason)
        return f"{self.name}: {reason}"


def _written_at(entry_id: str) -> float:
    """Unix time of an entry's XADD (the milliseconds part of its id)."""
    return int(entry_id.partition("-")[0]) / 1000
