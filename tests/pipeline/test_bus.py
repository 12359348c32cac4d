"""The shared worker loop (shared/bus.py) in-process against a real redis-server: leases,
takeover, permanent vs transient failures, trimming only what every group acknowledged."""

import threading
import time

import pytest
from pipeline_helpers import RedisServer, wait_for

from shared import bus, streams
from shared.config import Settings
from shared.messages import DeadLetter, Event
from shared.writes import Writes

STREAM, GROUP = "test:in", "testers"


def event(n: int) -> Event:
    return Event(f"e{n}", "src", "Dog", "start", 0.5, float(n), None, 0.0, None, "yamnet")


class Recorder:
    """A handler that records what it handled, optionally slowly or failing."""

    def __init__(self, delay_s: float = 0.0, error: Exception | None = None):
        self.delay_s, self.error = delay_s, error
        self.handled: list[str] = []
        self.busy = threading.Event()

    def __call__(self, batch: list[bus.Delivery[Event]]) -> list[bus.Output]:
        self.busy.set()
        time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        self.handled += [d.message.id for d in batch]
        return []


@pytest.fixture
def start_worker(redis_server: RedisServer):
    stoppers: list[tuple[bus.Stopper, threading.Thread]] = []

    def start(handler: Recorder, name: str, **settings: object) -> bus.Worker:
        config = Settings(service="test", redis_url=redis_server.url, consumer=name, block_ms=100,
                          batch_size=1, **{"claim_idle_s": 1.0, **settings})
        stopper = bus.Stopper(signals=False)
        worker = bus.Worker(config, STREAM, GROUP, Event, handler, stopper=stopper)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        stoppers.append((stopper, thread))
        return worker

    yield start
    for stopper, thread in stoppers:
        stopper.stop()
        thread.join(10)


def test_a_slow_consumer_keeps_its_entry_and_a_dead_ones_is_taken_over(
        redis_server: RedisServer, start_worker):
    client = redis_server.client()
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    bus.publish(client, STREAM, event(1))
    slow = Recorder(delay_s=6.0)  # three times the claim idle time
    worker = start_worker(slow, "slow", claim_idle_s=2.0)
    assert slow.busy.wait(10)
    assert worker.health.readiness() == (True, "ok")
    fast = Recorder()
    start_worker(fast, "fast", claim_idle_s=2.0)
    wait_for(lambda: slow.handled, 15, "the slow consumer to finish")
    time.sleep(2.5)
    assert slow.handled == ["e1"] and fast.handled == []  # renewed, so never claimed

    bus.publish(client, STREAM, event(2))
    client.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=1)  # read, then never acknowledged
    started = time.monotonic()
    wait_for(lambda: "e2" in fast.handled + slow.handled, 10, "the dead consumer's entry")
    assert time.monotonic() - started < 7  # claim_idle_s 2 s, not 30
    # handled comes before the acknowledgement: wait for that, rather than race it
    wait_for(lambda: client.xpending(STREAM, GROUP)["pending"] == 0, 5, "the acknowledgement")


def test_permanent_failures_are_dead_lettered_at_once_transient_ones_retried(
        redis_server: RedisServer, start_worker):
    client = redis_server.client()
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    bus.publish(client, STREAM, event(1))
    start_worker(Recorder(error=bus.PermanentError("wrong model")), "a", max_deliveries=3)
    letters = wait_for(lambda: client.xrange(streams.DEADLETTER_STREAM), 10, "a dead letter")
    letter = DeadLetter.decode(letters[0][1][streams.MESSAGE_FIELD])
    assert letter.deliveries == 1 and "wrong model" in letter.reason


def test_a_transient_failure_is_retried_then_dead_lettered(redis_server: RedisServer,
                                                           start_worker):
    client = redis_server.client()
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    bus.publish(client, STREAM, event(1))
    start_worker(Recorder(error=RuntimeError("flaky")), "a", max_deliveries=2,
                 claim_idle_s=0.3)
    letters = wait_for(lambda: client.xrange(streams.DEADLETTER_STREAM), 20, "a dead letter")
    letter = DeadLetter.decode(letters[0][1][streams.MESSAGE_FIELD])
    assert letter.deliveries == 3 and "failed 2 deliveries; last error: RuntimeError: flaky" \
        in letter.reason


def test_trimming_keeps_every_entry_a_group_has_not_acknowledged(redis_server: RedisServer):
    client = redis_server.client()
    ids = [client.xadd(STREAM, {"m": b"x"}) for _ in range(500)]
    client.xgroup_create(STREAM, "done", id="0")
    client.xgroup_create(STREAM, "behind", id="0")
    client.xreadgroup("done", "c", {STREAM: ">"}, count=500)
    client.xack(STREAM, "done", *ids)
    client.xreadgroup("behind", "c", {STREAM: ">"}, count=300)  # 0-299 pending, 300+ unread
    client.xack(STREAM, "behind", *ids[:250])
    bus.trim_acknowledged(client, STREAM)
    remaining = [eid for eid, _ in client.xrange(STREAM)]
    assert set(ids[250:]) <= set(remaining) and len(remaining) < 500
    assert bus.backlog(client, STREAM, "behind") == 200
    assert bus.backlog(client, STREAM, "nobody") == len(remaining)


