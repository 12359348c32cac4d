"""Home Assistant hygiene of the MQTT sink as a process against a real Redis and Mosquitto: the
stop turns every open label OFF, a start with other sources clears the ones gone, and names in
any script are devices of their own."""

import json
import signal
import time

import redis
from notifier_helpers import Mosquitto, MqttCollector, retained
from pipeline_helpers import RedisServer, Services, wait_for
from test_notifier_service import WAIT_S, publish, sink_env, start_notifier

from services.notifier.mqtt import slug
from shared import streams
from shared.messages import SourceStatus


def report(client: redis.Redis, *sources: str) -> bool:
    """What capture writes while a source runs."""
    for source in sources:
        client.hset(streams.SOURCES_HASH, source,
                    SourceStatus(source, "running", "", 0.1, 1, time.time()).encode())
    return True


def config(port: int, source: str, label: str) -> dict | None:
    raw = retained(port, f"homeassistant/binary_sensor/soundhive_{slug(source)}/{label}/config")
    return json.loads(raw) if raw else None


def test_home_assistant_keeps_to_what_this_instance_has(
        services: Services, redis_server: RedisServer, mosquitto: Mosquitto,
        mqtt_collector: MqttCollector):
    client = redis_server.client()
    kitchen, bathroom = "厨房", "Ванная"
    report(client, kitchen, bathroom, "yard")
    env = sink_env(mosquitto, SOUNDHIVE_MQTT_FORGET_AFTER_S="2")
    notifier = start_notifier(services, client, {"mqtt"}, **env)
    publish(client, kitchen, "Dog", "start")
    publish(client, bathroom, "Dog", "start", 1)
    publish(client, "yard", "Cat", "start", 2)
    states = {source: f"soundhive/{slug(source)}/{label}"
              for source, label in ((kitchen, "dog"), (bathroom, "dog"), ("yard", "cat"))}
    wait_for(lambda: all(retained(mosquitto.port, topic) == b"ON" for topic in states.values()),
             WAIT_S, "three sensors ON")
    devices = [config(mosquitto.port, source, label)["device"]["identifiers"]
               for source, label in ((kitchen, "dog"), (bathroom, "dog"))]
    assert devices[0] != devices[1]
    assert retained(mosquitto.port, f"soundhive/{slug(kitchen)}/availability") == b"online"

    notifier.send_signal(signal.SIGTERM)
    assert notifier.wait(20) == 0
    assert all(retained(mosquitto.port, topic) == b"OFF" for topic in states.values())
    assert retained(mosquitto.port, f"soundhive/{slug(kitchen)}/availability") == b"offline"
    assert retained(mosquitto.port, "soundhive/availability") == b"offline"

    client.hdel(streams.SOURCES_HASH, kitchen, bathroom)  # started again with the yard only
    publish(client, kitchen, "Dog", "end")  # the end of an event of the last run, delivered now
    start_notifier(services, client, {"mqtt"}, **env)
    wait_for(lambda: report(client, "yard") and config(mosquitto.port, kitchen, "dog") is None
             and config(mosquitto.port, bathroom, "dog") is None, WAIT_S,
             "the sensors of the sources gone cleared")
    assert retained(mosquitto.port, states[kitchen]) is None
    assert retained(mosquitto.port, f"soundhive/{slug(bathroom)}/availability") is None
    assert config(mosquitto.port, "yard", "cat")["unique_id"] == "soundhive_yard_cat"
    assert retained(mosquitto.port, states["yard"]) == b"OFF"
    wait_for(lambda: retained(mosquitto.port, "soundhive/yard/availability") == b"online",
             WAIT_S, "the yard available again")
