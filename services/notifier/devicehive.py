"""DeviceHive: each start and end is one notification of the soundhive device.

Its documented protocol (DeviceHive 3.x; the `devicehive` Python package's requests), over REST
(`http(s)://host/api/rest`) or WebSocket (`ws(s)://host/api/websocket`), chosen by the URL
scheme; both speak the same requests:
    log in        refresh token: POST /token/refresh {"refreshToken"} -> {"accessToken"}
                  (WebSocket: action `token/refresh`); login and password: POST /token
                  {"login", "password"} -> {"accessToken", "refreshToken"} (action `token`);
                  or an access token as it is. REST then sends `Authorization: Bearer <access>`;
                  WebSocket sends action `authenticate` {"token"} once per connection;
    register      PUT /device/{id} {"name", "data"} (action `device/save`), at every connect;
    notify        POST /device/{id}/notification {"notification", "timestamp", "parameters"}
                  (action `notification/insert`) -> 201 {"id", "timestamp"}.
WebSocket requests carry a `requestId`; answers echo it with `status` success or error (`code`,
`error`); REST errors are {"error": code, "message"}.

The notification's name is SOUNDHIVE_DEVICEHIVE_NOTIFICATION (`sound_event`) and its
`parameters` the event's fields (event_id, source, label, kind, score, start, end, start_time,
end_time, model): structured, never JSON in the name as the 2018 seed sent it. Its `timestamp`
is the sound's time (start_time or end_time) in DeviceHive's format, UTC milliseconds.

One session at a time. A 401 (access token expired) logs in again once and retries; a 404 (the
device is gone) registers it again once and retries. Refused credentials, a device the server
will not register (400: bad id) and a refused notification name (403: `$device-add` and
`$device-update` are the server's) hold the events, the sink `failed` with the server's reason,
until the configuration is fixed; another 4xx refuses the event for good, a 5xx is retried.

Configuration: one unit (URL, credentials, device, notification name), either the
SOUNDHIVE_DEVICEHIVE_* environment's (settings.DeviceHiveSettings: URL, REFRESH_TOKEN |
ACCESS_TOKEN | LOGIN + PASSWORD, DEVICE_ID, NOTIFICATION; each secret may also come from a
file, NAME_FILE) or, when the dashboard stored a URL, all of the store's (streams.
DEVICEHIVE_CONFIG: url, device_id, notification, refresh_token, access_token), never a mix: a
stored URL never receives the environment's credentials. A stored URL must be on
SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS (checked again here: others may write Redis). The store is
read every CONFIG_POLL_S: a change closes the session and the next event opens one with the new
settings, no restart. Without a URL the sink is disabled (events pass it by). A bad environment
is a one-line error at start; a bad or refused stored configuration is the sink's `failed`
status.
"""

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import redis
import websockets
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from services.notifier.delivery import Rejected, SinkDown, SinkUnreachable
from services.notifier.settings import DeviceHiveSettings
from shared import streams
from shared.config import ConfigError
from shared.devicehive import where
from shared.messages import Event

log = logging.getLogger("soundhive.notifier.devicehive")

TIMEOUT_S = 10.0
CONFIG_POLL_S = 2.0


def timestamp(unix: float) -> str:
    """DeviceHive's timestamp format: yyyy-MM-ddTHH:mm:ss.SSS, UTC."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def notification(event: Event, name: str,
                 links: dict[str, str] | None = None) -> dict[str, Any]:
    parameters = event.fields() | (links or {})
    parameters["event_id"] = parameters.pop("id")
    when = event.start_time if event.kind == "start" else event.end_time
    return {"notification": name, "timestamp": timestamp(when or event.start_time),
            "parameters": parameters}


class ApiError(Exception):
    """An error answer of the server: its code and message."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code} {message}")
        self.code = code


class Transport(Protocol):
    def open(self) -> None: ...

    def request(self, action: str, method: str, path: str, body: dict[str, Any],
                wrap: str | None = None) -> dict[str, Any]:
        """One request; SinkDown when the server cannot be reached, ApiError for an error
        answer. REST sends `body[wrap]` (or body) to `path`; WebSocket sends `action` with
        body's fields."""
        ...

    def authenticate(self, access_token: str) -> None: ...

    def close(self) -> None: ...


class Rest:
    def __init__(self, url: str):
        self.base = url.rstrip("/")
        self._http = httpx.Client(timeout=TIMEOUT_S)
        self._headers: dict[str, str] = {}

    def open(self) -> None:
        pass

    def authenticate(self, access_token: str) -> None:
        self._headers = {"Authorization": f"Bearer {access_token}"}

    def request(self, action: str, method: str, path: str, body: dict[str, Any],
                wrap: str | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, f"{self.base}/{path}", headers=self._headers,
                                          json=body[wrap] if wrap else body)
        except httpx.HTTPError as exc:
            raise SinkUnreachable(f"cannot reach DeviceHive at {where(self.base)}: "
                           f"{type(exc).__name__}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _message(response))
        return response.json() if response.content else {}

    def close(self) -> None:
        self._http.close()


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.reason_phrase)
    except (ValueError, AttributeError):
        return response.reason_phrase


