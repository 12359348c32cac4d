"""A real redis-server on a free port per test (restartable), and real service processes."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import RedisServer, Services


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
