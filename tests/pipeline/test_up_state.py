"""`soundhive up` keeps its state in a data directory across runs (DeviceHive settings, history,
a sink's undelivered events), one `up` at a time; it stops on SIGINT even when started with
SIGINT ignored; its exit status tells Redis lost (3) from a usage error (2), such as a sharded
Redis."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
from notifier.notifier_helpers import WEBHOOK_SECRET, WebhookReceiver
from pipeline_helpers import REPO, wait_for

from shared import streams
from shared.messages import Event
from soundhive.run_dir import PREFIX, RunDir, remove_abandoned

WAIT_S = 120
QUIET = ["--metrics-port-base", "0", "--api-port", "0"]


def start_up(clips_dir: Path, tmp_path: Path, *options: str, clip: str = "dog.mp3",
             preexec_fn=None, **env: str) -> tuple[subprocess.Popen, Path]:
    env = {**{k: v for k, v in os.environ.items() if k != "REDIS_URL"}, **env}
    err = tmp_path / f"up-{len(list(tmp_path.glob('up-*.err')))}.err"
    with err.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "soundhive", "up", "--source", f"file:{clips_dir / clip}",
             "--fast", *QUIET, *options], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
            stderr=out, preexec_fn=preexec_fn)
    return process, err


def redis_of(err: Path) -> redis.Redis:
    """The client of the Redis an `up` names on stderr once it is running."""
    found = wait_for(lambda: re.search(r"Redis (unix://[^\s,]+)", err.read_text()), WAIT_S,
                     "`up` to name its Redis")
    return redis.Redis.from_url(found.group(1))


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 128 + signal.SIGTERM


def events(client: redis.Redis) -> list[Event]:
    return [Event.decode(fields[streams.MESSAGE_FIELD])
            for _, fields in client.xrange(streams.EVENTS_STREAM)]


def ended(client: redis.Redis) -> set[str]:
    return {e.id for e in events(client) if e.kind == "end"}


def test_up_keeps_devicehive_settings_history_and_undelivered_events_across_runs(
        clips_dir: Path, tmp_path: Path):
    data = tmp_path / "data"
    webhook = WebhookReceiver()  # down during the first run
    sink = {"SOUNDHIVE_WEBHOOK_URLS": webhook.url, "SOUNDHIVE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    first, err = start_up(clips_dir, tmp_path, "--data-dir", str(data), **sink)
    client = redis_of(err)
    history = wait_for(lambda: ended(client), WAIT_S, "the dog's events to end")
    undelivered = {(e.id, e.kind) for e in events(client)}
    devicehive = {b"url": b"ws://127.0.0.1:9/api/websocket", b"device_id": b"door-mic"}
    client.hset(streams.DEVICEHIVE_CONFIG, mapping=devicehive)  # as the api stores the form
    detections = client.hgetall(streams.DETECTIONS_HASH)
    stop(first)

    webhook.start()
    second, err = start_up(clips_dir, tmp_path, "--data-dir", str(data), clip="sheep.mp3",
                           **sink)
    try:
        client = redis_of(err)
        assert client.hgetall(streams.DEVICEHIVE_CONFIG) == devicehive
        assert history <= ended(client)
        assert detections.items() <= client.hgetall(streams.DETECTIONS_HASH).items()
        third = subprocess.run(
            [sys.executable, "-m", "soundhive", "up", "--source", f"file:{clips_dir}",
             *QUIET, "--data-dir", str(data)], cwd=REPO, capture_output=True, text=True,
            timeout=WAIT_S, env={k: v for k, v in os.environ.items() if k != "REDIS_URL"})
        assert third.returncode == 2
        assert third.stderr.strip().splitlines() == [
            f"error: data dir {data} is in use by another `soundhive up` (pid {second.pid}): "
            "stop it, or choose another --data-dir"]
        wait_for(lambda: undelivered <= {(r.body["event_id"], r.body["kind"])
                                         for r in webhook.received},
                 WAIT_S, "the first run's events to reach the webhook")
    finally:
        stop(second)
        webhook.stop()
    assert (data / "redis" / "appendonlydir").is_dir()


def test_up_stops_on_sigint_even_when_started_with_it_ignored(clips_dir: Path, tmp_path: Path):
    up, err = start_up(clips_dir, tmp_path, "--ephemeral",
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    redis_of(err).ping()
    up.send_signal(signal.SIGINT)
    assert up.wait(60) == 128 + signal.SIGINT


FORK_HOOK_SIGNAL = """
import os, signal, subprocess, sys
from soundhive.pipeline import Interrupted, StopSignals

signals = StopSignals()
signals.install()
signals.arm()

def land_in_hook():
    os.kill(os.getpid(), signal.SIGINT)
    sum(range(1000))  # Python runs the handler here, inside the hook

