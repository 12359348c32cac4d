"""A network source whose URL carries a password (userinfo) and a token (query), run by
`soundhive up` with every sink on: the real URL opens the stream (the camera refuses any
other), and neither secret shows anywhere: the api (/sources, /events, SSE, /sinks, /metrics),
every service's /metrics, MQTT topics and payloads (Home Assistant discovery included), webhook
bodies, DeviceHive notifications, every service's log, up's stdout (event lines) and stderr,
and the command lines of `up` and every process under it (the sources come from
--sources-file). A second, named source that answers 404 puts an error naming its URL in its
status and in capture's log."""

import base64
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psutil
import pytest
from devicehive_stub import DeviceHiveStub
from notifier_helpers import Mosquitto, MqttCollector, WebhookReceiver
from pipeline_helpers import REPO, wait_for
from test_notifier_service import sink_env

from services.features.settings import FeaturesSettings
from shared.config import features_replicas
from shared.ports import free_port
from soundhive.redis_process import die_with_parent

PASSWORD, TOKEN = "Pa55-w0rd-9f3k", "T0ken-7c1e-42"
BASIC = "Basic " + base64.b64encode(f"viewer:{PASSWORD}".encode()).decode()
WAIT_S = 120  # the models load in each process


@pytest.fixture
def camera(clips_dir: Path) -> Iterator[tuple[int, list[str]]]:
    """Serves the clips only to viewer:PASSWORD (Basic, after a challenge, as FFmpeg answers
    one) with ?token=TOKEN; yields its port and the paths it served."""
    served: list[str] = []

    class Camera(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(clips_dir), **kwargs)

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != BASIC:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif parse_qs(urlsplit(self.path).query).get("token") != [TOKEN]:
                self.send_error(403)
            else:
                served.append(urlsplit(self.path).path)
                super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], served
    server.shutdown()


def test_no_password_or_token_in_any_output(camera, tmp_path: Path, mosquitto: Mosquitto,
                                            mqtt_collector: MqttCollector,
                                            webhook: WebhookReceiver, stub: DeviceHiveStub):
    port, served = camera
    secret_query = f"token={TOKEN}&channel=1"
    shown = f"http://127.0.0.1:{port}/dog.mp3?token=***&channel=1"
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env |= sink_env(mosquitto, webhook, stub.ws_url, stub.refresh_token)
    api = f"http://127.0.0.1:{free_port()}"
    logs, out, err = tmp_path / "logs", tmp_path / "up.out", tmp_path / "up.err"
    sources = tmp_path / "sources"  # not on a command line, where `ps` shows it
    sources.write_text(json.dumps([
        f"url:http://viewer:{PASSWORD}@127.0.0.1:{port}/dog.mp3?{secret_query}",
        f"door=url:http://viewer:{PASSWORD}@127.0.0.1:{port}/gone.mp3?{secret_query}"]))
    with out.open("w") as stdout, err.open("w") as stderr:
        up = subprocess.Popen(
            [sys.executable, "-m", "soundhive", "up", "--fast", "--metrics-port-base", "0",
             "--api-port", api.rsplit(":", 1)[1], "--log-dir", str(logs),
             "--sources-file", str(sources)],
            cwd=REPO, env=env, stdout=stdout, stderr=stderr, preexec_fn=die_with_parent)
    try:
        def barks(bodies: list[dict]) -> list[str]:
            return [b["kind"] for b in bodies if (b["source"], b["label"]) == (shown, "Bark")]

        wait_for(lambda: barks([n.body["parameters"] for n in stub.notifications])
                 == barks([r.body for r in webhook.received])
                 == barks(mqtt_collector.events()) == ["start", "end"], WAIT_S,
                 "the Bark start and end at every sink")
        door = wait_for(lambda: (s := _sources(api).get("door")) and s["state"] == "retrying"
                        and s, WAIT_S, "the named source to fail and retry")
        outputs = {"command lines": _command_lines(up.pid)}
        outputs |= {path: httpx.get(f"{api}{path}").text
                    for path in ("/sources", "/events?limit=200", "/sinks", "/metrics")}
        outputs["SSE"] = _sse(api)
        for log in sorted(logs.glob("*.log")):
            if port_seen := re.search(r"metrics on :(\d+)", log.read_text()):
                outputs[f"{log.stem} /metrics"] = httpx.get(
                    f"http://127.0.0.1:{port_seen[1]}/metrics").text
        outputs["MQTT"] = "\n".join(f"{topic} {payload!r}" for topic, payload, _
                                    in list(mqtt_collector.messages))
        outputs["webhook"] = json.dumps([r.body for r in webhook.received])
        outputs["DeviceHive"] = json.dumps([n.body for n in stub.notifications]
                                           + list(stub.devices.values()))
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    outputs |= {path.name: path.read_text() for path in [out, err, *logs.glob("*.log")]}

    assert "/dog.mp3" in served  # opened with the real URL
    assert door["detail"] == (f"cannot open http://127.0.0.1:{port}/gone.mp3?token=***&"
                              "channel=1: Server returned 404 Not Found")
    assert "source door failed: cannot open" in outputs["capture-0.log"]
    assert f"{shown}\tBark\t" in outputs["up.out"]
    assert any(topic.startswith("homeassistant/") for topic, _, _ in mqtt_collector.messages)
    for name in ("/sources", "/events?limit=200", "SSE", "capture-0 /metrics", "webhook",
                 "DeviceHive", "MQTT"):
        assert shown in outputs[name], name
    # The api's, and each service's: one features worker per core (up's default).
    services = 4 + features_replicas(FeaturesSettings.threads_set())
    assert len([name for name in outputs if name.endswith("/metrics")]) == 1 + services
    for name, text in outputs.items():
        for secret in (PASSWORD, TOKEN, BASIC.split()[1]):
            assert secret not in text, f"{name} shows {secret}"


def _command_lines(pid: int) -> str:
    """The command lines of `up` and of every process under it (what `ps` shows anyone)."""
    up = psutil.Process(pid)
    processes = [up, *up.children(recursive=True)]
    assert {"capture", "api", "redis-server"} <= {
        word for p in processes for word in [*p.cmdline(), p.name()]}
    return "\n".join(" ".join(p.cmdline()) for p in processes)


def _sources(api: str) -> dict[str, dict]:
    return {s["source"]: s for s in httpx.get(f"{api}/sources").json()["sources"]}


def _sse(api: str) -> str:
    """The SSE stream from its start, up to the Bark's end."""
    lines = []
    with httpx.stream("GET", f"{api}/events/stream", headers={"Last-Event-ID": "0-0"},
                      timeout=30) as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("data:") and '"Bark"' in line and '"kind": "end"' in line:
                break
    return "\n".join(lines)