def test_the_recorders_group_holds_trimming_back_by_at_most_its_hold(redis_server: RedisServer):
    """A recorder that is stopped (or behind) keeps no entry older than RECORDER_HOLD_S."""
    client = redis_server.client()
    now_ms = int(time.time() * 1000)
    old = [client.xadd(STREAM, {"m": b"x"}, id=f"{now_ms - 200_000 + i}-0") for i in range(300)]
    recent = [client.xadd(STREAM, {"m": b"x"}, id=f"{now_ms - 10_000 + i}-0") for i in range(300)]
    client.xgroup_create(STREAM, "features", id="0")
    client.xgroup_create(STREAM, streams.RECORDER_GROUP, id="0")  # has read nothing
    client.xreadgroup("features", "c", {STREAM: ">"}, count=600)
    client.xack(STREAM, "features", *old, *recent)
    bus.trim_acknowledged(client, STREAM)
    remaining = {eid for eid, _ in client.xrange(STREAM)}
    assert set(recent) <= remaining and len(remaining) < 400  # approximate trimming


def test_trimming_survives_another_replica_acknowledging_meanwhile(redis_server: RedisServer):
    """XINFO saw entries pending; by the XPENDING that follows, another replica has acked them
    all (this crashed a features replica in bench/pipeline.py --features 2)."""
    client = redis_server.client()
    ids = [client.xadd(STREAM, {"m": b"x"}) for _ in range(500)]
    client.xgroup_create(STREAM, GROUP, id="0")
    client.xreadgroup(GROUP, "other", {STREAM: ">"}, count=500)
    xinfo_groups = client.xinfo_groups

    def other_replica_acks_after_xinfo(stream: str) -> list:
        groups = xinfo_groups(stream)
        client.xack(STREAM, GROUP, *ids)
        return groups

    client.xinfo_groups = other_replica_acks_after_xinfo  # type: ignore[method-assign]
    bus.trim_acknowledged(client, STREAM)
    assert client.xlen(STREAM) < 500


def test_a_read_only_replica_is_waited_out(redis_server: RedisServer, start_worker,
                                           tmp_path):
    client = redis_server.client()
    recorder = Recorder()
    worker = start_worker(recorder, "a")
    wait_for(lambda: client.exists(STREAM), 10, "the worker's group")
    bus.publish(client, STREAM, event(1))
    wait_for(lambda: recorder.handled == ["e1"], 10, "the first entry")
    primary = RedisServer(tmp_path / "primary")
    primary.start()
    try:
        client.replicaof("127.0.0.1", primary.port)  # a fail-over left us on a replica
        wait_for(lambda: worker.health.readiness() == (False, "redis read-only replica"), 10,
                 "the worker to notice")
        assert worker.health.liveness() == (True, "ok")  # unready, never un-live
        client.replicaof("NO", "ONE")
    finally:
        primary.stop()
    bus.publish(client, STREAM, event(2))
    wait_for(lambda: recorder.handled == ["e1", "e2"], 10, "work to resume")


def test_an_acknowledging_handler_commits_its_outputs_and_acknowledgement_together(
        redis_server: RedisServer):
    client = redis_server.client()
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    config = Settings(service="test", redis_url=redis_server.url, consumer="c", block_ms=100,
                      batch_size=1, claim_idle_s=1.0)
    fail = [True]

    def handle(batch: list[bus.Delivery[Event]], acknowledgement: bus.Acknowledgement) -> int:
        writes = Writes()
        for delivery in batch:
            writes.add(*bus.xadd("test:out", delivery.message))
        acknowledgement.add_to(writes)
        with client.pipeline(transaction=True) as pipe:
            writes.queue(pipe)
            if fail[0]:
                pipe.reset()  # the transaction is abandoned: neither outputs nor acknowledgement
                raise RuntimeError("lost the race")
            pipe.execute()
        return len(batch)

    worker = bus.Worker(config, STREAM, GROUP, Event, handle, stopper=bus.Stopper(False),
                        client=client, acknowledging=True)
    worker.ensure_group()
    bus.publish(client, STREAM, event(1))
    worker.step()
    assert client.xlen("test:out") == 0
    assert client.xpending(STREAM, GROUP)["pending"] == 1  # retried after claim_idle_s
    fail[0] = False
    time.sleep(1.1)  # claim_idle_s: the entry is idle, and a claim is due
    worker.step()  # claims it and handles it again
    assert client.xlen("test:out") == 1
    assert client.xpending(STREAM, GROUP)["pending"] == 0
    assert client.hlen(streams.errors_hash(GROUP)) == 0  # the failure note went with the ack
