"""Helpers of the notifier tests: a real Mosquitto on a free port, an MQTT subscriber, and a
webhook receiver that verifies signatures."""

import hashlib
import hmac
import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as paho
from pipeline_helpers import free_port, wait_for

from soundhive.redis_process import die_with_parent

WEBHOOK_SECRET = "webhook-secret"


class Mosquitto:
    """A real broker on a free port; retained messages and sessions persist across restarts."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                               f"persistence true\npersistence_location {folder}/\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent)
        wait_for(self._listening, 10, f"mosquitto on port {self.port}", 0.05)

    def _listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class MqttCollector:
    """Subscribes to `#` with a persistent session (QoS 1): keeps every message, even those
    published while it was away, and the latest retained payload of each topic."""

    def __init__(self, port: int):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-collector",
                                  clean_session=False)
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: object,
                    message: paho.MQTTMessage) -> None:
        self.messages.append((message.topic, message.payload, bool(message.retain)))

    def payloads(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _ in list(self.messages) if t == topic]

    def events(self) -> list[dict]:
        return [json.loads(p) for p in self.payloads("soundhive/events")]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, wait_s: float = 1.0) -> bytes | None:
    """The retained payload of a topic, as a new subscriber gets it."""
    got: list[bytes] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, m: got.append(m.payload) if m.retain else None
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + wait_s
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    return got[-1] if got else None


@dataclass
class Received:
    body: dict
    headers: dict[str, str]
    at: float = field(default_factory=time.time)


class WebhookReceiver:
    """Accepts POSTs whose X-Soundhive-Signature is the HMAC of the body with WEBHOOK_SECRET
    (401 otherwise); stop() and start() take it away and bring it back on the same port; while
    `answer` is not 204 it answers that and keeps nothing (`refused` counts them)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[Received] = []
        self.bad_signatures = 0
        self.answer = 204
        self.refused = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body,
                                                hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(self.headers.get("X-Soundhive-Signature", ""), expected)
                answer = receiver.answer if ok else 401
                if not ok:
                    receiver.bad_signatures += 1
                elif answer == 204:
                    receiver.received.append(Received(json.loads(body), dict(self.headers)))
                else:
                    receiver.refused += 1
                self.send_response(answer)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class Caught:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return f"{self.method} {self.path} {self.headers} {self.body!r}"


class Catcher:
    """An attacker's HTTP server: records every request and refuses it with a 401 whose message
    (ANSWER) an SSRF probe would like to read back."""

    ANSWER = "catcher-answer-8d2f"

    def __init__(self) -> None:
        self.requests: list[Caught] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                catcher.requests.append(Caught(self.command, self.path, dict(self.headers),
                                               body))
                answer = json.dumps({"error": 401, "message": Catcher.ANSWER}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = _record

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/api/rest"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
