"""`soundhive up`, `soundhive serve SERVICE` and `soundhive devices`: the streaming pipeline.

`up` runs capture (a process per 32 sources), features (one process per core), classifier,
notifier, recorder and api against --redis-url / REDIS_URL, or an embedded redis-server
(redis_process.py, on a unix socket) when neither is set, whose data is kept in a data directory
(data_dir.py; --ephemeral: nothing kept),
and shows sources, levels, current top labels and recent events until Ctrl-C, SIGINT, SIGTERM or
SIGHUP (or, with --exit-when-done, until file sources are processed); every service and the
embedded Redis stop with it. Exit status: 0 done, 1 a source or service failed, 2 a usage
error, 3 Redis could not be started or was lost, 128 + N after signal N. Metrics and health on
127.0.0.1: capture :9101, features :9102, classifier :9103, notifier :9104, recorder :9105
(--metrics-port-base; further replicas: free ports); the events API and dashboard on
127.0.0.1:8000 (--api-port). The recorder's clips go to the data directory's clips/ (with
--ephemeral, the run's folder: removed at exit). With SOUNDHIVE_PRIVACY=speech the embedded Redis
keeps nothing on disk, raw audio passing through it.
"""

import inspect
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import redis
import typer
from pydantic.fields import FieldInfo
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from services.capture.settings import split_sources
from services.capture.sources import SOURCE_FORMS, SourceError, list_devices, parse_sources
from services.classifier.events import Rules, RulesError
from services.features.settings import FeaturesSettings
from services.registry import SERVICES, Service
from services.runner import serve as serve_service
from shared import bus, detections, streams
from shared.config import (
    ConfigError,
    Settings,
    SettingsModel,
    check_redis_urls,
    describe,
    features_replicas,
    is_secret,
    read_secret,
    threads_per_replica,
)
from shared.messages import Event, MessageError
from shared.ports import free_port, port_free
from shared.redact import redact
from shared.status import read_sources
from soundhive.console import USAGE_ERROR, fail, stderr, warn
from soundhive.data_dir import PERSISTENCE, DataDir, DataDirError, default_data_dir
from soundhive.redis_process import RedisProcess, RedisProcessError, die_with_parent
from soundhive.run_dir import RunDir, remove_abandoned

SOURCE_HELP = SOURCE_FORMS + " Repeatable; default: mic (unless --sources-file gives sources)."
SERVICE_START_S = 30.0
# Sources per capture process: a process's source threads hand its GIL over at every FFmpeg call,
# and past ~50 network streams (on a fast core; ~150 on a slower one) they thrash, spending
# three times the CPU and falling behind (docs/benchmarks.md). The Kubernetes capture groups
# hold as many.
CAPTURE_SOURCES_PER_PROCESS = 32
SERVICE_STOP_S = 30.0  # then SIGKILL
NOTIFY_DRAIN_S = 15.0
REDIS_HELP = "Redis to use (default: $REDIS_URL; `up` starts an embedded one when unset)."
REDIS_LOST = 3  # exit status of `up` when Redis could not be started or was lost
CLIPS_FOLDER = "clips"  # in the data directory (or the run's folder with --ephemeral)
# The sharding settings `up` overrides: one box, one Redis, one shard (its view reads one).
SHARDING_FIELDS = ("shards", "shard_ids", "redis_urls", "redis_cluster")
PRIVATE_REDIS = ("note: SOUNDHIVE_PRIVACY=speech: the embedded Redis keeps nothing on disk (raw "
                 "audio passes through it), so the event history, the DeviceHive settings and "
                 "undelivered events last only this run; clips stay in the data dir")


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.add_typer(serve_app, name="serve")
    app.command("devices")(devices)


def devices(
    as_json: bool = typer.Option(False, "--json", help="A JSON array of the devices: index, "
                                 "name, channels, rate ([] when there is none)."),
) -> None:
    """List the audio input devices (for --source mic:INDEX or mic:NAME)."""
    try:
        found = list_devices()
    except SourceError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(found))
        return
    if not found:
        fail("no audio input device found")
    table = Table("index", "name", "channels", "default rate")
    for d in found:
        table.add_row(str(d["index"]), d["name"], str(d["channels"]), str(d["rate"]))
    Console().print(table)


