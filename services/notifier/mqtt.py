"""MQTT: Frigate-style retained states and Home Assistant discovery (paho-mqtt).

SOUNDHIVE_MQTT_URL is `mqtt://[user:password@]host[:1883]` or `mqtts://...` (TLS, port 8883 by
default); SOUNDHIVE_MQTT_PREFIX (`soundhive`) roots the topics:
    <prefix>/<source>/<label>  `ON` at an event's start, `OFF` at its end, retained: a client
                               that connects later (or Home Assistant after a restart) reads
                               what is sounding now;
    <prefix>/events            every start and end as JSON (the webhook body, not retained):
                               for automations that want each occurrence;
    <prefix>/<source>/level    the source's level in dBFS, every LEVEL_INTERVAL_S while capture
                               reports it;
    <prefix>/availability      `online`, retained, while the notifier is connected; the broker
                               publishes the last will `offline` if the notifier dies.
Topic levels are slugs of the names (lowercase letters, digits and `_`: `dog.mp3` -> `dog_mp3`,
`Inside, large room or hall` -> `inside_large_room_or_hall`): a `/`, `+` or `#` in a name would
break the topic tree, and Home Assistant's object ids allow no more.

Home Assistant discovery (retained configs under `homeassistant/`; SOUNDHIVE_MQTT_DISCOVERY=0
turns it off): one device per source (`soundhive <source>`), with a `binary_sensor` of
device_class `sound` per label, announced before its first `ON`, and a `sensor` for the level.
A binary_sensor rather than an `event` entity: a sound lasts (start to end) and the sensor's
retained state says whether it is going on now, which automations use as a condition ("dog
barking for 30 s"), survives restarts of Home Assistant and of the notifier, and is what
`<prefix>/<source>/<label>` carries anyway; an event entity is stateless and would lose the
end. Each occurrence is still there for triggers, on `<prefix>/events`. Labels are announced when
first heard, not all 521 up front; SOUNDHIVE_MQTT_LABELS limits them. Configs are sent again
after every reconnection (a broker restarted without persistence forgets retained messages).

Delivery: QoS 1, acknowledged by the broker (PUBACK) before the event counts as delivered;
paho reconnects by itself, and an unacknowledged publish holds the event until it is (at least
once: an `ON` may come twice).
"""

import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
import redis

from services.notifier.delivery import SinkDown, SinkUnreachable
from services.notifier.settings import MqttSettings
from services.notifier.webhook import body_of
from shared import streams
from shared.config import ConfigError
from shared.messages import Event, MessageError, SourceStatus
from shared.status import dbfs

log = logging.getLogger("soundhive.notifier.mqtt")

DISCOVERY_PREFIX = "homeassistant"
CONNECT_WAIT_S = 5.0
PUBACK_WAIT_S = 5.0
LEVEL_INTERVAL_S = 5.0
LEVEL_FRESH_S = 15.0
ONLINE, OFFLINE = "online", "offline"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "unnamed"


class Topics:
    def __init__(self, prefix: str):
        self.prefix = prefix.strip("/")
        self.availability = f"{self.prefix}/availability"
        self.events = f"{self.prefix}/events"

    def state(self, source: str, label: str) -> str:
        return f"{self.prefix}/{slug(source)}/{slug(label)}"

    def level(self, source: str) -> str:
        return f"{self.prefix}/{slug(source)}/level"


def device_block(source: str) -> dict:
    return {"identifiers": [f"soundhive_{slug(source)}"], "name": f"soundhive {source}",
            "manufacturer": "soundhive", "model": "sound event detector"}


def sound_config(topics: Topics, source: str, label: str) -> tuple[str, dict]:
    """The discovery topic and config of a (source, label) binary sensor."""
    node, obj = f"soundhive_{slug(source)}", slug(label)
    return f"{DISCOVERY_PREFIX}/binary_sensor/{node}/{obj}/config", {
        "name": label, "unique_id": f"{node}_{obj}", "device_class": "sound",
        "state_topic": topics.state(source, label), "payload_on": "ON", "payload_off": "OFF",
        "availability_topic": topics.availability, "payload_available": ONLINE,
        "payload_not_available": OFFLINE, "device": device_block(source),
    }


def level_config(topics: Topics, source: str) -> tuple[str, dict]:
    node = f"soundhive_{slug(source)}"
    return f"{DISCOVERY_PREFIX}/sensor/{node}/level/config", {
        "name": "Level", "unique_id": f"{node}_level", "state_topic": topics.level(source),
        "unit_of_measurement": "dBFS", "state_class": "measurement",
        "availability_topic": topics.availability, "payload_available": ONLINE,
        "payload_not_available": OFFLINE, "device": device_block(source),
    }


