"""A DeviceHive server stub for the tests, faithful to what the notifier uses of DeviceHive 3.x.

REST under /api/rest (DeviceHive's api gateway also serves /api/rest/token*):
    POST /token {"login", "password"}        -> 201 {"accessToken", "refreshToken"}
    POST /token/refresh {"refreshToken"}     -> 201 {"accessToken"}
    PUT  /device/{id} (bearer)               -> 204; 400 for an id outside [a-zA-Z0-9-]+
    POST /device/{id}/notification (bearer)  -> 201 {"id", "timestamp"}; 400 without a name,
                                                403 for $device-add / $device-update, 404 for
                                                an unknown device
    errors: {"error": code, "message"} with the real server's messages; 401 for a missing,
    unknown or expired access token.
WebSocket at /api/websocket: the same as actions (`authenticate`, `token`, `token/refresh`,
`device/save`, `notification/insert`), answered with the request's `action` and `requestId`
and `status` success, or error with `code` and `error`; a connection's token is checked, and
may expire, at every request.
Access tokens live `access_ttl_s` (short in tests, to force refreshes). Notification bodies are
recorded. stop() takes both servers away (connections refused, WebSockets closed); start()
brings them back on the same ports, with the same state.
"""

import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from websockets.sync.server import Server, ServerConnection, serve

DEVICE_ID = re.compile(r"[a-zA-Z0-9-]+")
RESERVED = ("$device-add", "$device-update")
MESSAGES = {
    "bad_id": "Device Id can only contain letters, digits and dashes.",
    "invalid": "Invalid request parameters",
    "special": "It's forbidden to insert these special notifications: $device-update, "
               "$device-add.",
    "unauthorized": "Unauthorized",
    "expired": "Token has expired",
    "not_found": "Device with such deviceId = {} not found",
}