def _cli_type(info: FieldInfo) -> Any:
    """The type a CLI option of this field takes (a tuple: a repeatable option of its items)."""
    annotation = info.annotation
    if get_origin(annotation) is tuple:
        return list[get_args(annotation)[0]]  # type: ignore[misc]
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if get_origin(annotation) in (Union, UnionType) else annotation


def _options(settings: type[SettingsModel]) -> list[inspect.Parameter]:
    """One option per setting, --field-name or the field's own flag, defaulting to the
    environment's value; secrets only where their field names a flag."""
    options = []
    for name, info in settings.settings_fields().items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if is_secret(info) and not extra.get("flag"):
            continue
        flag = str(extra.get("flag") or "--" + name.replace("_", "-"))
        help_text = f"{info.description} [env {settings.env_name(name)}]"
        option = typer.Option(None, flag, help=help_text, show_default=False)
        options.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                         annotation=_cli_type(info) | None))
    return options


def _serve_command(service: Service) -> Callable[..., None]:
    def command(**options: Any) -> None:
        serve_service(service.name, **options)

    parameters = _options(service.settings)
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    environment = "\n\n".join(
        f"{item.env}{' (or ' + item.env + '_FILE)' if item.secret else ''}: "
        f"{item.description} Default: {item.default}." for item in describe(service.settings))
    command.__doc__ = (f"{service.summary}\n\nSettings come from the environment (below; "
                       "docs/configuration.md); options override them. Ports listen on "
                       "127.0.0.1 unless a _HOST setting says otherwise (the images set "
                       f"0.0.0.0).\n\nEnvironment:\n\n{environment}")
    return command


serve_app = typer.Typer(help="Run one service in this process (for containers).",
                        no_args_is_help=True)
for _service in SERVICES.values():
    serve_app.command(_service.name)(_serve_command(_service))


# SIGINT too: a shell that starts `up` in the background has it ignored, and then Python raises
# no KeyboardInterrupt.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """`up` got one of STOP_SIGNALS."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """STOP_SIGNALS stop `up`. Installed first, each is kept; once armed, it is also raised as
    Interrupted where the main thread stands, cutting short a wait on Redis. Python drops an
    exception raised inside some callbacks (os.fork's at-fork hooks, such as logging's, run at
    every Popen: "Exception ignored in"), so around a fork it is only kept (deferred()), and
    every wait loop calls check(), which raises a kept one."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._raising = False

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def arm(self) -> None:
        self._raising = True
        self.check()

    def disarm(self) -> None:
        """While `up` stops: a further signal is kept, not raised, so the stop in hand
        finishes (each service is waited for at most SERVICE_STOP_S)."""
        self._raising = False

    @contextmanager
    def deferred(self) -> Iterator[None]:
        raising, self._raising = self._raising, False
        try:
            yield
        finally:
            self._raising = raising
        self.check()

    def check(self) -> None:
        if self.received is not None:
            raise Interrupted(self.received)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.received = self.received or signum
        if self._raising:
            raise Interrupted(signum)


class ShardedRedisError(Exception):
    """The Redis `up` was given holds a sharded pipeline's streams."""


