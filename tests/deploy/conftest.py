"""The compose stack as local processes (session-wide: the stack tests, the Kubernetes contract
test and the dashboard test all look at the same running pipeline)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import soundfile
from deploy_helpers import (
    IMAGE_PATHS,
    compose_env,
    default_services,
    host_path,
    load_compose,
    ports_in,
    resolve_target,
    soundhive_services,
)
from pipeline_helpers import SHARED, free_port, wait_for

from soundhive.redis_process import die_with_parent

CLIP = SHARED / "data" / "clips" / "dog.mp3"


@dataclass
class LocalService:
    name: str
    command: list[str]
    env: dict[str, str]
    ports: dict[int, int]  # container port -> local port
    healthcheck: list[str] | None
    log: Path
    process: subprocess.Popen | None = None
    health_seen: list[int] = field(default_factory=list)  # healthcheck exit statuses

    def get(self, container_port: int, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.ports[container_port]}{path}", timeout=5)

    def healthy_now(self) -> bool:
        if not self.healthcheck:
            return False
        status = subprocess.run(self.healthcheck, env=self.env, capture_output=True,
                                timeout=10).returncode
        self.health_seen.append(status)
        return status == 0


@dataclass
class Stack:
    compose: dict
    redis_url: str
    services: dict[str, LocalService]

    def url(self, service: str, container_port: int) -> str:
        return f"http://127.0.0.1:{self.services[service].ports[container_port]}"

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.log.read_text(errors='replace')[-3000:]}"
                         for s in self.services.values())


def _local(word: str) -> str:
    return IMAGE_PATHS.get(word, word)


def _plan(compose: dict, folder: Path, models_dir: Path,
          redis_port: int) -> dict[str, LocalService]:
    services = soundhive_services(compose)
    port_map = {(name, p): free_port() for name, s in services.items() for p in ports_in(s)}
    port_map[("redis", 6379)] = redis_port
    hosts = re.compile(r"\b(" + "|".join(map(re.escape, default_services(compose))) + r"):(\d+)")
    venv_bin = str(Path(sys.executable).parent)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("SOUNDHIVE_") and k != "REDIS_URL"}
    planned = {}
    for name, service in services.items():
        image = resolve_target(service["build"]["target"])
        env = {**base_env, **{k: v for k, v in image.env.items() if k != "PATH"}}
        env["PATH"] = f"{venv_bin}:{base_env.get('PATH', '')}"
        env.update(compose_env(service))
        ports = {}
        for key, value in list(env.items()):
            if key.startswith(("SOUNDHIVE_", "REDIS_")):
                value = hosts.sub(lambda m: f"127.0.0.1:{port_map[(m[1], int(m[2]))]}", value)
                if key.endswith("_HOST") and value == "0.0.0.0":
                    value = "127.0.0.1"  # loopback only on this machine
                if key.endswith("_PORT") and (name, int(value or 0)) in port_map:
                    ports[int(value)] = port_map[(name, int(value))]
                    value = str(ports[int(value)])
                if value.startswith("/"):
                    value = host_path(value, service, {"models": models_dir}) or value
                env[key] = value
        command = [*(image.entrypoint or []), *(service.get("command") or image.cmd or [])]
        test = (service.get("healthcheck") or {}).get("test") or ["CMD", *image.healthcheck]
        planned[name] = LocalService(
            name, [_local(w) for w in command], env, ports, [_local(w) for w in test[1:]],
            folder / f"{name}.log")
    return planned


@pytest.fixture(scope="session")
def stack(tmp_path_factory, models_dir) -> Stack:
    """docker-compose.yml's default services as processes, with capture replaying dog.mp3 (the
    compose file's own SOUNDHIVE_CAPTURE_SOURCES variable), against a redis-server started with
    the compose file's Redis command; running once every service's healthcheck has passed."""
    folder = tmp_path_factory.mktemp("compose")
    # A second, long and quiet source keeps capture running (and scraped) for the whole session.
    hum = folder / "hum.wav"
    rng = np.random.default_rng(0)
    soundfile.write(hum, (rng.standard_normal(16000 * 120) * 0.001).astype(np.float32), 16000)
    compose = load_compose({"SOUNDHIVE_CAPTURE_SOURCES": f"file:{CLIP} file:{hum}"})
    redis_port = free_port()
    redis_cmd = [*compose["services"]["redis"]["command"], "--port", str(redis_port),
                 "--bind", "127.0.0.1", "--dir", str(folder)]
    redis_process = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    client = redis.Redis.from_url(redis_url)

    def redis_up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_for(redis_up, 10, "redis-server")
    services = _plan(compose, folder, models_dir, redis_port)
    # Workers first, capture last (as compose would once its dependencies are healthy, and so
    # that the replay, in real time, is still running when its health is checked).
    order = sorted(services, key=lambda n: n == "capture")
    result = Stack(compose, redis_url, services)
    try:
        for name in order:
            service = services[name]
            service.process = subprocess.Popen(
                service.command, cwd=folder, env=service.env, stdout=service.log.open("wb"),
                stderr=subprocess.STDOUT, preexec_fn=die_with_parent)

        def all_healthy() -> bool:
            pending = [s for s in services.values() if 0 not in s.health_seen]
            for service in pending:
                if service.process.poll() is not None and 0 not in service.health_seen:
                    pytest.fail(f"{service.name} exited ({service.process.returncode}) before "
                                f"its healthcheck passed:\n{result.logs()}")
                service.healthy_now()
            return all(0 in s.health_seen for s in services.values())

        wait_for(all_healthy, 45, "every service's healthcheck", interval=0.5)
        yield result
    finally:
        for service in services.values():
            if service.process and service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in services.values():
            if service.process:
                try:
                    service.process.wait(20)
                except subprocess.TimeoutExpired:
                    service.process.kill()
        redis_process.terminate()
        redis_process.wait(10)


@pytest.fixture(scope="session")
def dog_event(stack: Stack) -> dict:
    """The first event the api shows for the replayed clip."""
    api = stack.url("api", 8000)
    accept = {json.loads(line)["file"]: json.loads(line)["accept"]
              for line in (CLIP.parent / "labels.jsonl").read_text().splitlines() if line}

    def event() -> dict | None:
        try:
            events = httpx.get(f"{api}/events", timeout=5).json()["events"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return next((e for e in events if e["label"] in accept[CLIP.name]), None)

    deadline = time.monotonic() + 45
    while (found := event()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"no event for {CLIP.name} at the api's /events:\n{stack.logs()}")
        time.sleep(0.5)
    return found
