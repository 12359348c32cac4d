"""The tests' shared helpers: the repository and the shared folder beside it, free ports, a
restartable real redis-server, service processes, polling, reading the streams back."""

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis
import soundfile

from services.classifier.events import EventTracker, Rules
from services.registry import SERVICES
from shared import streams
from shared.audio import load_audio
from shared.hierarchy import LabelTree
from shared.messages import SourceStatus
from shared.ports import free_port
from soundhive.redis_process import RedisProcess, die_with_parent

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # real models and clips, never copied into the repository


def plain_tracker(class_names: list[str]) -> EventTracker:
    """The shipped event rules over classes with no hierarchy."""
    return EventTracker(Rules.load(), LabelTree(class_names, None))


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.2) -> object:
    """Poll until predicate() is truthy (its value is returned); fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class RedisServer(RedisProcess):
    """A real redis-server on a free 127.0.0.1 port, restartable; `appendonly` keeps an AOF."""

    def __init__(self, folder: Path, appendonly: bool = False):
        super().__init__(folder, port=free_port(), appendonly=appendonly)


class Services:
    """Starts service processes (services/registry.py) against the test Redis."""

    def __init__(self, server: RedisServer, logs: Path, models_dir: Path):
        self.server, self.logs, self.models_dir = server, logs, models_dir
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_URL": self.server.url,
            "SOUNDHIVE_MODELS": str(self.models_dir),
            "SOUNDHIVE_METRICS_PORT": "0",
            "SOUNDHIVE_BLOCK_MS": "200",
            "SOUNDHIVE_CLAIM_IDLE_S": "3",
            **extra,
        }

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = self.logs / f"{name}-{len(self.processes)}.log"
        process = SERVICES[name].launch(self.env(**env), options=args, cwd=REPO,
                                        stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                        preexec_fn=die_with_parent)
        self.processes.append((process, log))
        return process

    def log_text(self, process: subprocess.Popen) -> str:
        return next(log.read_text() for p, log in self.processes if p is process)

    def stop_all(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_api(services: Services, **env: str) -> str:
    """The api service on a free port (on 127.0.0.1 unless env says otherwise), once ready;
    returns its base URL."""
    port = free_port()
    services.start("api", **{"SOUNDHIVE_API_PORT": str(port), "SOUNDHIVE_API_HOST": "127.0.0.1",
                             **env})
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: api_ready(url), 60, "the api to be ready")
    return url


def api_ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def read_all(client: redis.Redis, stream: str, schema: type) -> list:
    """Every message still in `stream`, decoded as `schema`."""
    return [schema.decode(fields[streams.MESSAGE_FIELD]) for _, fields in client.xrange(stream)]


def captured_chunks(client: redis.Redis) -> set[tuple[str, int]]:
    """(source, seq) of every chunk capture wrote, from the sources it reports as finished (the
    audio stream itself is trimmed as soon as the features workers acknowledge its entries)."""
    statuses = [SourceStatus.decode(raw) for raw in client.hvals(streams.SOURCES_HASH)]
    assert statuses and all(status.state == "finished" for status in statuses), statuses
    return {(status.source, seq) for status in statuses for seq in range(status.seq + 1)}


def dog_scene(clips_dir: Path, folder: Path) -> tuple[Path, np.ndarray]:
    """The dog clip with 3 s of faint noise before and 4 s after: room for both rolls."""
    rng = np.random.default_rng(0)
    dog = load_audio(clips_dir / "dog.mp3")
    scene = np.concatenate([np.zeros(3 * 16000, np.float32), dog,
                            np.zeros(4 * 16000, np.float32)])
    scene += rng.normal(0, 1e-3, len(scene)).astype(np.float32)
    path = folder / "dog-scene.wav"
    soundfile.write(path, scene, 16000, "FLOAT")
    return path, scene