def up(
    source: list[str] | None = typer.Option(None, "--source", "-s", help=SOURCE_HELP,
                                            show_default=False),
    sources_file: Path | None = typer.Option(
        None, "--sources-file", help="More sources, from this file (as "
        "SOUNDHIVE_CAPTURE_SOURCES_FILE: space-separated or a JSON list): a URL's password "
        "typed after --source is shown by `ps` to every local user, one in a file is not."),
    fast: bool = typer.Option(False, "--fast", help="Replay files as fast as the pipeline "
                              "takes them (default: in real time)."),
    save_path: Path | None = typer.Option(None, "--save-path", help="Keep captured audio (WAV)."),
    redis_url: str | None = typer.Option(None, "--redis-url", help=REDIS_HELP),
    features: int | None = typer.Option(
        None, "--features", min=1, show_default=False,
        help="Features worker processes (default: one per core, each with one inference "
             "thread; with SOUNDHIVE_THREADS set, the cores divided by it)."),
    classifiers: int = typer.Option(1, "--classifiers", min=1, help="Classifier processes."),
    events_config: Path | None = typer.Option(None, "--events-config", help="Event rules file."),
    log_dir: Path | None = typer.Option(
        None, "--log-dir", help="Keep the service logs here (default: "
        "$TMPDIR/soundhive-up-*/logs, removed at exit unless a service failed; after an `up` "
        "killed with SIGKILL, by the next `up`)."),
    metrics_port_base: int = typer.Option(
        SERVICES["capture"].port, "--metrics-port-base", min=0, max=65533,
        help="Metrics/health ports on 127.0.0.1: capture this one, features +1, classifier +2, "
             "notifier +3, recorder +4 (further replicas: free ports, logged); 0: free ports "
             "for all."),
    api_port: int = typer.Option(
        SERVICES["api"].port, "--api-port", min=0, max=65535,
        help="The events API and dashboard on 127.0.0.1 (0: a free port)."),
    exit_when_done: bool = typer.Option(
        False, "--exit-when-done",
        help="Stop once every file source has been processed (exit 1 if one failed)."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Where the embedded Redis keeps the DeviceHive settings, event "
        "history and undelivered events across runs (not with SOUNDHIVE_PRIVACY=speech), and "
        "the recorder its clips (clips/) (default: $XDG_DATA_HOME/soundhive or "
        "~/.local/share/soundhive); one `up` at a time per folder.", show_default=False),
    ephemeral: bool = typer.Option(
        False, "--ephemeral", help="Keep nothing: the embedded Redis's data goes with the run."),
) -> None:
    """Run the whole pipeline locally: a live view, the events API and the dashboard.

    The terminal shows sources, levels and labels; the events API and dashboard are at
    http://127.0.0.1:8000 (open the URL printed at start: it carries this session's API token,
    unless SOUNDHIVE_API_TOKEN sets one).

    Stops on Ctrl-C, SIGTERM or SIGHUP, taking every service (and the embedded Redis) with it.
    When stdout is not a terminal, each event is printed as it ends, one tab-separated line:
    source, label, start s, end s, peak score.

    Exit status: 0 done, 1 a source or service failed, 2 a usage error, 3 Redis could not be
    started or was lost, 128 + N after signal N.
    """
    signals = StopSignals()  # first: a shell that started `up` with SIGINT ignored
    signals.install()
    source, source_count = _sources(source or [], sources_file)
    if events_config is not None:
        _check_rules(events_config)
    # Capture starts last, once the notifier's and the recorder's groups exist: the first
    # events reach every sink, and the first audio the recorder's ring.
    threads = _features_threads()
    features = features or features_replicas(threads)
    plan: list[tuple[str, dict[str, Any]]] = [("features", {})] * features
    api_token = _session_token()
    plan += [("classifier", {})] * classifiers + [("notifier", {}), ("recorder", {}),
                                                  ("api", {"token": api_token})]
    parts = -(-source_count // CAPTURE_SOURCES_PER_PROCESS)  # ceil
    captures = [("capture", {"sources": source, "part": f"{part}/{parts}", "fast": fast,
                             "save_path": save_path}) for part in range(parts)]
    plan += captures
    given_redis = _given_redis(redis_url)
    _note_ignored_sharding()
    data = _data_dir(given_redis, data_dir, ephemeral)
    private = _private()
    ports = _ports(plan, metrics_port_base, api_port or free_port())
    api_url = f"http://127.0.0.1:{ports[[name for name, _ in plan].index('api')]}"
    dashboard_url = f"{api_url}/?token={api_token}" if api_token else api_url
    for folder in remove_abandoned():
        stderr.print(f"removed {folder}: the run folder of an earlier `up` that was killed",
                     soft_wrap=True)
    run = RunDir()
    run_dir = run.path
    logs = log_dir or run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    embedded = None if given_redis else _embedded_redis(run_dir, None if private else data)
    processes: list[ServiceProcess] = []
    status, keep_logs = 0, log_dir is not None
    try:
        signals.arm()
        if data is not None:
            data.lock()
        if embedded is not None:
            with signals.deferred():
                embedded.start()
        url = given_redis or embedded.url  # type: ignore[union-attr]
        client = bus.connect(url)
        _check_unsharded(client)
        shared_settings = {
            "redis_url": url,
            # Whatever the environment says ("": REDIS_URLS unset).
            "shards": 1, "redis_cluster": False, "redis_urls": "", "shard_ids": "",
            # Replicas share the cores rather than each taking them all.
            "threads": None if threads else threads_per_replica(features),
            "events_config": events_config.resolve() if events_config else None,
            "clips_dir": (data.path if data else run_dir) / CLIPS_FOLDER,
        }
        stderr.print(f"soundhive up: dashboard and API at {dashboard_url}, Redis {redact(url)}"
                     + (f", service logs in {logs}" if keep_logs else ""), soft_wrap=True)
        if private and embedded is not None and data is not None:
            stderr.print(PRIVATE_REDIS, soft_wrap=True)
        if data is not None:
            _forget_last_run(client)
        readers = len(plan) - len(captures)
        _start(plan[:readers], ports[:readers], shared_settings, logs, processes, signals)
        _wait_for_readers(client, processes, signals)
        _start(plan[readers:], ports[readers:], shared_settings, logs, processes, signals)
        status = _watch(client, processes, exit_when_done, signals)
    except Interrupted as stop:
        status = 128 + stop.signum
    except (DataDirError, ShardedRedisError) as exc:
        warn(str(exc))
        status = USAGE_ERROR
    except RedisProcessError as exc:
        warn(str(exc))
        status = REDIS_LOST
    except bus.REFUSALS as exc:
        reason = str(exc).rstrip(".")
        warn(f"Redis {redact(given_redis or '')} refused soundhive: {reason} (check the user "
             "and password in --redis-url or REDIS_URL, and the user's ACL: docs/security.md)")
        status, keep_logs = USAGE_ERROR, keep_logs or bool(processes)
    except bus.CONNECTION_ERRORS as exc:
        warn(f"lost Redis: {exc}" if processes else f"cannot reach Redis: {exc}")
        status, keep_logs = REDIS_LOST, keep_logs or bool(processes)
    except typer.Exit as exit_:
        status, keep_logs = exit_.exit_code, True
    finally:
        signals.disarm()
        _stop(processes)
        if embedded is not None:
            embedded.stop()
        if data is not None:
            data.release()
        if keep_logs and log_dir is None:
            shutil.move(logs, logs := Path(tempfile.mkdtemp(prefix="soundhive-logs-")) / "logs")
            stderr.print(f"service logs kept in {logs}")
        run.remove()
    raise typer.Exit(status)


def _features_threads() -> int | None:
    """SOUNDHIVE_THREADS where set (checked: a bad one is a usage error in one line)."""
    try:
        return FeaturesSettings.threads_set()
    except ConfigError as exc:
        fail(str(exc))


def _sources(given: list[str], sources_file: Path | None) -> tuple[list[str], int]:
    """--source's and --sources-file's sources (default: the default microphone), checked, and
    how many sources they are (a folder's files each counted); a usage error in one line naming
    no secret."""
    try:
        listed = split_sources(read_secret("--sources-file", str(sources_file))
                               ) if sources_file else []
    except ConfigError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"--sources-file {sources_file}: {exc}")
    sources = given + listed or ["mic"]
    try:
        return sources, len(parse_sources(sources))
    except SourceError as exc:
        fail(str(exc))


