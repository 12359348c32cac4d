"""MQTT: Frigate-style retained states and Home Assistant discovery (paho-mqtt).

SOUNDHIVE_MQTT_URL is `mqtt://[user:password@]host[:1883]` or `mqtts://...` (TLS, port 8883 by
default); SOUNDHIVE_MQTT_PREFIX (`soundhive`) roots the topics:
    <prefix>/<source>/<label>  `ON` at an event's start, `OFF` at its end, retained: a client
                               that connects later (or Home Assistant after a restart) reads
                               what is sounding now; every state is published again each
                               STATE_REFRESH_S, and the notifier's stop turns every open one OFF;
    <prefix>/events            every start and end as JSON (the webhook body, not retained, an
                               end with its clip's URLs): for automations that want each
                               occurrence;
    <prefix>/<source>/level    the source's level in dBFS, every LEVEL_INTERVAL_S while capture
                               reports it;
    <prefix>/<source>/availability  `online` while capture reports the source running (or it
                               sends events), `offline` when it stops, fails or goes silent;
    <prefix>/availability      `online`, retained, while the notifier is connected; the broker
                               publishes the last will `offline` if the notifier dies.
Topic levels are slugs of the names (lowercase letters, digits and `_`: `dog.mp3` -> `dog_mp3`,
`Inside, large room or hall` -> `inside_large_room_or_hall`): a `/`, `+` or `#` in a name would
break the topic tree, and Home Assistant's object ids allow no more. A name that is not plain
ASCII keeps what it has of Latin letters (accents dropped) and gets a short hash of the name, so
`厨房` and `Ванная` are two devices (`0c5b8e`, `5fa3d0`-like slugs).

Home Assistant discovery (retained configs under `homeassistant/`; SOUNDHIVE_MQTT_DISCOVERY=0
turns it off): one device per source (`soundhive <source>`), with a `binary_sensor` of
device_class `sound` per label, announced before its first `ON`, and a `sensor` for the level.
Their ids (node id, unique_id, device identifier) start with SOUNDHIVE_MQTT_INSTANCE (default:
the prefix), so two soundhives on one broker never take each other's entities. An entity is
available while both the notifier and its source are (`availability_mode: all`). States expire
(`expire_after`) after STATE_EXPIRE_S without a refresh: far beyond any event's hold, so only a
notifier cut off from the broker without its last will leaves them, and then they read
`unavailable`, not a stale ON; levels after LEVEL_EXPIRE_S.
A binary_sensor rather than an `event` entity: a sound lasts (start to end) and the sensor's
retained state says whether it is going on now, which automations use as a condition ("dog
barking for 30 s"), survives restarts of Home Assistant and of the notifier, and is what
`<prefix>/<source>/<label>` carries anyway; an event entity is stateless and would lose the
end. Each occurrence is still there for triggers, on `<prefix>/events`. Labels are announced when
first heard, not all 521 up front; SOUNDHIVE_MQTT_LABELS limits them. Configs are sent again
after every reconnection (a broker restarted without persistence forgets retained messages).

What it published is recorded in Redis (streams.mqtt_published, per instance): SOUNDHIVE_MQTT_
FORGET_AFTER_S after a start, the sources capture no longer reports (and labels the classifier's
head no longer has) are cleared: their retained states, levels, availability and discovery
configs (an empty retained message removes the entity from Home Assistant).

Delivery: QoS 1, acknowledged by the broker (PUBACK) before the event counts as delivered;
paho reconnects by itself, and an unacknowledged publish holds the event until it is (at least
once: an `ON` may come twice).
"""

import hashlib
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import unicodedata
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
LEVEL_EXPIRE_S = 30
STATE_REFRESH_S = 60.0
STATE_EXPIRE_S = 300
ONLINE, OFFLINE = "online", "offline"
ON, OFF = "ON", "OFF"


def slug(name: str) -> str:
    latin = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "_", latin.lower()).strip("_")
    if name.isascii():
        return text or "unnamed"
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{text}_{digest}" if text else digest


class Topics:
    def __init__(self, prefix: str, instance: str):
        self.prefix = prefix.strip("/")
        self.instance = slug(instance or self.prefix)
        self.availability = f"{self.prefix}/availability"
        self.events = f"{self.prefix}/events"

    def state(self, source: str, label: str) -> str:
        return f"{self.prefix}/{slug(source)}/{slug(label)}"

    def level(self, source: str) -> str:
        return f"{self.prefix}/{slug(source)}/level"

    def source_availability(self, source: str) -> str:
        return f"{self.prefix}/{slug(source)}/availability"

    def node(self, source: str) -> str:
        """Discovery node id and device identifier of a source: this instance's own."""
        return f"{self.instance}_{slug(source)}"