class Refusal(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Recorded:
    transport: str  # "rest" | "websocket"
    device_id: str
    body: dict
    at: float = field(default_factory=time.time)


class DeviceHiveStub:
    def __init__(self, refresh_token: str = "refresh-secret", login: str = "admin",
                 password: str = "admin-pass", access_ttl_s: float = 60.0):
        self.refresh_token, self.login, self.password = refresh_token, login, password
        self.access_ttl_s = access_ttl_s
        self.devices: dict[str, dict] = {}
        self.notifications: list[Recorded] = []
        self.refreshes = 0
        self.rejections: list[tuple[int, str]] = []
        self._tokens: dict[str, float] = {}  # access token -> expiry (unix)
        self._lock = threading.Lock()
        self._sockets: tuple[socket.socket, socket.socket] | None = (_listener(), _listener())
        self._ports = tuple(sock.getsockname()[1] for sock in self._sockets)
        self.rest_url = f"http://127.0.0.1:{self._ports[0]}/api/rest"
        self.ws_url = f"ws://127.0.0.1:{self._ports[1]}/api/websocket"
        self._http: ThreadingHTTPServer | None = None
        self._ws: Server | None = None
        self._connections: set[ServerConnection] = set()

    # --- the API, shared by both transports ------------------------------------------------

    def issue(self) -> str:
        token = secrets.token_hex(8)
        with self._lock:
            self._tokens[token] = time.time() + self.access_ttl_s
        return token

    def check_token(self, token: str | None) -> None:
        expiry = self._tokens.get(token or "")
        if expiry is None:
            raise Refusal(401, MESSAGES["unauthorized"])
        if time.time() > expiry:
            raise Refusal(401, MESSAGES["expired"])

    def token(self, body: dict) -> dict:
        if (body.get("login"), body.get("password")) != (self.login, self.password):
            raise Refusal(401, MESSAGES["unauthorized"])
        return {"accessToken": self.issue(), "refreshToken": self.refresh_token}

    def refresh(self, body: dict) -> dict:
        if body.get("refreshToken") != self.refresh_token:
            raise Refusal(401, "Invalid refresh token")
        self.refreshes += 1
        return {"accessToken": self.issue()}

    def save_device(self, device_id: str, device: dict | None) -> None:
        if not DEVICE_ID.fullmatch(device_id or ""):
            raise Refusal(400, MESSAGES["bad_id"])
        self.devices[device_id] = {"id": device_id, **(device or {}), "networkId": 1}

    def insert(self, transport: str, device_id: str, notification: dict | None) -> dict:
        name = (notification or {}).get("notification")
        if name is None:
            raise Refusal(400, MESSAGES["invalid"])
        if name in RESERVED:
            raise Refusal(403, MESSAGES["special"])
        if device_id not in self.devices:
            raise Refusal(404, MESSAGES["not_found"].format(device_id))
        with self._lock:
            self.notifications.append(Recorded(transport, device_id, notification or {}))
            number = len(self.notifications)
        return {"id": number, "timestamp": notification.get("timestamp") if notification
                else None}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        rest, ws = self._sockets or (_listener(self._ports[0]), _listener(self._ports[1]))
        self._sockets = None
        self._http = _RestServer(self, rest)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._ws = serve(self._serve_websocket, sock=ws)
        threading.Thread(target=self._ws.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._ws is not None:
            self._ws.shutdown()
            self._ws = None
        for connection in list(self._connections):
            connection.close()

    # --- WebSocket ---------------------------------------------------------------------------

    def _serve_websocket(self, connection: ServerConnection) -> None:
        if connection.request is None or connection.request.path != "/api/websocket":
            connection.close(1008, "not found")
            return
        self._connections.add(connection)
        session: dict[str, Any] = {"token": None}
        try:
            for raw in connection:
                request = json.loads(raw)
                answer = {"action": request.get("action"), "requestId": request.get("requestId")}
                try:
                    answer |= {"status": "success", **self._ws_action(session, request)}
                except Refusal as refusal:
                    self.rejections.append((refusal.code, refusal.message))
                    answer |= {"status": "error", "code": refusal.code, "error": refusal.message}
                connection.send(json.dumps(answer))
        except Exception:  # the connection went away (or stop() closed it)
            pass
        finally:
            self._connections.discard(connection)

    def _ws_action(self, session: dict[str, Any], request: dict) -> dict:
        action = request.get("action")
        if action == "authenticate":
            self.check_token(request.get("token"))
            session["token"] = request.get("token")
            return {}
        if action == "token":
            return self.token(request)
        if action == "token/refresh":
            return self.refresh(request)
        self.check_token(session["token"])
        if action == "device/save":
            self.save_device(request.get("deviceId") or "", request.get("device"))
            return {}
        if action == "notification/insert":
            inserted = self.insert("websocket", request.get("deviceId") or "",
                                   request.get("notification"))
            return {"notification": inserted}
        raise Refusal(400, f"Unknown action requested: {action}")


class _RestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: DeviceHiveStub, sock: socket.socket):
        self.stub = stub
        super().__init__(sock.getsockname(), _RestHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock


class _RestHandler(BaseHTTPRequestHandler):
    server: _RestServer

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _route(self, method: str) -> None:
        stub = self.server.stub
        path = self.path.split("?")[0].removeprefix("/api/rest/")
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))
                              or b"{}")
            if (method, path) == ("POST", "token"):
                return self._answer(201, stub.token(body))
            if (method, path) == ("POST", "token/refresh"):
                return self._answer(201, stub.refresh(body))
            stub.check_token(self.headers.get("Authorization", "").removeprefix("Bearer "))
            parts = path.split("/")
            if method == "PUT" and len(parts) == 2 and parts[0] == "device":
                stub.save_device(unquote(parts[1]), body)
                return self._answer(204, None)
            if method == "POST" and len(parts) == 3 and parts[::2] == ["device", "notification"]:
                return self._answer(201, stub.insert("rest", unquote(parts[1]), body))
            raise Refusal(404, "Not found")
        except Refusal as refusal:
            stub.rejections.append((refusal.code, refusal.message))
            self._answer(refusal.code, {"error": refusal.code, "message": refusal.message})

    def _answer(self, code: int, body: dict | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _listener(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock
