"""The launcher and the probes: `soundhive up` runs from a folder that holds its own `shared/`
(the README's layout, one level above the clone) without that folder shadowing soundhive's
packages; a service whose Redis is down is unready (/readyz 503) but stays live (/healthz
200), so Kubernetes waits for Redis instead of restarting every pod."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from pipeline_helpers import RedisServer, Services, free_port, wait_for


def test_up_runs_from_a_folder_holding_a_shared_directory(clips_dir: Path, tmp_path: Path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "__init__.py").write_text("")
    (tmp_path / "shared" / "models.py").write_text("raise ImportError('the wrong shared')\n")
    soundhive = Path(sys.executable).with_name("soundhive")  # the installed entry point
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [str(soundhive), "up", "--source", f"file:{clips_dir / 'dog.mp3'}", "--fast",
         "--exit-when-done", "--metrics-port-base", "0", "--api-port", "0"], cwd=tmp_path,
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "the wrong shared" not in result.stderr
    assert any(line.startswith("dog.mp3\t") for line in result.stdout.splitlines())  # events


def probe(port: int, path: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code
    except httpx.HTTPError:
        return None


def test_redis_outage_makes_a_service_unready_never_unlive(redis_server: RedisServer,
                                                           services: Services):
    port = free_port()
    notifier = services.start("notifier", SOUNDHIVE_METRICS_PORT=str(port))
    wait_for(lambda: probe(port, "/readyz") == 200, 60, "the notifier to be ready")
    assert probe(port, "/healthz") == 200
    redis_server.stop()
    wait_for(lambda: probe(port, "/readyz") == 503, 60, "the notifier to notice Redis is gone")
    assert probe(port, "/healthz") == 200
    redis_server.start()
    wait_for(lambda: probe(port, "/readyz") == 200, 60, "the notifier to be ready again")
    assert notifier.poll() is None, services.log_text(notifier)


def test_a_loop_waiting_out_redis_stays_live_past_the_stale_limit(tmp_path: Path):
    from shared import bus, metrics
    from shared.config import Settings
    from shared.messages import Event

    server = RedisServer(tmp_path)
    server.start()
    health = metrics.Health(stale_after_s=5.0)  # Redis's backoff waits at most 2 s
    stopper = bus.Stopper(signals=False)
    settings = Settings(service="test", redis_url=server.url, block_ms=100)
    worker = bus.Worker(settings, "s", "g", Event, lambda batch: [], health, stopper)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: health.readiness()[0], 10, "the worker to be ready")
        server.stop()
        wait_for(lambda: not health.readiness()[0], 30, "the worker to notice")
        time.sleep(health.stale_after_s + 1)  # each failed try counts as a turn of the loop
        assert health.liveness() == (True, "ok")
        assert health.readiness()[1].startswith("redis")
    finally:
        stopper.stop()
        thread.join(10)
