"""Consumer groups' lag and pending entries come from Redis, exported by the api (not by the
consumers), so a stalled consumer's backlog is in the very next scrape."""

import httpx
import redis
from pipeline_helpers import Services, start_api
from prometheus_client.parser import text_string_to_metric_families

from shared import streams


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def group_value(samples: dict, name: str, stream: str, group: str) -> float | None:
    return samples.get((name, (("group", group), ("stream", stream))))


def test_a_stalled_consumers_lag_and_pending_are_in_one_scrape(services: Services):
    client = redis.Redis.from_url(services.server.url)
    client.xgroup_create(streams.PCM_STREAM, streams.FEATURES_GROUP, id="0", mkstream=True)
    for seq in range(10):
        client.xadd(streams.PCM_STREAM, {streams.MESSAGE_FIELD: b"chunk %d" % seq})
    # The consumer takes 4 entries and stalls: it never acknowledges nor reads again.
    client.xreadgroup(streams.FEATURES_GROUP, "frozen", {streams.PCM_STREAM: ">"}, count=4)
    sink_group = streams.notifier_group("webhook")
    client.xgroup_create(streams.EVENTS_STREAM, sink_group, id="$", mkstream=True)
    for n in range(3):
        client.xadd(streams.EVENTS_STREAM, {streams.MESSAGE_FIELD: b"event %d" % n})
    url = start_api(services)

    samples = scrape(url)

    lag, pending = "soundhive_stream_lag_messages", "soundhive_pending_messages"
    assert group_value(samples, lag, streams.PCM_STREAM, streams.FEATURES_GROUP) == 6
    assert group_value(samples, pending, streams.PCM_STREAM, streams.FEATURES_GROUP) == 4
    assert group_value(samples, lag, streams.EVENTS_STREAM, sink_group) == 3
    assert group_value(samples, pending, streams.EVENTS_STREAM, sink_group) == 0
    assert samples[("soundhive_consumer_groups_readable", ())] == 1
    # No stream, no group: nothing is made up for the embeddings stream.
    assert not any(dict(labels).get("stream") == streams.EMBEDDINGS_STREAM
                   for _, labels in samples)


def test_without_redis_the_scrape_answers_and_says_so(services: Services):
    url = start_api(services)
    services.server.stop()
    samples = scrape(url)
    assert samples[("soundhive_consumer_groups_readable", ())] == 0
    assert not any(name == "soundhive_stream_lag_messages" for name, _ in samples)
    assert ("soundhive_api_requests_total", (("route", "/readyz"), ("status", "200"))) in samples