def _session_token() -> str | None:
    """A random API token for this session (the dashboard's URL carries it, as Jupyter's does);
    None when the environment sets one, which the api reads itself and `up` never shows."""
    variable = SERVICES["api"].settings.env_name("token")
    if os.environ.get(variable) or os.environ.get(f"{variable}_FILE"):
        return None
    return secrets.token_urlsafe(32)


def _check_rules(path: Path) -> None:
    """The events config file, read now: a bad one is a usage error before anything starts."""
    if not path.is_file():
        fail(f"{path}: no such events config file")
    try:
        Rules.load(path)
    except RulesError as exc:
        fail(str(exc))


def _data_dir(given_redis: str | None, option: Path | None, ephemeral: bool) -> DataDir | None:
    """The embedded Redis's data directory: --data-dir or the default; None with --ephemeral or
    a Redis of the user's."""
    if option is not None and (ephemeral or given_redis):
        fail("--data-dir is for the embedded Redis: not with --ephemeral, --redis-url or "
             "REDIS_URL")
    if ephemeral and given_redis:
        fail("--ephemeral is for the embedded Redis: a Redis given by --redis-url or REDIS_URL "
             "keeps what it keeps")
    if ephemeral or given_redis:
        return None
    return DataDir(option or default_data_dir())


def _private() -> bool:
    """SOUNDHIVE_PRIVACY=speech: raw audio must never reach a disk through Redis."""
    try:
        return SERVICES["recorder"].settings.load().privacy == "speech"
    except ConfigError as exc:
        fail(str(exc))