def device_block(topics: Topics, source: str) -> dict:
    return {"identifiers": [topics.node(source)], "name": f"soundhive {source}",
            "manufacturer": "soundhive", "model": "sound event detector"}


def availability(topics: Topics, source: str) -> dict:
    return {"availability": [{"topic": topics.availability},
                             {"topic": topics.source_availability(source)}],
            "availability_mode": "all", "payload_available": ONLINE,
            "payload_not_available": OFFLINE}


def sound_config(topics: Topics, source: str, label: str) -> tuple[str, dict]:
    """The discovery topic and config of a (source, label) binary sensor."""
    obj = slug(label)
    return f"{DISCOVERY_PREFIX}/binary_sensor/{topics.node(source)}/{obj}/config", {
        "name": label, "unique_id": f"{topics.node(source)}_{obj}", "device_class": "sound",
        "state_topic": topics.state(source, label), "payload_on": ON, "payload_off": OFF,
        "expire_after": STATE_EXPIRE_S, **availability(topics, source),
        "device": device_block(topics, source),
    }


def level_config(topics: Topics, source: str) -> tuple[str, dict]:
    return f"{DISCOVERY_PREFIX}/sensor/{topics.node(source)}/level/config", {
        "name": "Level", "unique_id": f"{topics.node(source)}_level",
        "state_topic": topics.level(source), "unit_of_measurement": "dBFS",
        "state_class": "measurement", "expire_after": LEVEL_EXPIRE_S,
        **availability(topics, source), "device": device_block(topics, source),
    }


class Published:
    """What this instance retains on the broker, in Redis (so a later start can clear what it no
    longer has): per source, each label's last state."""

    def __init__(self, client: redis.Redis, instance: str):
        self.client, self.key = client, streams.mqtt_published(instance)

    def set(self, source: str, label: str, state: str) -> None:
        self.client.hset(self.key, json.dumps([source, label]), state)

    def source(self, source: str) -> None:
        self.client.hset(self.key, json.dumps([source, ""]), "")

    def states(self) -> dict[tuple[str, str], str]:
        """(source, label) -> ON or OFF; label "" for a source's own topics."""
        return {tuple(json.loads(field)): state.decode()
                for field, state in self.client.hgetall(self.key).items()}

    def forget(self, items: list[tuple[str, str]]) -> None:
        if items:
            self.client.hdel(self.key, *(json.dumps(list(item)) for item in items))


