"""The notifier's settings: its own, and each sink's (SOUNDHIVE_DEVICEHIVE_*, SOUNDHIVE_MQTT_*,
SOUNDHIVE_WEBHOOK_*: the destination, then the filter and rate limit every sink shares). A sink
is on when its URL is set."""

import re
import socket
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.clips import public_url_field
from shared.config import (
    CommaSeparated,
    ConfigError,
    Settings,
    SettingsModel,
    internal_field,
    metrics_port_field,
    secret_field,
)
from shared.devicehive import SCHEMES, DeviceHiveTarget, where
from shared.messages import Event

KINDS = ("start", "end")
DEVICE_ID = re.compile(r"[a-zA-Z0-9-]+")
# One configuration: all of it from the environment or all of it from the dashboard's store.
UNIT_FIELDS = ("url", "device_id", "notification", "refresh_token", "access_token", "login",
               "password")

Labels = Annotated[frozenset[str], NoDecode]


def default_device_id() -> str:
    return "soundhive-" + (re.sub(r"[^a-zA-Z0-9-]+", "-", socket.gethostname()).strip("-")
                           or "host")


class Filter(SettingsModel):
    """What a sink is sent. The filters judge an event's start; its end follows that judgement
    (delivery.Gate)."""

    labels: Labels = Field(frozenset(), description="Only these labels or their categories "
                           "(';'-separated: AudioSet names hold commas; any case); empty: every "
                           "label.")
    exclude_labels: Labels = Field(frozenset(), description="Never these labels or their "
                                   "categories (';'-separated).")
    min_score: float = Field(0.0, ge=0, description="Only events scoring at least this.")
    kinds: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(KINDS), description="start, end or both (comma-separated).")
    rate_per_min: int = Field(30, ge=0, description="Starts per minute per source and label; "
                              "more are dropped and counted (0: no limit).")

    @field_validator("labels", "exclude_labels", mode="before")
    @classmethod
    def _split_labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(p.strip().lower() for p in value.split(";") if p.strip())
        return value

    @field_validator("kinds", mode="before")
    @classmethod
    def _split_kinds(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = frozenset(k.strip() for k in value.split(",") if k.strip())
        if not value or not set(value) <= set(KINDS):
            raise ValueError("must list start and/or end")
        return value

    def admits(self, event: Event) -> bool:
        """A label filter matches the event's label or any of its categories."""
        names = {name.lower() for name in event.names()}
        return ((not self.labels or not names.isdisjoint(self.labels))
                and names.isdisjoint(self.exclude_labels) and event.score >= self.min_score)


class DeviceHiveSettings(Filter, DeviceHiveTarget):
    """DeviceHive: where, as which device, and the credentials (a refresh token, an access
    token, or a login and password). The dashboard may replace the whole configuration at run
    time (in_force), on an allowed host only."""

    model_config = SettingsConfigDict(env_prefix="SOUNDHIVE_DEVICEHIVE_")

    device_id: str = Field(default_factory=default_device_id,
                           description="The device the notifications belong to "
                           "([a-zA-Z0-9-]+; default soundhive-<host>).")
    notification: str = Field("sound_event", description="The notifications' name.")
    refresh_token: str = secret_field("", "A refresh token (exchanged for access tokens).")
    access_token: str = secret_field("", "An access token, used as it is.")
    login: str = Field("", description="A user's login (with the password).")
    password: str = secret_field("", "That user's password.")

    @model_validator(mode="after")
    def _usable(self) -> "DeviceHiveSettings":
        if self.url:
            self.check(self.env_name("url").removesuffix("URL"))
        return self

    def in_force(self, stored: dict[bytes, bytes]) -> "DeviceHiveSettings":
        """The dashboard's configuration when it stored a URL, else this one. Stored, every
        field of the unit is the store's or its default, never this environment's: a stored
        URL never receives the environment's credentials."""
        values = {key.decode(): value.decode().strip() for key, value in stored.items()}
        if not values.get("url"):
            return self
        fields = type(self).model_fields
        return self.model_copy(update={
            name: values.get(name) or fields[name].get_default(call_default_factory=True)
            for name in UNIT_FIELDS})

    def check(self, prefix: str = "") -> None:
        """Raise ConfigError (one line, naming the setting) for what can never work."""
        scheme = urlsplit(self.url).scheme
        if scheme not in SCHEMES or not urlsplit(self.url).hostname:
            raise ConfigError(f"{prefix}URL must be http(s)://host/api/rest or "
                              f"ws(s)://host/api/websocket, got {where(self.url)!r}")
        if not DEVICE_ID.fullmatch(self.device_id):
            raise ConfigError(f"{prefix}DEVICE_ID {self.device_id!r} may only hold letters, "
                              "digits and dashes")
        if not self.notification:
            raise ConfigError(f"{prefix}NOTIFICATION must not be empty")
        if not (self.refresh_token or self.access_token or (self.login and self.password)):
            raise ConfigError(f"{prefix}URL needs {prefix}REFRESH_TOKEN, {prefix}ACCESS_TOKEN "
                              f"or {prefix}LOGIN and {prefix}PASSWORD")

    def public(self) -> dict[str, str]:
        """What may be logged: the destination (without userinfo), no token, no password."""
        return {"url": where(self.url), "device_id": self.device_id,
                "notification": self.notification, "login": self.login}


class MqttSettings(Filter):
    """MQTT (Home Assistant): retained ON/OFF per source and label, events as JSON, levels,
    availability, and discovery."""

    model_config = SettingsConfigDict(env_prefix="SOUNDHIVE_MQTT_")

    url: str = secret_field("", "mqtt://[user:password@]host[:port] or mqtts://...; empty: "
                            "the sink is off.")
    prefix: str = Field("soundhive", min_length=1, description="Topic prefix.")
    instance: str = Field("", description="Id of this soundhive in Home Assistant's entity "
                          "and device ids, unique per broker; empty: the prefix.")
    discovery: bool = Field(True, description="Home Assistant discovery under "
                            "homeassistant/.")
    forget_after_s: float = Field(60.0, ge=0, description="Seconds after a start when the "
                                  "sensors of sources capture no longer reports, and of labels "
                                  "the classifier no longer has, are removed from the broker.")


class WebhookSettings(Filter):
    """Webhooks: each event POSTed as JSON to every URL, signed."""

    model_config = SettingsConfigDict(env_prefix="SOUNDHIVE_WEBHOOK_")

    urls: CommaSeparated = secret_field(
        (), "Comma-separated http(s) URLs (they may carry tokens); empty: the sink is off.")
    secret: str = secret_field("", "Key of the X-Soundhive-Signature HMAC-SHA256 header "
                               "(needed with URLS).")


class NotifierSettings(Settings):
    """The notifier: its retries, and each sink's settings."""

    service: str = internal_field(default="notifier")
    metrics_port: int = metrics_port_field(9104)
    notify_max_attempts: int = Field(5, ge=1, description="Attempts at an event a sink "
                                     "refuses (5xx) before it is dead-lettered.")
    notify_backoff_max_s: float = Field(30.0, ge=0.1, description="Longest wait between "
                                        "retries and reconnections.")
    public_url: str | None = public_url_field()
    devicehive: DeviceHiveSettings = internal_field(default_factory=DeviceHiveSettings)
    mqtt: MqttSettings = internal_field(default_factory=MqttSettings)
    webhook: WebhookSettings = internal_field(default_factory=WebhookSettings)