def _embedded_redis(run_dir: Path, data: DataDir | None) -> RedisProcess:
    """A redis-server on a unix socket in the run's folder; with a data directory, an AOF
    there (fsync every second), else nothing on disk."""
    if data is None:
        return RedisProcess(run_dir)
    return RedisProcess(run_dir, appendonly=True, extra=PERSISTENCE, data=data.redis)


def _note_ignored_sharding() -> None:
    """One line naming the sharding settings the environment sets, which `up` ignores."""
    names = [Settings.env_name(field) for field in SHARDING_FIELDS]
    ignored = [name for name in names if os.environ.get(name)]
    if ignored:
        stderr.print(f"note: `up` runs one shard on one Redis and ignores {', '.join(ignored)} "
                     "(a sharded pipeline: `soundhive serve SERVICE`, docs/deploy.md)",
                     soft_wrap=True)


def _check_unsharded(client: redis.Redis) -> None:
    """Before anything starts or writes: `up` runs one shard, so a Redis whose streams were
    written with more (streams.SHARD_COUNT) is refused."""
    recorded = int(client.get(streams.SHARD_COUNT) or 1)
    if recorded != 1:
        raise ShardedRedisError(
            f"this Redis holds a pipeline sharded {recorded} ways (SOUNDHIVE_SHARDS={recorded}) "
            "and `up` runs unsharded: use `soundhive serve SERVICE` with "
            f"SOUNDHIVE_SHARDS={recorded}, or another Redis (--redis-url) or data dir")


def _forget_last_run(client: redis.Redis) -> None:
    """The sources a kept Redis knows are the last run's: this run's capture announces its own."""
    client.delete(streams.SOURCES_HASH, streams.LATEST_PREDICTIONS)


def _given_redis(option: str | None) -> str | None:
    """--redis-url, else the Redis the environment names (REDIS_URL or REDIS_URL_FILE); None:
    `up` starts an embedded one."""
    variable = Settings.env_name("redis_url")
    if option:
        try:
            return check_redis_urls(option)
        except ValueError as exc:
            fail(f"--redis-url: {exc}")
    if os.environ.get(variable) or os.environ.get(f"{variable}_FILE"):
        try:
            return Settings().redis_url
        except ConfigError as exc:
            fail(str(exc))
    return None


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen
    log: Path


def _ports(plan: list[tuple[str, dict[str, Any]]], base: int, api_port: int) -> list[int]:
    """Each process's port: the api's, else its metrics port (the first of each service at
    base + its offset, the rest free ones); a taken port is a one-line error naming it."""
    ports, seen = [], set()
    for name, _ in plan:
        if name == "api":
            if not port_free("127.0.0.1", api_port):
                fail(f"api port 127.0.0.1:{api_port} is in use: another `soundhive up`? "
                     "Choose another with --api-port")
            ports.append(api_port)
            continue
        offset = SERVICES[name].port - SERVICES["capture"].port
        port = base + offset if base and name not in seen else 0
        seen.add(name)
        if port and not port_free("127.0.0.1", port):
            fail(f"metrics port 127.0.0.1:{port} ({name}) is in use: another `soundhive up`? "
                 "Choose other ports with --metrics-port-base")
        ports.append(port)
    return ports


