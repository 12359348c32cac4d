"""The Redis ACL user of deploy/redis/soundhive.acl is all the services need: `up` against a
Redis whose only rights for soundhive are that user's runs the clips to their events, delivers
them to a webhook, records their clips, and its api answers reads, writes and the live stream,
with no command refused anywhere. A wrong password is one line and a usage error."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
from notifier.notifier_helpers import WEBHOOK_SECRET, WebhookReceiver
from pipeline_helpers import REPO, wait_for

from shared import detections, streams
from shared.ports import free_port
from soundhive.redis_process import RedisProcess

ACL_FILE = REPO / "deploy/redis/soundhive.acl"
PASSWORD = "acl/test:pass%word"  # the URL must carry it quoted
WAIT_S = 120


@pytest.fixture
def acl_redis(tmp_path: Path):
    """A redis-server with the shipped ACL user (the default user stays, for this test's own
    looks at the data)."""
    users = tmp_path / "users.acl"
    rules = ACL_FILE.read_text()
    assert ">change-me" in rules
    users.write_text(rules.replace(">change-me", f">{PASSWORD}"))
    server = RedisProcess(tmp_path / "redis", port=free_port(), extra=("--aclfile", str(users)))
    server.start()
    yield server
    server.stop()


def up(clips_dir: Path, tmp_path: Path, url: str, **env: str) -> tuple[subprocess.Popen, Path]:
    err = tmp_path / "up.err"
    with err.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "soundhive", "up", "--redis-url", url, "--source",
             f"file:{clips_dir}", "--fast", "--metrics-port-base", "0", "--api-port", "0",
             "--log-dir", str(tmp_path / "logs")], cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=out, env={**os.environ, **env})
    return process, err


def test_the_shipped_acl_user_runs_the_whole_pipeline(acl_redis: RedisProcess, clips_dir: Path,
                                                      tmp_path: Path):
    webhook = WebhookReceiver()
    webhook.start()
    url = f"redis://soundhive:{quote(PASSWORD, safe='')}@127.0.0.1:{acl_redis.port}/0"
    process, err = up(clips_dir, tmp_path, url, SOUNDHIVE_WEBHOOK_URLS=webhook.url,
                      SOUNDHIVE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                      SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS="dh.example")
    try:
        dashboard = wait_for(lambda: re.search(r"API at (\S+)/\?token=(\S+),", err.read_text()),
                             WAIT_S, "up's dashboard URL")
        api, auth = dashboard.group(1), {"Authorization": f"Bearer {dashboard.group(2)}"}
        data = acl_redis.client()
        ended = wait_for(lambda: [e for e in detections.recent(data, 50) if e.end is not None],
                         WAIT_S, "an ended event")
        wait_for(lambda: webhook.received, WAIT_S, "the webhook's first event")
        event_id = ended[0].id
        wait_for(lambda: httpx.get(f"{api}/events/{event_id}/clip", headers=auth).status_code
                 == 200, WAIT_S, "the event's clip")
        for path in ("/events", "/events.csv", "/sources", "/labels", "/config/events", "/sinks",
                     "/config/devicehive", "/reviews", "/readyz", "/metrics",
                     f"/events/{event_id}/spectrogram"):
            assert httpx.get(f"{api}{path}", headers=auth, timeout=30).status_code == 200, path
        review = httpx.post(f"{api}/events/{event_id}/review", json={"verdict": "wrong"},
                            headers=auth, timeout=30)
        assert review.status_code == 200
        form = {"url": "https://dh.example/api/rest", "device_id": "hall-1",
                "notification": "sound_event", "refresh_token": "rt-secret"}
        stored = httpx.put(f"{api}/config/devicehive", json=form, headers=auth, timeout=30)
        assert stored.status_code == 200, stored.text
        with httpx.stream("GET", f"{api}/events/stream", headers={**auth, "Last-Event-ID": "0-0"},
                          timeout=30) as live:
            assert live.status_code == 200
            assert "event:" in next(live.iter_text())
        assert data.xlen(streams.EVENTS_STREAM) > 0
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(60)
        webhook.stop()
    assert status == 128 + signal.SIGTERM
    names = {log.name for log in (tmp_path / "logs").iterdir()}  # each service's replicas from 0
    assert {f"{name}-0.log" for name in ("capture", "features", "classifier", "notifier",
                                         "recorder", "api")} <= names
    logs = "".join(log.read_text() for log in (tmp_path / "logs").iterdir())
    assert "redis refused" not in logs and "NOPERM" not in logs, logs


def test_a_wrong_password_is_one_line(acl_redis: RedisProcess, clips_dir: Path, tmp_path: Path):
    url = f"redis://soundhive:wrong@127.0.0.1:{acl_redis.port}/0"
    process, err = up(clips_dir, tmp_path, url)
    assert process.wait(WAIT_S) == 2
    assert err.read_text().splitlines() == [
        f"error: Redis redis://127.0.0.1:{acl_redis.port}/0 refused soundhive: invalid "
        "username-password pair or user is disabled (check the user and password in "
        "--redis-url or REDIS_URL, and the user's ACL: docs/security.md)"]
    assert "wrong" not in err.read_text()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url).ping()
