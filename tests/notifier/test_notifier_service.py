"""The notifier as a process against a real Redis, a real Mosquitto, a webhook receiver and the
DeviceHive stub, fed events written straight to the events stream."""

import json
import signal
import subprocess
import time

import redis
from devicehive_stub import MESSAGES, DeviceHiveStub
from notifier_helpers import WEBHOOK_SECRET, Mosquitto, MqttCollector, WebhookReceiver, retained
from pipeline_helpers import RedisServer, Services, wait_for

from shared import bus, streams
from shared.messages import Event, SinkStatus

WAIT_S = 20


def sink_env(mqtt: Mosquitto | None = None, hook: WebhookReceiver | None = None,
             devicehive_url: str = "", refresh_token: str = "", **extra: str) -> dict[str, str]:
    env = {"SOUNDHIVE_NOTIFY_BACKOFF_MAX_S": "0.5", "SOUNDHIVE_DEVICEHIVE_DEVICE_ID": "yard-mic"}
    if mqtt:
        env["SOUNDHIVE_MQTT_URL"] = mqtt.url
    if hook:
        env |= {"SOUNDHIVE_WEBHOOK_URLS": hook.url, "SOUNDHIVE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    if devicehive_url:
        env |= {"SOUNDHIVE_DEVICEHIVE_URL": devicehive_url,
                "SOUNDHIVE_DEVICEHIVE_REFRESH_TOKEN": refresh_token}
    return env | extra


def start_notifier(services: Services, client: redis.Redis, sinks: set[str],
                   **env: str) -> subprocess.Popen:
    """Start it and wait until each sink's group reads the events stream."""
    process = services.start("notifier", **env)

    def groups() -> bool:
        try:
            names = {g["name"].decode() for g in client.xinfo_groups(streams.EVENTS_STREAM)}
        except redis.ResponseError:
            return False
        return {streams.notifier_group(sink) for sink in sinks} <= names

    wait_for(groups, WAIT_S, f"the notifier's groups for {sorted(sinks)}")
    return process


def statuses(client: redis.Redis) -> dict[str, SinkStatus]:
    return {s.sink: s for s in map(SinkStatus.decode, client.hvals(streams.SINKS_HASH))}


def publish(client: redis.Redis, source: str, label: str, kind: str, n: int = 0) -> Event:
    start_time = 1_700_000_000.0 + n
    ended = kind == "end"
    message = Event(f"{source}/{label}/{n}", source, label, kind, 0.9, float(n),
                    n + 2.0 if ended else None, start_time,
                    start_time + 2.0 if ended else None, "yamnet")
    bus.publish(client, streams.EVENTS_STREAM, message, 100000)
    return message


def keys_of(bodies: list[dict]) -> list[tuple[str, str]]:
    return [(b["event_id"], b["kind"]) for b in bodies]


def test_events_reach_every_sink_and_the_last_will(
        services: Services, redis_server: RedisServer, mosquitto: Mosquitto,
        mqtt_collector: MqttCollector, webhook: WebhookReceiver, stub: DeviceHiveStub):
    client = redis_server.client()
    notifier = start_notifier(services, client, {"devicehive", "mqtt", "webhook"},
                              **sink_env(mosquitto, webhook, stub.rest_url, stub.refresh_token,
                                         SOUNDHIVE_WEBHOOK_URLS=f"{webhook.url}?key=url-secret"))
    sent = [publish(client, "yard.mic", "Dog", "start"), publish(client, "yard.mic", "Dog", "end"),
            publish(client, "yard.mic", "Inside, large room or hall", "start", 1)]
    wanted = [(e.id, e.kind) for e in sent]
    wait_for(lambda: len(stub.notifications) == 3 and len(webhook.received) == 3
             and len(mqtt_collector.events()) == 3, WAIT_S, "3 events at every sink")

    assert [(n.body["parameters"]["event_id"], n.body["parameters"]["kind"])
            for n in stub.notifications] == wanted
    first = stub.notifications[0]
    assert first.device_id == "yard-mic" and first.transport == "rest"
    assert first.body["notification"] == "sound_event"
    assert first.body["timestamp"] == "2023-11-14T22:13:20.000"
    assert first.body["parameters"]["label"] == "Dog" and first.body["parameters"]["end"] is None
    assert keys_of([r.body for r in webhook.received]) == wanted
    assert webhook.bad_signatures == 0
    assert all(r.headers["X-Soundhive-Timestamp"] == str(r.body["sent_at"])
               for r in webhook.received)
    assert keys_of(mqtt_collector.events()) == wanted

    state = "soundhive/yard_mic/dog"
    assert mqtt_collector.payloads(state) == [b"ON", b"OFF"]
    assert retained(mosquitto.port, state) == b"OFF"
    assert retained(mosquitto.port, "soundhive/yard_mic/inside_large_room_or_hall") == b"ON"
    config = json.loads(retained(mosquitto.port,
                                 "homeassistant/binary_sensor/soundhive_yard_mic/dog/config"))
    assert config["device_class"] == "sound" and config["state_topic"] == state
    assert config["unique_id"] == "soundhive_yard_mic_dog"
    assert config["availability"] == [{"topic": "soundhive/availability"},
                                      {"topic": "soundhive/yard_mic/availability"}]
    assert config["availability_mode"] == "all" and config["expire_after"] > 60
    assert retained(mosquitto.port, "soundhive/yard_mic/availability") == b"online"
    assert config["device"]["identifiers"] == ["soundhive_yard_mic"]
    assert retained(mosquitto.port, "soundhive/availability") == b"online"

    wait_for(lambda: all(s.state == "connected" and s.delivered == 3
                         for s in statuses(client).values()), WAIT_S, "statuses of 3 deliveries")
    assert set(statuses(client)) == {"devicehive", "mqtt", "webhook"}
    log = services.log_text(notifier)
    assert not any(secret in log for secret in (stub.refresh_token, WEBHOOK_SECRET, "url-secret"))

    notifier.send_signal(signal.SIGKILL)  # the broker publishes the last will
    notifier.wait(10)
    wait_for(lambda: retained(mosquitto.port, "soundhive/availability") == b"offline", WAIT_S,
             "the last will 'offline'")


def test_dashboard_configuration_applies_without_restart(
        services: Services, redis_server: RedisServer, stub: DeviceHiveStub):
    """WebSocket; the stored settings replace the environment's: a bad device id and a
    reserved notification name hold the events (status failed), fixing them lets them go."""
    client = redis_server.client()
    stub.access_ttl_s = 1.0  # expires during the test: the notifier refreshes it
    start_notifier(services, client, {"devicehive"},
                   **sink_env(SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS="127.0.0.1"))
    wait_for(lambda: statuses(client).get("devicehive", None) and
             statuses(client)["devicehive"].state == "disabled", WAIT_S, "devicehive disabled")

    client.hset(streams.DEVICEHIVE_CONFIG, mapping={
        "url": stub.ws_url, "refresh_token": stub.refresh_token, "device_id": "bad_id"})
    wait_for(lambda: "may only hold letters" in statuses(client)["devicehive"].detail, WAIT_S,
             "the bad device id in the status")
    publish(client, "door", "Knock", "start")
    client.hset(streams.DEVICEHIVE_CONFIG, mapping={"device_id": "door-mic",
                                                    "notification": "$device-add"})
    wait_for(lambda: MESSAGES["special"] in statuses(client)["devicehive"].detail, WAIT_S,
             "the server's refusal of a reserved name in the status")
    assert stub.notifications == []
    time.sleep(1.2)
    client.hset(streams.DEVICEHIVE_CONFIG, "notification", "knock")
    publish(client, "door", "Knock", "end")
    wait_for(lambda: len(stub.notifications) == 2, WAIT_S, "both notifications")
    assert [n.body["parameters"]["kind"] for n in stub.notifications] == ["start", "end"]
    assert {(n.transport, n.device_id, n.body["notification"]) for n in stub.notifications} \
        == {("websocket", "door-mic", "knock")}
    assert stub.refreshes >= 2
    wait_for(lambda: statuses(client)["devicehive"].delivered == 2, WAIT_S, "the status")
    assert statuses(client)["devicehive"].state == "connected"


def test_sinks_down_for_a_while_get_everything_once_back(
        services: Services, redis_server: RedisServer, mosquitto: Mosquitto,
        mqtt_collector: MqttCollector, webhook: WebhookReceiver, stub: DeviceHiveStub):
    client = redis_server.client()
    start_notifier(services, client, {"devicehive", "mqtt", "webhook"},
                   **sink_env(mosquitto, webhook, stub.rest_url, stub.refresh_token))
    sent = [publish(client, "porch", "Bark", "start")]
    wait_for(lambda: len(stub.notifications) == 1 and len(webhook.received) == 1, WAIT_S,
             "the first event")
    stub.stop()
    webhook.stop()
    mosquitto.stop()
    down_since = time.monotonic()
    sent.append(publish(client, "porch", "Bark", "end"))
    for n in range(1, 6):
        sent += [publish(client, "porch", "Bark", kind, n) for kind in ("start", "end")]
        time.sleep(0.4)
    wait_for(lambda: all(s.state == "connecting" and s.detail
                         for s in statuses(client).values()), WAIT_S,
             "every sink reconnecting, with its last error")
    time.sleep(max(0.0, 6 - (time.monotonic() - down_since)))
    mosquitto.start()
    webhook.start()
    stub.start()
    wanted = [(e.id, e.kind) for e in sent]
    wait_for(lambda: {(n.body["parameters"]["event_id"], n.body["parameters"]["kind"])
                      for n in stub.notifications} == set(wanted)
             and set(keys_of([r.body for r in webhook.received])) == set(wanted)
             and set(keys_of(mqtt_collector.events())) == set(wanted),
             WAIT_S, "every event at every sink after the outage")
    received = [(n.body["parameters"]["event_id"], n.body["parameters"]["kind"])
                for n in stub.notifications]
    assert list(dict.fromkeys(received)) == wanted  # in order (at least once: maybe twice)
    assert client.xlen(streams.DEADLETTER_STREAM) == 0
    wait_for(lambda: all(s.state == "connected" for s in statuses(client).values()), WAIT_S,
             "every sink connected again")
    assert all(s.dead_lettered == 0 for s in statuses(client).values())