class MqttSink:
    name = "mqtt"

    def __init__(self, url: str, prefix: str, discovery: bool, client: redis.Redis):
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError("SOUNDHIVE_MQTT_URL must be mqtt://[user:password@]host[:port] or "
                              f"mqtts://..., got scheme {parts.scheme!r}")
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.topics, self.discovery, self.redis = Topics(prefix), discovery, client
        self._announced: set[str] = set()
        self._up = threading.Event()
        self._problem = "not connected yet"
        self._started = False
        self._next_levels = 0.0
        self._mqtt = self._client(parts.scheme == "mqtts", parts.username, parts.password)

    @classmethod
    def from_settings(cls, settings: MqttSettings, client: redis.Redis) -> "MqttSink | None":
        """The sink, or None while SOUNDHIVE_MQTT_URL is unset."""
        if not settings.url:
            return None
        return cls(settings.url, settings.prefix, settings.discovery, client)

    def _client(self, tls: bool, user: str | None, password: str | None) -> paho.Client:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=f"soundhive-notifier-{socket.gethostname()}-{os.getpid()}")
        if user:
            client.username_pw_set(unquote(user), unquote(password) if password else None)
        if tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        return client

    def _on_connect(self, client: paho.Client, _userdata: object, _flags: object,
                    reason: paho.ReasonCode, _properties: object) -> None:
        if reason.is_failure:
            self._problem = f"broker {self.host}:{self.port} refused the connection: {reason}"
            return
        self._announced.clear()
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        self._up.set()

    def _on_disconnect(self, _client: paho.Client, _userdata: object, _flags: object,
                       reason: paho.ReasonCode, _properties: object) -> None:
        self._up.clear()
        self._problem = f"lost broker {self.host}:{self.port} ({reason})"

    def configured(self) -> bool:
        return True

    def connected(self) -> bool:
        return self._up.is_set()

    def connect(self) -> None:
        """Start paho's network thread once (it reconnects by itself), then wait for it."""
        if not self._started:
            self._started = True
            self._problem = f"cannot reach broker {self.host}:{self.port}"
            self._mqtt.connect_async(self.host, self.port, keepalive=30)
            self._mqtt.loop_start()
        if not self._up.wait(CONNECT_WAIT_S):
            raise SinkUnreachable(self._problem)

    def send(self, event: Event) -> None:
        if event.kind == "start":
            self._announce(*sound_config(self.topics, event.source, event.label))
        self._publish(self.topics.state(event.source, event.label),
                      "ON" if event.kind == "start" else "OFF", retain=True)
        self._publish(self.topics.events, body_of(event, round(time.time(), 3)))

    def tick(self) -> None:
        """Every LEVEL_INTERVAL_S: the level of each source capture reported lately."""
        now = time.monotonic()
        if now < self._next_levels or not self.connected():
            return
        self._next_levels = now + LEVEL_INTERVAL_S
        for raw in self.redis.hvals(streams.SOURCES_HASH):
            try:
                status = SourceStatus.decode(raw)
            except MessageError:
                continue
            if time.time() - status.updated > LEVEL_FRESH_S:
                continue
            try:
                self._announce(*level_config(self.topics, status.source))
                self._publish(self.topics.level(status.source), f"{dbfs(status.rms):.1f}")
            except SinkDown as exc:
                log.debug("level not published: %s", exc)
                return

    def close(self) -> None:
        if self._started and self.connected():
            self._mqtt.publish(self.topics.availability, OFFLINE, qos=1,
                               retain=True).wait_for_publish(PUBACK_WAIT_S)
        self._mqtt.disconnect()
        self._mqtt.loop_stop()

    def _announce(self, topic: str, config: dict) -> None:
        if self.discovery and topic not in self._announced:
            self._publish(topic, json.dumps(config), retain=True)
            self._announced.add(topic)

    def _publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        if not self.connected():
            raise SinkUnreachable(self._problem)
        info = self._mqtt.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(PUBACK_WAIT_S)
        except (RuntimeError, ValueError) as exc:  # not connected, or paho's queue is full
            raise SinkDown(f"{self._problem}: {exc}") from None
        if not info.is_published():
            raise SinkDown(f"broker {self.host}:{self.port} did not acknowledge within "
                           f"{PUBACK_WAIT_S:.0f} s")
