"""Webhooks: each event POSTed as JSON to every URL of SOUNDHIVE_WEBHOOK_URLS (comma-separated).

The body is the event as the events API shows it, with `event_id` for `id` (the DeviceHive
parameters' names) and `sent_at`, the unix time also sent as `X-Soundhive-Timestamp`. Headers:
    X-Soundhive-Signature  sha256=<hex HMAC-SHA256 of the body with SOUNDHIVE_WEBHOOK_SECRET (or
                           the file SOUNDHIVE_WEBHOOK_SECRET_FILE names)>. The timestamp is inside
                           the signed body, so a receiver can refuse replays of old bodies;
    X-Soundhive-Event      `<event id>:<kind>`, the same on every retry (delivery is at least
                           once: receivers deduplicate on it).
Answers: 2xx delivered. Unreachable, timeouts, 408, 429, 502-504 (the receiver is down or busy)
and 401/403 (it refuses our signature: a secret to fix) hold every event until it is back;
another 5xx is a failed attempt, retried; another 4xx refuses this event for good.
All URLs form one sink: an event is delivered when every URL has it, and a retry goes only to
the URLs that do not have it yet.
"""

import hashlib
import hmac
import json
import time
from urllib.parse import urlsplit

import httpx

from services.notifier.delivery import Rejected, SinkDown, SinkUnreachable
from services.notifier.settings import WebhookSettings
from shared.config import ConfigError
from shared.messages import Event

TIMEOUT_S = 10.0
HOLD_CODES = {401, 403, 408, 429, 502, 503, 504}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(event: Event, sent_at: float) -> bytes:
    fields = event.fields()
    fields["event_id"] = fields.pop("id")
    return json.dumps({**fields, "sent_at": sent_at}, separators=(",", ":")).encode()


def where(url: str) -> str:
    """A URL as logs and statuses show it: no user, password or query (they may be secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


class WebhookSink:
    name = "webhook"

    def __init__(self, urls: list[str], secret: str):
        self.urls, self._secret = urls, secret
        self._http = httpx.Client(timeout=TIMEOUT_S)
        self._done: tuple[str, set[str]] = ("", set())  # event key -> URLs that have it

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> "WebhookSink | None":
        """The sink, or None while SOUNDHIVE_WEBHOOK_URLS is unset."""
        if not settings.urls:
            return None
        for url in settings.urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"SOUNDHIVE_WEBHOOK_URLS: {where(url)!r} is not an http(s) URL")
        if not settings.secret:
            raise ConfigError("SOUNDHIVE_WEBHOOK_URLS needs SOUNDHIVE_WEBHOOK_SECRET (or "
                              "SOUNDHIVE_WEBHOOK_SECRET_FILE) to sign the deliveries")
        return cls(list(settings.urls), settings.secret)

    def configured(self) -> bool:
        return True

    def connected(self) -> bool:
        return True  # no session: each delivery says whether the receivers are there

    def connect(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self._http.close()

    def send(self, event: Event) -> None:
        key = f"{event.id}:{event.kind}"
        if self._done[0] != key:
            self._done = (key, set())
        for url in self.urls:
            if url not in self._done[1]:
                self._post(url, key, event)
                self._done[1].add(url)

    def _post(self, url: str, key: str, event: Event) -> None:
        sent_at = round(time.time(), 3)
        body = body_of(event, sent_at)
        headers = {"Content-Type": "application/json", "X-Soundhive-Event": key,
                   "X-Soundhive-Timestamp": str(sent_at),
                   "X-Soundhive-Signature": sign(self._secret, body)}
        try:
            response = self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SinkUnreachable(f"{where(url)}: {type(exc).__name__}") from None
        code = response.status_code
        if code < 300:
            return
        reason = f"{where(url)} answered {code} {response.reason_phrase}"
        if code in HOLD_CODES:
            raise SinkDown(reason)
        raise Rejected(reason, permanent=code < 500)
