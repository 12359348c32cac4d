"""Webhooks: each event POSTed as JSON to every URL of SOUNDHIVE_WEBHOOK_URLS (comma-separated).

The body is the event as the events API shows it, with `event_id` for `id` (the DeviceHive
parameters' names), an end's `clip` and `spectrogram` URLs while a recorder runs
(shared/clips.announced: absolute under SOUNDHIVE_PUBLIC_URL) and `sent_at`, the unix time also
sent as `X-Soundhive-Timestamp`. Headers:
    X-Soundhive-Signature  sha256=<hex HMAC-SHA256 of the body with SOUNDHIVE_WEBHOOK_SECRET (or
                           the file SOUNDHIVE_WEBHOOK_SECRET_FILE names)>. The timestamp is inside
                           the signed body, so a receiver can refuse replays of old bodies;
    X-Soundhive-Event      `<event id>:<kind>`, the same on every retry (delivery is at least
                           once: receivers deduplicate on it); percent-encoded as UTF-8 (a
                           header is ASCII; ids carry source names such as `厨房`).
Answers: 2xx delivered. Unreachable and timeouts (`connecting`), 408, 429, 502-504 (the receiver
is busy or its backend down: `retrying`) and 401/403 (it refuses our signature: a secret to fix,
`failed`) hold every event until it is back; another 5xx is a failed attempt, retried
(`retrying`); another 4xx refuses this event for good.
Each URL is a sink of its own, with its own queue, so one that is down holds back only itself:
`webhook` for the first URL, `webhook-2`, `webhook-3`, ... for the next (a queue belongs to a
position in the list); they share the SOUNDHIVE_WEBHOOK_* filters.
"""

import hashlib
import hmac
import json
import time
from urllib.parse import quote, urlsplit

import httpx

from services.notifier.delivery import Rejected, SinkBusy, SinkDown, SinkUnreachable
from services.notifier.settings import WebhookSettings
from shared.config import ConfigError
from shared.messages import Event
from shared.redact import where

TIMEOUT_S = 10.0
BUSY_CODES = {408, 429, 502, 503, 504}
CREDENTIAL_CODES = {401, 403}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(event: Event, sent_at: float, links: dict[str, str] | None = None) -> bytes:
    fields = event.fields()
    fields["event_id"] = fields.pop("id")
    return json.dumps({**fields, **(links or {}), "sent_at": sent_at},
                      separators=(",", ":")).encode()


class WebhookSink:
    def __init__(self, name: str, url: str, secret: str):
        self.name, self.url, self._secret = name, url, secret
        self._http = httpx.Client(timeout=TIMEOUT_S)

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> list["WebhookSink"]:
        """One sink per URL of SOUNDHIVE_WEBHOOK_URLS (none while it is unset)."""
        if not settings.urls:
            return []
        for url in settings.urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"SOUNDHIVE_WEBHOOK_URLS: {where(url)!r} is not an http(s) URL")
        if not settings.secret:
            raise ConfigError("SOUNDHIVE_WEBHOOK_URLS needs SOUNDHIVE_WEBHOOK_SECRET (or "
                              "SOUNDHIVE_WEBHOOK_SECRET_FILE) to sign the deliveries")
        return [cls("webhook" if n == 1 else f"webhook-{n}", url, settings.secret)
                for n, url in enumerate(settings.urls, 1)]

    def configured(self) -> bool:
        return True

    def connected(self) -> bool:
        return True  # no session: each delivery says whether the receiver is there

    def connect(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self._http.close()

    def send(self, event: Event, links: dict[str, str]) -> None:
        url, key = self.url, f"{event.id}:{event.kind}"
        sent_at = round(time.time(), 3)
        body = body_of(event, sent_at, links)
        headers = {"Content-Type": "application/json", "X-Soundhive-Event": quote(key, safe=":/"),
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
        if code in BUSY_CODES:
            raise SinkBusy(reason)
        if code in CREDENTIAL_CODES:
            raise SinkDown(reason)
        raise Rejected(reason, permanent=not Rejected.transient(code))
