"""Settings of the pipeline services, from the environment (CLI options override them).

    REDIS_URL                   redis://host:port/db (services default to redis://localhost:6379/0;
                                `soundhive up` starts an embedded Redis when it is unset)
    SOUNDHIVE_METRICS_PORT      /metrics + /healthz port (defaults: capture 9101, features 9102,
                                classifier 9103; 0 picks a free port)
    SOUNDHIVE_BATCH_SIZE        entries read per XREADGROUP (32)
    SOUNDHIVE_BLOCK_MS          XREADGROUP BLOCK time (1000)
    SOUNDHIVE_CLAIM_IDLE_S      pending this long -> claimed by another consumer (30)
    SOUNDHIVE_MAX_DELIVERIES    deliveries before an entry is dead-lettered (5)
    SOUNDHIVE_STREAM_MAXLEN     approximate length every stream is trimmed to (10000)
    SOUNDHIVE_PCM_MAXLEN        ... except the audio stream, whose entries are 45 KB each (2000:
                                about 90 MB; 30 min of one microphone, 20 s of a hundred)
    SOUNDHIVE_MODEL             embedding model of the features service (yamnet)
    SOUNDHIVE_HEAD              scoring head of the classifier (audioset)
    SOUNDHIVE_EVENTS_CONFIG     JSON file of event rules (see services/classifier/events.py)
"""

import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_METRICS_PORTS = {"capture": 9101, "features": 9102, "classifier": 9103}


class ConfigError(ValueError):
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


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    service: str
    redis_url: str = DEFAULT_REDIS_URL
    metrics_port: int = 0
    batch_size: int = 32
    block_ms: int = 1000
    claim_idle_s: float = 30.0
    max_deliveries: int = 5
    stream_maxlen: int = 10000
    pcm_maxlen: int = 2000
    model: str = "yamnet"
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
            batch_size=_env_int("SOUNDHIVE_BATCH_SIZE", 32),
            block_ms=_env_int("SOUNDHIVE_BLOCK_MS", 1000),
            claim_idle_s=_env_float("SOUNDHIVE_CLAIM_IDLE_S", 30.0),
            max_deliveries=_env_int("SOUNDHIVE_MAX_DELIVERIES", 5),
            stream_maxlen=_env_int("SOUNDHIVE_STREAM_MAXLEN", 10000),
            pcm_maxlen=_env_int("SOUNDHIVE_PCM_MAXLEN", 2000),
            model=os.environ.get("SOUNDHIVE_MODEL") or "yamnet",
            head=os.environ.get("SOUNDHIVE_HEAD") or "audioset",
            events_config=os.environ.get("SOUNDHIVE_EVENTS_CONFIG") or None,
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def run_service(main: Callable[[], None]) -> None:
    """Run a service's main with one-line logging; a user mistake (bad setting, missing model,
    bad source, bad rules file) is one line on stderr and exit status 2."""
    from services.capture.sources import SourceError
    from services.classifier.events import RulesError
    from shared.audio import AudioError
    from shared.models import ModelError
    from shared.native import quiet_native_stderr

    if os.environ.get("SOUNDHIVE_VERBOSE") != "1":
        quiet_native_stderr()
    logging.basicConfig(
        level=os.environ.get("SOUNDHIVE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        main()
    except (ConfigError, ModelError, RulesError, SourceError, AudioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
