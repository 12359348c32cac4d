"""Shared test fixtures: the real model folder and clips beside the repository, a real HTTP
server on loopback for download tests, and a real redis-server on a free port per test
(restartable) with real service processes (helpers in pipeline_helpers.py)."""

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from notifier.notifier_helpers import WebhookReceiver
from pipeline_helpers import SHARED, RedisServer, Services


@pytest.fixture(scope="session")
def models_dir() -> Path:
    folder = Path(os.environ.get("SOUNDHIVE_MODELS") or SHARED / "models")
    if not (folder / "yamnet.tflite").is_file():
        pytest.fail(f"real models are needed: set SOUNDHIVE_MODELS (looked in {folder})")
    return folder


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    folder = SHARED / "data" / "clips"
    if not (folder / "labels.jsonl").is_file():
        pytest.fail(f"real clips are needed in {folder}")
    return folder


@pytest.fixture(autouse=True)
def _models_env(monkeypatch, models_dir):
    monkeypatch.setenv("SOUNDHIVE_MODELS", str(models_dir))


@pytest.fixture(autouse=True)
def _private_data_dir(monkeypatch, tmp_path_factory):
    """`soundhive up` keeps its data in $XDG_DATA_HOME/soundhive: the test's, not the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1: yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(folder), **kw
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A signature-checking webhook receiver on loopback (tests/notifier/notifier_helpers.py)."""
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def services(redis_server: RedisServer, tmp_path: Path, models_dir: Path) -> Iterator[Services]:
    running = Services(redis_server, tmp_path, models_dir)
    yield running
    running.stop_all()
