"""The running compose stack's metrics tell the truth from the first scrape: every known label
set is there at 0, consumer groups' lag comes from the api, no metric carries the `service`
label the scrape config gives targets, and a disabled sink is told from a broken one."""

from conftest import Stack
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics, streams


def series(stack: Stack, service: str) -> dict[tuple[str, frozenset], float]:
    (port,) = stack.services[service].ports
    text = stack.services[service].get(port, "/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def has(found: dict, name: str, **labels: str) -> bool:
    return (name, frozenset(labels.items())) in found


def test_known_label_sets_start_at_zero(stack: Stack):
    capture = series(stack, "capture")
    sources = {dict(labels)["source"] for name, labels in capture
               if name == "soundhive_chunks_published_total"}
    assert len(sources) == 2, sources
    for source in sources:
        for reason in metrics.DROP_REASONS:
            assert has(capture, "soundhive_audio_dropped_seconds_total", source=source,
                       reason=reason), (source, reason)
        for kind in metrics.SOURCE_ERROR_KINDS:
            assert has(capture, "soundhive_source_errors_total", source=source, kind=kind)
    for kind in metrics.REDIS_ERROR_KINDS:
        assert has(capture, "soundhive_redis_errors_total", worker="capture", kind=kind)
    for worker in ("features", "classifier"):
        found = series(stack, worker)
        for kind in metrics.DEAD_LETTER_KINDS:
            assert found[("soundhive_dead_letters_total",
                          frozenset({"worker": worker, "kind": kind}.items()))] == 0
        assert has(found, "soundhive_messages_failed_total", worker=worker)
        assert has(found, "soundhive_claimed_messages_total", worker=worker)
    notifier = series(stack, "notifier")
    for outcome in metrics.DELIVERY_OUTCOMES:
        assert has(notifier, "soundhive_deliveries_total", sink="devicehive", outcome=outcome)
    assert has(notifier, "soundhive_delivery_latency_seconds_count", sink="devicehive")


def test_the_api_exports_every_groups_lag_and_no_metric_clashes_with_service(stack: Stack):
    api = series(stack, "api")
    for stream, group in (*streams.CONSUMER_GROUPS.items(),
                          (streams.EVENTS_STREAM, streams.notifier_group("devicehive"))):
        assert has(api, "soundhive_stream_lag_messages", stream=stream, group=group), group
        assert has(api, "soundhive_pending_messages", stream=stream, group=group), group
    assert api[("soundhive_consumer_groups_readable", frozenset())] == 1
    for service in stack.services:
        assert not any("service" in dict(labels) for _, labels in series(stack, service))


def test_a_sink_without_destination_is_disabled_not_down(stack: Stack):
    # compose without SOUNDHIVE_DEVICEHIVE_URL: the DeviceHive sink runs, disabled.
    notifier = series(stack, "notifier")
    assert notifier[("soundhive_sink_enabled", frozenset({"sink": "devicehive"}.items()))] == 0
    assert notifier[("soundhive_sink_connected", frozenset({"sink": "devicehive"}.items()))] == 0