os.register_at_fork(after_in_parent=land_in_hook)
try:
    with signals.deferred():  # as `up` starts a service: a fork
        subprocess.run(["true"], preexec_fn=lambda: None)
except Interrupted as stop:
    sys.exit(128 + stop.signum)
"""


def test_a_stop_signal_landing_inside_a_fork_hook_still_stops_up():
    """Python drops an exception raised inside os.fork's at-fork hooks (logging's run at every
    Popen): `up`, stopped there while starting its services, once ran on and hung."""
    result = subprocess.run([sys.executable, "-c", FORK_HOOK_SIGNAL], cwd=REPO,
                            capture_output=True, text=True, timeout=WAIT_S)
    assert (result.returncode, result.stderr) == (128 + signal.SIGINT, "")


def test_the_next_up_removes_the_run_folder_of_one_killed_with_sigkill(clips_dir: Path,
                                                                      tmp_path: Path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    killed, err = start_up(clips_dir, tmp_path, "--ephemeral", TMPDIR=str(tmpdir))
    redis_of(err).ping()
    killed.kill()
    killed.wait(60)
    [left] = tmpdir.glob(f"{PREFIX}*")  # its Redis, dying with it, may have removed its socket
    assert (left / "up.lock").exists()
    second, err = start_up(clips_dir, tmp_path, "--ephemeral", TMPDIR=str(tmpdir))
    try:
        redis_of(err).ping()
        assert f"removed {left}: the run folder of an earlier `up` that was killed" \
            in err.read_text()
        assert not left.exists() and len(list(tmpdir.glob(f"{PREFIX}*"))) == 1
    finally:
        stop(second)
    assert list(tmpdir.iterdir()) == []


def test_only_run_folders_whose_up_is_gone_are_removed(tmp_path: Path):
    running = RunDir(tmp_path)
    creating = tmp_path / f"{PREFIX}new"  # no lock file yet (or an older version's)
    creating.mkdir()
    ended = subprocess.run(  # a process that made its run folder and died without removing it
        [sys.executable, "-c", "import os, sys; from pathlib import Path; "
         "from soundhive.run_dir import RunDir; print(RunDir(Path(sys.argv[1])).path); "
         "os._exit(0)", str(tmp_path)], cwd=REPO, capture_output=True, text=True, check=True)
    gone = Path(ended.stdout.strip())
    assert remove_abandoned(tmp_path) == [gone]
    assert running.path.is_dir() and creating.is_dir() and not gone.exists()
    running.remove()
    assert not running.path.exists()


def test_a_stop_signal_cuts_short_a_wait_on_a_redis_that_does_not_answer(clips_dir: Path,
                                                                          tmp_path: Path):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    port = silent.getsockname()[1]
    try:
        up, err = start_up(clips_dir, tmp_path, "--redis-url", f"redis://127.0.0.1:{port}/0")
        connection, _ = wait_for(lambda: silent.accept(), WAIT_S, "`up` to connect")
        time.sleep(1)
        started = time.monotonic()
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 128 + signal.SIGINT, err.read_text()
        assert time.monotonic() - started < 5  # not the socket's timeout
        connection.close()
    finally:
        silent.close()


def test_up_says_when_it_lost_its_redis(clips_dir: Path, tmp_path: Path):
    up, err = start_up(clips_dir, tmp_path, "--ephemeral")
    redis_of(err).ping()
    server = subprocess.run(["pgrep", "-P", str(up.pid), "redis-server"], capture_output=True,
                            text=True).stdout.split()
    os.kill(int(server[0]), signal.SIGKILL)
    assert up.wait(60) == 3
    assert "error: lost Redis: " in err.read_text()


def test_a_bad_events_config_stops_up_before_anything_starts(tmp_path: Path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("hold_s: -1\n")
    result = subprocess.run([sys.executable, "-m", "soundhive", "up", "--events-config", str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {bad}: hold_s: ")


def test_up_refuses_a_sharded_redis_before_anything_starts(redis_server, tmp_path: Path):
    client = redis.Redis.from_url(redis_server.url)
    client.set(streams.SHARD_COUNT, 2)  # as a `serve` pipeline with SOUNDHIVE_SHARDS=2 leaves it
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "soundhive", "up", "--redis-url", redis_server.url, *QUIET],
        cwd=REPO, env={**env, "SOUNDHIVE_SHARDS": "2"}, capture_output=True, text=True,
        timeout=WAIT_S)
    assert result.returncode == 2, result.stderr
    note, error = result.stderr.strip().splitlines()
    assert note.startswith("note: `up` runs one shard on one Redis and ignores SOUNDHIVE_SHARDS ")
    assert error.startswith("error: this Redis holds a pipeline sharded 2 ways")
    assert client.keys() == [streams.SHARD_COUNT.encode()]  # no unsharded stream left behind