class MqttSink:
    name = "mqtt"

    def __init__(self, settings: MqttSettings, client: redis.Redis):
        parts = urlsplit(settings.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError("SOUNDHIVE_MQTT_URL must be mqtt://[user:password@]host[:port] or "
                              f"mqtts://..., got scheme {parts.scheme!r}")
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.topics = Topics(settings.prefix, settings.instance)
        self.discovery, self.forget_after_s = settings.discovery, settings.forget_after_s
        self.redis, self.published = client, Published(client, self.topics.instance)
        self._announced: set[str] = set()
        self._availability: dict[str, str] = {}  # source -> what its topic says
        self._heard: set[str] = set()  # sources with events that started since the start
        self._up = threading.Event()
        self._problem = "not connected yet"
        self._started = False
        self._next_levels, self._next_refresh = 0.0, time.monotonic() + STATE_REFRESH_S
        self._forget_at: float | None = None
        self._start_time = 0.0
        self._mqtt = self._client(parts.scheme == "mqtts", parts.username, parts.password)

    @classmethod
    def from_settings(cls, settings: MqttSettings, client: redis.Redis) -> "MqttSink | None":
        """The sink, or None while SOUNDHIVE_MQTT_URL is unset."""
        if not settings.url:
            return None
        return cls(settings, client)

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
        self._availability.clear()
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        if self._forget_at is None:
            self._start_time = time.time()
            self._forget_at = time.monotonic() + self.forget_after_s
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

    def send(self, event: Event, links: dict[str, str]) -> None:
        state = ON if event.kind == "start" else OFF
        if event.start_time >= self._start_time:  # not the end of an earlier run's event
            self._heard.add(event.source)
        if event.kind == "start":
            self._announce(*sound_config(self.topics, event.source, event.label))
            self._set_availability(event.source, ONLINE)
        self._publish(self.topics.state(event.source, event.label), state, retain=True)
        self.published.set(event.source, event.label, state)
        self._publish(self.topics.events, body_of(event, round(time.time(), 3), links))

    def tick(self) -> None:
        """Every LEVEL_INTERVAL_S: each source's level and availability as capture reports it;
        every STATE_REFRESH_S: every state again (they expire); once, FORGET_AFTER_S after the
        start: clear what this instance no longer has."""
        now = time.monotonic()
        if now < self._next_levels or not self.connected():
            return
        self._next_levels = now + LEVEL_INTERVAL_S
        try:
            statuses = self._statuses()
            self._report(statuses)
            if now >= self._next_refresh:
                self._next_refresh = now + STATE_REFRESH_S
                self._refresh()
            if self._forget_at is not None and now >= self._forget_at:
                self._forget_gone(statuses)
                self._forget_at = float("inf")
        except SinkDown as exc:
            log.debug("levels and states not published: %s", exc)

    def close(self) -> None:
        """OFF for every open label, each source and the notifier offline."""
        if self._started and self.connected():
            try:
                self._all_off()
            except SinkDown as exc:
                log.warning("mqtt: open labels not turned OFF at the stop: %s", exc)
        self._mqtt.disconnect()
        self._mqtt.loop_stop()

    def _all_off(self) -> None:
        published = self.published.states()
        for (source, label), state in published.items():
            if label and state == ON:
                self._publish(self.topics.state(source, label), OFF, retain=True)
                self.published.set(source, label, OFF)
        for source, label in published:
            if not label:
                self._publish(self.topics.source_availability(source), OFFLINE, retain=True)
        self._publish(self.topics.availability, OFFLINE, retain=True)

    def _statuses(self) -> dict[str, SourceStatus]:
        statuses = {}
        for raw in self.redis.hvals(streams.SOURCES_HASH):
            try:
                status = SourceStatus.decode(raw)
            except MessageError:
                continue
            statuses[status.source] = status
        return statuses

    def _report(self, statuses: dict[str, SourceStatus]) -> None:
        for status in statuses.values():
            fresh = time.time() - status.updated <= LEVEL_FRESH_S
            running = fresh and status.state == "running"
            if fresh or status.source in self._availability:
                self._set_availability(status.source, ONLINE if running else OFFLINE)
            if fresh:
                self._announce(*level_config(self.topics, status.source))
                self._publish(self.topics.level(status.source), f"{dbfs(status.rms):.1f}")

    def _refresh(self) -> None:
        """Each state again, without waiting for the broker (they are many; the next
        refresh makes up for one lost)."""
        for (source, label), state in self.published.states().items():
            if label:
                self._mqtt.publish(self.topics.state(source, label), state, qos=1, retain=True)

    def _forget_gone(self, statuses: dict[str, SourceStatus]) -> None:
        """Clear the retained topics of the sources capture no longer reports (not since this
        start) and of the labels the classifier's head no longer has."""
        sources = self._heard | {s.source for s in statuses.values()
                                 if s.updated >= self._start_time}
        labels = self._head_labels()
        gone = [(source, label) for source, label in self.published.states()
                if source not in sources or (label and labels and label not in labels)]
        for source, label in gone:
            topics = ([self.topics.state(source, label), sound_config(self.topics, source,
                                                                       label)[0]] if label
                      else [self.topics.level(source), self.topics.source_availability(source),
                            level_config(self.topics, source)[0]])
            for topic in topics:
                self._publish(topic, b"", retain=True)  # empty: the broker forgets it
                self._announced.discard(topic)
            if not label:
                self._availability.pop(source, None)
        self.published.forget(gone)
        if gone:
            log.info("mqtt: cleared %d retained sensors of sources or labels no longer here",
                     len(gone))

    def _head_labels(self) -> set[str]:
        raw = self.redis.get(streams.HEAD_INFO)
        try:
            return set(json.loads(raw)["labels"]) if raw else set()
        except (ValueError, KeyError, TypeError):
            return set()

    def _set_availability(self, source: str, payload: str) -> None:
        if self._availability.get(source) != payload:
            self._publish(self.topics.source_availability(source), payload, retain=True)
            self._availability[source] = payload
            self.published.source(source)

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