def _start(plan: list[tuple[str, dict[str, Any]]], ports: list[int],
           shared_settings: dict[str, Any], logs: Path, processes: list[ServiceProcess],
           signals: StopSignals) -> None:
    """One process per service, on 127.0.0.1, in a session of its own (the terminal's Ctrl-C
    reaches `up`, which stops them in order) that dies with `up` even if `up` is killed. Each
    gets the settings its model has of `shared_settings`, and its own. Each is added to
    `processes` as it starts, so a stop signal in the middle stops those started."""
    for (name, own), port in zip(plan, ports, strict=True):
        service = SERVICES[name]
        fields = service.settings.model_fields
        settings = {key: value for key, value in shared_settings.items() if key in fields}
        settings |= {**own, service.port_field: port, service.host_field: "127.0.0.1"}
        replica = sum(started.name == name for started in processes)
        log = logs / f"{name}-{replica}.log"
        with log.open("wb") as out, signals.deferred():
            process = service.launch(dict(os.environ), settings, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=die_with_parent)
            processes.append(ServiceProcess(name, process, log))


def _stop(processes: list[ServiceProcess]) -> None:
    for service in processes:
        if service.process.poll() is None:
            service.process.terminate()
    for service in processes:
        try:
            service.process.wait(SERVICE_STOP_S)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


def _watch(client: redis.Redis, processes: list[ServiceProcess], exit_when_done: bool,
           signals: StopSignals) -> int:
    """Show the live view (stderr) and follow events (stdout) until done: 0, or 1 when a
    source failed. A service that dies ends `up` with its last log line."""
    follow = EventFollower(client, print_lines=not sys.stdout.isatty())
    live = Live(console=stderr, refresh_per_second=4, transient=False) \
        if stderr.is_terminal else nullcontext()
    with live:
        while True:
            signals.check()
            capture_status = _check_services(processes)
            follow.poll()
            if isinstance(live, Live):
                live.update(_view(client, processes))
            if exit_when_done and capture_status is not None and _drained(client):
                _wait_for_deliveries(client, signals)
                follow.poll()
                return _report_failed_sources(client) if capture_status else 0
            time.sleep(0.25)


def _wait_for_readers(client: redis.Redis, processes: list[ServiceProcess],
                      signals: StopSignals) -> None:
    deadline = time.monotonic() + SERVICE_START_S
    while not (_notifier_groups(client) and _recorder_reads_audio(client)) \
            and time.monotonic() < deadline:
        signals.check()
        _check_services(processes)
        time.sleep(0.1)


def _recorder_reads_audio(client: redis.Redis) -> bool:
    return any(g.group == streams.RECORDER_GROUP
               for g in bus.group_backlogs(client, [streams.PCM_STREAM]))


def _notifier_groups(client: redis.Redis) -> list[dict]:
    return [g for g in _event_groups(client)
            if g["name"].decode().startswith(streams.NOTIFIER_GROUP + ":")]


def _event_groups(client: redis.Redis) -> list[dict]:
    try:
        return client.xinfo_groups(streams.EVENTS_STREAM)
    except redis.ResponseError:  # no stream yet
        return []


def _check_services(processes: list[ServiceProcess]) -> int | None:
    """Once every capture process has ended by itself: 0, or 1 when one had a source fail; None
    while one runs (or none has started). Any other ending of a service is fatal."""
    capture_codes = []
    for service in processes:
        code = service.process.poll()
        if service.name == "capture" and code in (None, 0, 1):
            capture_codes.append(code)
            continue
        if code is None:
            continue
        lines = service.log.read_text(errors="replace").strip().splitlines()
        warn(f"{service.name} exited ({code}): {redact(lines[-1]) if lines else 'no output'}")
        raise typer.Exit(1)
    if not capture_codes or None in capture_codes:
        return None
    return max(capture_codes)


