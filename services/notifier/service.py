"""Notifier service: detection events -> DeviceHive, MQTT (Home Assistant) and webhooks.

Each sink is enabled by its environment (../shared/DESIGN.md): SOUNDHIVE_MQTT_URL,
SOUNDHIVE_WEBHOOK_URLS, SOUNDHIVE_DEVICEHIVE_URL (or, without a restart, the DeviceHive form of
the dashboard: the DeviceHive sink always runs, disabled while it has no URL). Each sink has its
own delivery loop, consumer group, retries, filters and rate limit (delivery.py); its status
(streams.SINKS_HASH) and metrics (soundhive_deliveries_total{sink,outcome},
soundhive_delivery_latency_seconds{sink}, soundhive_sink_connected{sink},
soundhive_sink_enabled{sink}) say how it does; every change of a sink's state is logged.
Metrics and health on SOUNDHIVE_METRICS_PORT (default 9104): /healthz fails when a sink's loop
died, /readyz also while a sink's loop has Redis trouble; neither while a sink is down
(restarting would not bring it back). Settings: settings.NotifierSettings.
"""

import logging

import redis

from services.notifier.delivery import Runner, Sink
from services.notifier.devicehive import DeviceHiveSink
from services.notifier.mqtt import MqttSink
from services.notifier.settings import Filter, NotifierSettings
from services.notifier.webhook import WebhookSink
from shared import bus, metrics, streams
from shared.topology import Topology

log = logging.getLogger("soundhive.notifier")

STOP_WAIT_S = 15.0


def build_sinks(settings: NotifierSettings, client: redis.Redis) -> list[tuple[Sink, Filter]]:
    """The sinks the settings enable, each with its filter (`client`: the global keys');
    ConfigError (one line) for a bad setting."""
    sinks: list[tuple[Sink, Filter]] = [(DeviceHiveSink(settings.devicehive, client),
                                         settings.devicehive)]
    mqtt = MqttSink.from_settings(settings.mqtt, client)
    if mqtt is not None:
        sinks.append((mqtt, settings.mqtt))
    return sinks + [(hook, settings.webhook) for hook in WebhookSink.from_settings(
        settings.webhook)]


def drop_removed_sinks(topology: Topology, sinks: set[str]) -> None:
    """The queue (group) of a sink no longer configured goes, on every shard: it would hold the
    events stream at its bound (SOUNDHIVE_EVENTS_BACKLOG_MAX) for good."""
    for shard in topology.served:
        _drop_removed_groups(topology.client(shard), shard, {streams.notifier_group(sink)
                                                             for sink in sinks})


def _drop_removed_groups(client: redis.Redis, shard: streams.Shard, wanted: set[str]) -> None:
    stream = shard.key(streams.EVENTS_STREAM)
    try:
        groups = client.xinfo_groups(stream)
        for info in groups:
            group = info["name"].decode()
            if group.startswith(f"{streams.NOTIFIER_GROUP}:") and group not in wanted:
                client.xgroup_destroy(stream, group)
                client.hdel(shard.key(streams.EVENTS_LOST), group)
                log.warning("notifier: sink %s is no longer configured; its queue is dropped",
                            group.partition(":")[2])
    except redis.ResponseError:  # no events stream yet
        return
    except redis.RedisError as exc:
        log.warning("notifier: cannot look for the queues of removed sinks: %s", exc)


def main(settings: NotifierSettings) -> int:
    """Until SIGTERM/SIGINT (0), or until a sink's loop dies of a bug (1: `up` reports it)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs whole URLs: secrets too
    stopper = bus.Stopper()
    topology = Topology.connect(settings, settings.block_ms)
    runners = [Runner(sink, rules, settings, stopper, topology)
               for sink, rules in build_sinks(settings, topology.home)]
    for runner in runners:
        metrics.start_at_zero(metrics.DELIVERIES, [runner.name], metrics.DELIVERY_OUTCOMES)
        metrics.start_at_zero(metrics.DELIVERY_LATENCY, [runner.name])
    drop_removed_sinks(topology, {runner.name for runner in runners})
    health = metrics.Health()
    for runner in runners:
        health.watch(runner.alive, f"the {runner.name} delivery loop died")
        health.require(runner.ready, f"the {runner.name} delivery loop has Redis trouble")
    server = metrics.serve(settings.metrics_port, health, settings.metrics_host)
    # A redelivered batch's acknowledgement (XACK and the error counts' HDEL) goes through the
    # write script: a Redis too old for it, or another shard count, is refused now, in one line.
    bus.persist(topology.prepare_to_write, stopper, bus.Weather("notifier", health))
    log.info("notifier: sinks %s, metrics on :%d", ", ".join(r.name for r in runners),
             server.server_port)
    for runner in runners:
        runner.start()
    while not stopper.wait(1.0) and all(runner.alive() for runner in runners):
        health.beat()
    dead = [] if stopper.stopped else [r.name for r in runners if not r.alive()]
    stopper.stop()
    for runner in runners:
        runner.join(STOP_WAIT_S)
    if dead:
        log.error("notifier: the %s delivery loop died; stopping", ", ".join(dead))
        return 1
    log.info("notifier: stopped")
    return 0
