"""Settings of the pipeline services, from the environment (CLI options override them).

    REDIS_URL                   redis://host:port/db (services default to redis://localhost:6379/0;
                                `soundhive up` starts an embedded Redis when it is unset)
    SOUNDHIVE_METRICS_PORT      /metrics + /healthz port (defaults: capture 9101, features 9102,
                                classifier 9103, notifier 9104; 0 picks a free port)
    SOUNDHIVE_METRICS_HOST      address it binds (0.0.0.0; `soundhive up` sets 127.0.0.1)
    SOUNDHIVE_BATCH_SIZE        entries read per XREADGROUP (32)
    SOUNDHIVE_BLOCK_MS          XREADGROUP BLOCK time (1000)
    SOUNDHIVE_CLAIM_IDLE_S      an entry pending this long without its consumer renewing it (a
                                dead consumer's, or a failed one) is claimed by another (5)
    SOUNDHIVE_MAX_DELIVERIES    deliveries before an entry is dead-lettered (5)
    SOUNDHIVE_BACKLOG_MAX       entries of the audio or embeddings stream not yet read by their
                                consumers before the producer holds back: files wait, live
                                audio is dropped oldest first and counted (2000 chunks: about
                                90 MB of audio; 30 min of one microphone, 20 s of a hundred)
    SOUNDHIVE_STREAM_MAXLEN     approximate length of the history streams (predictions, dead
                                letters: 10000); the pipeline's own streams (audio, embeddings)
                                are trimmed only of what their consumer group acknowledged
    SOUNDHIVE_EVENTS_MAXLEN     approximate length of the events stream, the events API's history
                                and the notifier's input (100000 events)
    SOUNDHIVE_REORDER_TIMEOUT_S how long the classifier waits for a source's missing chunk before
                                it skips it, counted as lost (15)
    SOUNDHIVE_MODEL             embedding model of the features service (yamnet)
    SOUNDHIVE_THREADS           inference threads of each features worker, one LiteRT interpreter
                                each (the cores this process may use; with several replicas on
                                one host, divide them among replicas)
    SOUNDHIVE_HEAD              scoring head of the classifier (audioset)
    SOUNDHIVE_EVENTS_CONFIG     JSON file of event rules (see services/classifier/events.py)
"""

import math
import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from shared.errors import UserError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_METRICS_PORTS = {"capture": 9101, "features": 9102, "classifier": 9103, "notifier": 9104}


class ConfigError(UserError, ValueError):
    """A setting that cannot be used (one-line message)."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container's --cpus or a pod's limit), not the host's count that os.cpu_count() gives."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus or 1, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus or 1


def threads_per_replica(replicas: int) -> int:
    """SOUNDHIVE_THREADS for each of `replicas` features workers sharing this machine."""
    return max(1, usable_cpus() // replicas)


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    service: str
    redis_url: str = DEFAULT_REDIS_URL
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"
    batch_size: int = 32
    block_ms: int = 1000
    claim_idle_s: float = 5.0
    max_deliveries: int = 5
    backlog_max: int = 2000
    stream_maxlen: int = 10000
    events_maxlen: int = 100000
    reorder_timeout_s: float = 15.0
    model: str = "yamnet"
    threads: int = field(default_factory=usable_cpus)
    head: str = "audioset"
    events_config: str | None = None
    consumer: str = field(default_factory=_consumer_name)

    @classmethod
    def from_env(cls, service: str, **overrides: object) -> "Settings":
        """The environment's settings for a service; overrides that are None are ignored."""
        settings = cls(
            service=service,
            redis_url=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
            metrics_port=_env_int(
                "SOUNDHIVE_METRICS_PORT", DEFAULT_METRICS_PORTS.get(service, 0)
            ),
            metrics_host=os.environ.get("SOUNDHIVE_METRICS_HOST") or "0.0.0.0",
            batch_size=_env_int("SOUNDHIVE_BATCH_SIZE", 32),
            block_ms=_env_int("SOUNDHIVE_BLOCK_MS", 1000),
            claim_idle_s=_env_float("SOUNDHIVE_CLAIM_IDLE_S", 5.0),
            max_deliveries=_env_int("SOUNDHIVE_MAX_DELIVERIES", 5),
            backlog_max=_env_int("SOUNDHIVE_BACKLOG_MAX", 2000),
            stream_maxlen=_env_int("SOUNDHIVE_STREAM_MAXLEN", 10000),
            events_maxlen=_env_int("SOUNDHIVE_EVENTS_MAXLEN", 100000),
            reorder_timeout_s=_env_float("SOUNDHIVE_REORDER_TIMEOUT_S", 15.0),
            model=os.environ.get("SOUNDHIVE_MODEL") or "yamnet",
            threads=_env_int("SOUNDHIVE_THREADS", usable_cpus()),
            head=os.environ.get("SOUNDHIVE_HEAD") or "audioset",
            events_config=os.environ.get("SOUNDHIVE_EVENTS_CONFIG") or None,
        )
        if settings.threads < 1:
            raise ConfigError(f"SOUNDHIVE_THREADS must be at least 1, got {settings.threads}")
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