def _report_failed_sources(client: redis.Redis) -> int:
    for view in read_sources(client):
        if view.status.state == "failed":
            warn(f"source {view.status.source} failed: {view.status.detail}")
    return 1


class EventFollower:
    """Reads the events stream from where it stood at start; prints each ended event as one
    tab-separated line when asked (stdout is not a terminal)."""

    def __init__(self, client: redis.Redis, print_lines: bool):
        self.client, self.print_lines = client, print_lines
        last = client.xrevrange(streams.EVENTS_STREAM, count=1)
        self.cursor = last[0][0] if last else b"0-0"

    def poll(self) -> None:
        while True:
            reply = self.client.xread({streams.EVENTS_STREAM: self.cursor}, count=500)
            if not reply:
                return
            for entry_id, fields in reply[0][1]:
                self.cursor = entry_id
                try:
                    event = Event.decode(fields[streams.MESSAGE_FIELD])
                except (MessageError, KeyError):
                    continue
                if self.print_lines and event.kind == "end":
                    typer.echo(f"{event.source}\t{event.label}\t{event.start:.2f}\t"
                               f"{event.end:.2f}\t{event.score:.2f}")


def _wait_for_deliveries(client: redis.Redis, signals: StopSignals) -> None:
    """Give the notifier's sinks NOTIFY_DRAIN_S to deliver the last events, and the recorder to
    write their clips; what a sink that is down has not had stays in Redis (kept in the data
    directory; lost with an ephemeral Redis), said in one line."""
    deadline = time.monotonic() + NOTIFY_DRAIN_S
    while True:
        signals.check()
        behind = _behind(client)
        if not behind:
            return
        if time.monotonic() > deadline:
            warn("undelivered at exit: " + ", ".join(f"{name} {count}" for name, count in
                                                     sorted(behind.items())))
            return
        time.sleep(0.25)


def _behind(client: redis.Redis) -> dict[str, int]:
    """Events each notifier group has not delivered, and the clips the recorder has not
    written yet (its group's unread events and its jobs)."""
    behind = {g["name"].decode(): (g.get("lag") or 0) + g["pending"]
              for g in _event_groups(client)}
    behind[streams.RECORDER_GROUP] = behind.get(streams.RECORDER_GROUP, 0) + client.zcard(
        streams.CLIP_JOBS)
    return {name: count for name, count in behind.items() if count}


def _drained(client: redis.Redis) -> bool:
    """Every chunk written so far went all the way through (upstream first: nothing new can
    appear downstream of a drained stage)."""
    for stream, group in streams.CONSUMER_GROUPS.items():
        try:
            info = next(g for g in client.xinfo_groups(stream) if g["name"].decode() == group)
        except (redis.ResponseError, StopIteration):
            return False
        if info["pending"] or info.get("lag") or info.get("lag") is None:
            return False
    return client.zcard(streams.REORDER_GAPS) == 0


def _view(client: redis.Redis, processes: list[ServiceProcess]) -> Group:
    sources = Table("source", "state", "level", "chunks", "top labels", title="sources",
                    expand=True)
    for view in read_sources(client):
        labels = ", ".join(f"{label}: {score:.2f}" for label, score in
                           (view.latest.labels[:3] if view.latest else []))
        state = view.status.state + (f" ({view.status.detail})" if view.status.detail else "")
        sources.add_row(view.status.source, state, _meter(view.dbfs), str(view.status.seq + 1),
                        labels)
    events = Table("source", "label", "start s", "end s", "score", title="recent events",
                   expand=True)
    for event in detections.recent(client, 10):
        end = f"{event.end:.2f}" if event.end is not None else "…"
        events.add_row(event.source, event.label, f"{event.start:.2f}", end,
                       f"{event.score:.2f}")
    alive = "  ".join(
        f"{s.name}: {'up' if s.process.poll() is None else f'exit {s.process.returncode}'}"
        for s in processes)
    return Group(sources, events, alive)


def _meter(db: float, width: int = 12) -> str:
    filled = max(0, min(width, round((db + 60) / 60 * width)))
    return f"{'█' * filled}{'·' * (width - filled)} {db:4.0f} dB"
