"""Delivery accounting of the notifier as a process against a real Redis and webhook receivers:
the events stream's bound (what it drops is counted lost, exactly), stops during an outage, and
receivers that answer busy or fail."""

import re
import signal
from urllib.parse import unquote

import httpx
import redis
from notifier_helpers import WEBHOOK_SECRET, WebhookReceiver
from pipeline_helpers import RedisServer, Services, free_port, wait_for
from test_notifier_service import WAIT_S, keys_of, publish, sink_env, start_notifier, statuses

from shared import bus, streams
from shared.config import Settings
from shared.messages import DeadLetter, Event

HISTORY, BOUND = 20, 60  # SOUNDHIVE_EVENTS_MAXLEN and SOUNDHIVE_EVENTS_BACKLOG_MAX, small
BATCH = Settings().batch_size  # a sink's batch in hand is delivered even once trimmed


def classify(client: redis.Redis, events: list[Event]) -> None:
    """Write events and trim the stream as the classifier does (its chores, every few
    seconds)."""
    for event in events:
        bus.publish(client, streams.EVENTS_STREAM, event)
    bus.trim_history(client, streams.EVENTS_STREAM, streams.EVENTS_LOST, HISTORY, BOUND)


def starts(first: int, count: int) -> list[Event]:
    return [Event(f"yard/Bark/{n}", "yard", "Bark", "start", 0.9, float(n), None,
                  1_700_000_000.0 + n, None, "yamnet") for n in range(first, first + count)]