class WebSocket:
    def __init__(self, url: str):
        self.url = url
        self._ws: ClientConnection | None = None

    def open(self) -> None:
        try:
            self._ws = ws_connect(self.url, open_timeout=TIMEOUT_S, close_timeout=1)
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            raise SinkUnreachable(f"cannot reach DeviceHive at {where(self.url)}: "
                           f"{type(exc).__name__}") from None

    def authenticate(self, access_token: str) -> None:
        self.request("authenticate", "", "", {"token": access_token})

    def request(self, action: str, method: str, path: str, body: dict[str, Any],
                wrap: str | None = None) -> dict[str, Any]:
        if self._ws is None:
            raise SinkUnreachable("DeviceHive WebSocket not open")
        request_id = str(uuid.uuid4())
        try:
            self._ws.send(json.dumps({"action": action, "requestId": request_id, **body}))
            while True:
                answer = json.loads(self._ws.recv(timeout=TIMEOUT_S))
                if answer.get("requestId") == request_id:
                    break
        except (OSError, TimeoutError, websockets.WebSocketException, ValueError) as exc:
            self.close()
            raise SinkUnreachable(f"lost DeviceHive at {where(self.url)}: {type(exc).__name__}") \
                from None
        if answer.get("status") != "success":
            raise ApiError(int(answer.get("code") or 500), str(answer.get("error") or "error"))
        return answer

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None


class Session:
    """A logged-in connection with the device registered."""

    def __init__(self, config: DeviceHiveSettings):
        self.config = config
        scheme = urlsplit(config.url).scheme
        self.transport: Transport = WebSocket(config.url) if scheme.startswith("ws") \
            else Rest(config.url)
        self._refresh_token = config.refresh_token

    def open(self) -> None:
        self.transport.open()
        self._log_in()
        self._register()

    def insert(self, event: Event, links: dict[str, str]) -> None:
        body = {"deviceId": self.config.device_id,
                "notification": notification(event, self.config.notification, links)}
        path = f"device/{self.config.device_id}/notification"
        try:
            self._call("notification/insert", "POST", path, body, "notification")
        except ApiError as exc:
            if exc.code == 404:  # the device was deleted: register it again, once
                self._register()
                self._call("notification/insert", "POST", path, body, "notification")
                return
            raise

    def close(self) -> None:
        self.transport.close()

    def _call(self, action: str, method: str, path: str, body: dict[str, Any],
              wrap: str | None = None) -> dict[str, Any]:
        """A request; on 401, log in again (the access token expired) and retry once."""
        try:
            return self.transport.request(action, method, path, body, wrap)
        except ApiError as exc:
            if exc.code != 401:
                raise
        self._log_in()
        return self.transport.request(action, method, path, body, wrap)

    def _log_in(self) -> None:
        config = self.config
        try:
            if self._refresh_token:
                access = self.transport.request("token/refresh", "POST", "token/refresh",
                                                {"refreshToken": self._refresh_token})
            elif config.login:
                access = self.transport.request("token", "POST", "token",
                                                {"login": config.login,
                                                 "password": config.password})
                self._refresh_token = access.get("refreshToken", "")
            else:
                access = {"accessToken": config.access_token}
            self.transport.authenticate(str(access["accessToken"]))
        except ApiError as exc:
            raise SinkDown(f"DeviceHive refused the credentials: {exc}") from None
        except KeyError:
            raise SinkDown("DeviceHive's token answer has no accessToken") from None

    def _register(self) -> None:
        device_id = self.config.device_id
        body = {"deviceId": device_id, "device": {"name": device_id,
                                                  "data": {"agent": "soundhive"}}}
        try:
            self._call("device/save", "PUT", f"device/{device_id}", body, "device")
        except ApiError as exc:
            raise SinkDown(f"DeviceHive refused device {device_id!r}: {exc}") from None


class DeviceHiveSink:
    name = "devicehive"

    def __init__(self, env: DeviceHiveSettings, client: redis.Redis):
        self.env, self.redis = env, client
        self.config = env
        self._problem: str | None = None
        self._session: Session | None = None
        self._next_poll = 0.0

    def configured(self) -> bool:
        return bool(self.config.url)

    def connected(self) -> bool:
        return self._session is not None

    def connect(self) -> None:
        if self._problem:
            raise SinkDown(self._problem)
        session = Session(self.config)
        try:
            session.open()
        except SinkDown:
            session.close()
            raise
        self._session = session
        log.info("connected to DeviceHive %s as device %s", where(self.config.url),
                 self.config.device_id)

    def send(self, event: Event, links: dict[str, str]) -> None:
        if self._session is None:
            raise SinkDown("not connected")
        try:
            self._session.insert(event, links)
        except SinkDown:
            self.close()
            raise
        except ApiError as exc:
            if exc.code in (401, 403):  # credentials or the notification name: to fix
                self.close()
                raise SinkDown(f"DeviceHive refused the notification: {exc}") from None
            raise Rejected(f"DeviceHive refused the notification: {exc}",
                           permanent=not Rejected.transient(exc.code)) from None

    def tick(self) -> None:
        """Apply the dashboard's configuration when it changed (every CONFIG_POLL_S)."""
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + CONFIG_POLL_S
        config = self.env.in_force(self.redis.hgetall(streams.DEVICEHIVE_CONFIG))
        if config == self.config:
            return
        self.close()
        self.config = config
        self._problem = None if config is self.env else self._refusal(config)
        log.info("DeviceHive configuration changed (%s): %s",
                 "environment" if config is self.env else "dashboard", config.public())

    def _refusal(self, stored: DeviceHiveSettings) -> str | None:
        """Why a stored configuration cannot be used (None: it can). The allow-list is the
        environment's: a stored URL never allows itself."""
        if not self.env.allows(stored.url):
            return f"refused configuration: {self.env.refusal(stored.url)}"
        try:
            stored.check("stored DeviceHive ")
        except ConfigError as exc:
            return f"bad configuration: {exc}"
        return None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
