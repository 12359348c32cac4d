"""The notifier over sharded streams (SOUNDHIVE_SHARDS=4 on one Redis): each sink's group reads
every shard's events stream, so events of sources in every shard reach the sink, each once and
in order per source."""

from notifier_helpers import WebhookReceiver
from pipeline_helpers import RedisServer, Services, wait_for
from test_notifier_service import sink_env

from shared import bus, streams
from shared.messages import Event

SHARDS = 4
WAIT_S = 20


def test_a_sink_gets_the_events_of_every_shard_once(services: Services,
                                                     redis_server: RedisServer,
                                                     webhook: WebhookReceiver):
    client = redis_server.client()
    env = sink_env(hook=webhook, SOUNDHIVE_SHARDS=str(SHARDS))
    services.start("notifier", **env)
    events_streams = streams.every_shard(streams.EVENTS_STREAM, SHARDS)
    wait_for(lambda: all(client.exists(stream) for stream in events_streams), WAIT_S,
             "the webhook group on every shard")
    sent = []
    for n in range(24):
        source = f"mic{n % 8}"
        kind = "start" if n < 8 else "end" if n < 16 else "start"
        event = Event(f"{source}/Dog/{n // 8}", source, "Dog", kind, 0.9, float(n),
                      n + 2.0 if kind == "end" else None, 1_700_000_000.0 + n,
                      1_700_000_002.0 + n if kind == "end" else None, "yamnet")
        bus.publish(client, streams.shard_for(source, SHARDS).key(streams.EVENTS_STREAM),
                    event, 1000)
        sent.append(event)
    assert len({streams.shard_of(e.source, SHARDS) for e in sent}) == SHARDS
    wait_for(lambda: len(webhook.received) >= len(sent), WAIT_S, "every event at the webhook")
    got = [(r.body["event_id"], r.body["kind"]) for r in webhook.received]
    assert sorted(got) == sorted((e.id, e.kind) for e in sent)  # each once
    for source in {e.source for e in sent}:  # in order per source
        assert [g for g in got if g[0].startswith(f"{source}/")] == [
            (e.id, e.kind) for e in sent if e.source == source]