def metric(port: int, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{wanted}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_trim_keeps_the_history_and_what_groups_need_within_the_bound(
        redis_server: RedisServer):
    client = redis_server.client()
    stream, lost = streams.EVENTS_STREAM, streams.EVENTS_LOST

    def trim() -> list[str]:
        bus.trim_history(client, stream, lost, HISTORY, BOUND)
        return [entry_id.decode() for entry_id, _ in client.xrange(stream)]

    classify(client, starts(0, 30))
    history = trim()
    assert len(history) == HISTORY  # no group: a plain history
    client.xgroup_create(stream, "notifier:late", id="$")
    client.xgroup_create(stream, "notifier:quick", id="$")
    classify(client, starts(30, 40))
    client.xreadgroup("notifier:quick", "c", {stream: ">"}, count=100)
    client.xack(stream, "notifier:quick", *(i for i, _ in client.xrange(stream)))
    client.xreadgroup("notifier:late", "c", {stream: ">"}, count=5)  # 5 pending, 35 unread
    kept = trim()
    assert len(kept) == 40 and not set(kept) & set(history)  # beyond the history: late's
    assert client.hlen(lost) == 0
    for event in starts(70, 30):
        bus.publish(client, stream, event)
    kept = trim()
    assert len(kept) == BOUND  # 70 needed: the bound wins over the 5 pending and 5 unread
    assert client.hgetall(lost) == {b"notifier:late": b"5"}


def test_a_sink_down_past_the_bound_counts_exactly_what_it_lost(
        services: Services, redis_server: RedisServer, webhook: WebhookReceiver):
    """Two URLs: the one down holds back only itself; everything it was sent is delivered,
    in order, or counted lost; its status and log say so."""
    client = redis_server.client()
    other = WebhookReceiver()
    other.start()
    port = free_port()
    try:
        notifier = start_notifier(
            services, client, {"webhook", "webhook-2"},
            **sink_env(SOUNDHIVE_WEBHOOK_URLS=f"{webhook.url},{other.url}",
                       SOUNDHIVE_WEBHOOK_SECRET=WEBHOOK_SECRET, SOUNDHIVE_WEBHOOK_RATE_PER_MIN="0",
                       SOUNDHIVE_METRICS_PORT=str(port)))
        sent = starts(0, 1)
        classify(client, sent)
        wait_for(lambda: len(webhook.received) == 1 and len(other.received) == 1, WAIT_S,
                 "the first event at both URLs")
        webhook.stop()
        for first in range(1, 201, 10):
            sent += starts(first, 10)
            classify(client, sent[-10:])
            wait_for(lambda total=len(sent): len(other.received) == total, WAIT_S,
                     "every event at the URL that is up")
        wait_for(lambda: "behind:" in statuses(client)["webhook"].detail, WAIT_S,
                 "the sink that is down saying it is behind")
        down = statuses(client)["webhook"]
        assert down.state == "connecting" and down.lost > 0
        assert f"behind: {down.lost} lost" in down.detail

        webhook.start()
        wait_for(lambda: "caught up" in services.log_text(notifier), WAIT_S, "the sink caught up")
        wait_for(lambda: statuses(client)["webhook"].detail == "", WAIT_S, "its status saying so")
        status = statuses(client)["webhook"]
        delivered = keys_of([r.body for r in webhook.received])
        wanted = [(e.id, e.kind) for e in sent]
        assert len(set(delivered)) + status.lost == len(sent)
        assert delivered == [key for key in wanted if key in set(delivered)]  # in order, once
        assert status.lost >= len(sent) - 1 - BOUND - BATCH  # at most the bound and a batch kept
        assert status.delivered == len(delivered) and status.state == "connected"
        assert metric(port, "soundhive_deliveries_total", sink="webhook",
                      outcome="lost") == status.lost
        assert statuses(client)["webhook-2"].lost == 0
        assert keys_of([r.body for r in other.received]) == wanted
        assert client.hlen(streams.EVENTS_LOST) == 0
        log = services.log_text(notifier)
        assert len(re.findall(r"webhook: \d+ events dropped before delivery", log)) == 1
        assert f"webhook: caught up, {status.lost} events lost while behind" in log
        assert not re.search(r"webhook-2: \d+ events dropped", log)
    finally:
        other.stop()


def test_restarts_during_an_outage_dead_letter_nothing(
        services: Services, redis_server: RedisServer, webhook: WebhookReceiver):
    """More restarts than SOUNDHIVE_MAX_DELIVERIES while the receiver is away: a stop is not
    a failed delivery, and each start sends the waiting events first, in order."""
    client = redis_server.client()
    webhook.stop()
    client.xgroup_create(streams.EVENTS_STREAM, "notifier:webhook-2", id="$", mkstream=True)
    env = sink_env(hook=webhook, SOUNDHIVE_MAX_DELIVERIES="2")
    notifier = start_notifier(services, client, {"webhook"}, **env)
    groups = {g["name"].decode() for g in client.xinfo_groups(streams.EVENTS_STREAM)}
    assert "notifier:webhook-2" not in groups  # a URL no longer configured: its queue goes
    assert "sink webhook-2 is no longer configured" in services.log_text(notifier)
    sent = [publish(client, "gate", "Knock", kind, n) for n in range(3) for kind in
            ("start", "end")]
    for _ in range(4):
        wait_for(lambda: client.xpending(streams.EVENTS_STREAM, "notifier:webhook")["pending"]
                 and getattr(statuses(client).get("webhook"), "state", "") == "connecting",
                 WAIT_S,
                 "the notifier holding the events for the receiver")
        notifier.send_signal(signal.SIGTERM)
        assert notifier.wait(20) == 0
        assert "left for the next consumer" in services.log_text(notifier)
        notifier = start_notifier(services, client, {"webhook"}, **env)
        wait_for(lambda started=notifier: "claimed" in services.log_text(started), WAIT_S,
                 "the new notifier taking the waiting events")
    webhook.start()
    wanted = [(e.id, e.kind) for e in sent]
    wait_for(lambda: set(keys_of([r.body for r in webhook.received])) == set(wanted), WAIT_S,
             "every event once the receiver is back")
    assert list(dict.fromkeys(keys_of([r.body for r in webhook.received]))) == wanted
    assert client.xlen(streams.DEADLETTER_STREAM) == 0
    wait_for(lambda: statuses(client)["webhook"].state == "connected", WAIT_S, "connected")
    assert statuses(client)["webhook"].dead_lettered == 0
    assert "failed" not in services.log_text(notifier)


def test_busy_and_failing_receivers_show_retrying(
        services: Services, redis_server: RedisServer, webhook: WebhookReceiver):
    """429 holds the events (retrying, uncharged); 500 is retried a few times per event, then
    dead-lettered; another 4xx is dead-lettered at once."""
    client = redis_server.client()
    webhook.answer = 429
    start_notifier(services, client, {"webhook"}, **sink_env(
        hook=webhook, SOUNDHIVE_NOTIFY_MAX_ATTEMPTS="3"))
    publish(client, "hall", "Door", "start")
    wait_for(lambda: webhook.refused >= 4, WAIT_S, "several tries while busy")
    status = statuses(client)["webhook"]
    assert status.state == "retrying" and "answered 429" in status.detail
    assert status.failed == 0 and status.dead_lettered == 0

    webhook.answer = 500
    wait_for(lambda: statuses(client)["webhook"].dead_lettered == 1, WAIT_S,
             "the event dead-lettered after its attempts")
    status = statuses(client)["webhook"]
    assert status.state == "retrying" and "answered 500" in status.detail
    assert status.failed == 3
    publish(client, "hall", "Door", "end")
    wait_for(lambda: statuses(client)["webhook"].dead_lettered == 2, WAIT_S, "the second one")
    assert statuses(client)["webhook"].failed == 6

    webhook.answer = 404
    publish(client, "hall", "Door", "start", 1)
    wait_for(lambda: statuses(client)["webhook"].dead_lettered == 3, WAIT_S, "refused at once")
    assert statuses(client)["webhook"].failed == 7
    webhook.answer = 204
    last = publish(client, "hall", "Door", "end", 1)
    wait_for(lambda: len(webhook.received) == 1, WAIT_S, "a delivery once it accepts again")
    assert keys_of([r.body for r in webhook.received]) == [(last.id, last.kind)]
    wait_for(lambda: statuses(client)["webhook"].state == "connected", WAIT_S, "connected")
    reasons = [DeadLetter.decode(fields[streams.MESSAGE_FIELD]).reason
               for _, fields in client.xrange(streams.DEADLETTER_STREAM)]
    assert [re.sub(r"^.* answered ", "", reason) for reason in reasons] == [
        "500 Internal Server Error (attempt 3)"] * 2 + ["404 Not Found (attempt 1)"]


def test_a_source_named_in_any_script_reaches_the_webhook(
        services: Services, redis_server: RedisServer, webhook: WebhookReceiver):
    """Event ids carry source names; the X-Soundhive-Event header is percent-encoded UTF-8."""
    client = redis_server.client()
    start_notifier(services, client, {"webhook"}, **sink_env(hook=webhook))
    events = [publish(client, source, "Dog", "start") for source in ("厨房", "Ванная", "hall")]
    wait_for(lambda: len(webhook.received) == 3, WAIT_S, "every source's event delivered")
    assert keys_of([r.body for r in webhook.received]) == [(e.id, e.kind) for e in events]
    assert [unquote(r.headers["X-Soundhive-Event"]) for r in webhook.received] == [
        f"{e.id}:{e.kind}" for e in events]
    assert statuses(client)["webhook"].dead_lettered == 0
