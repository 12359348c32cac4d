"""Settings: one typed model per service (pydantic-settings), the single place where each setting's
environment name, type, default and description are declared.

`SettingsModel` is the base of every model. A field is read from the environment as
`env_prefix + NAME` (SOUNDHIVE_ by default) or its validation alias (REDIS_URL); an empty value
counts as unset; booleans take true/false, yes/no, on/off, 1/0. A secret field
(`secret_field`) may also come from the file its NAME_FILE names (Kubernetes/Docker secrets);
NAME wins when both are set, and a secret is never shown (repr, errors, docs). Keyword arguments
(CLI options) override the environment. A value that does not validate is a ConfigError whose
one-line message names the variable. docs/configuration.md and `soundhive serve X --help` are
generated from these models (soundhive/settings_docs.py).

`Settings` holds what every pipeline service (capture, features, classifier, notifier) reads;
each service's own model extends it (services/*/settings.py).
"""

import json
import math
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import redis
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.errors import UserError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class ConfigError(UserError, ValueError):
    """A setting that cannot be used (one-line message)."""


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


# A setting written as "a, b, c" in the environment: a tuple of its non-empty parts.
CommaSeparated = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_commas)]
CommaSeparatedInts = Annotated[tuple[int, ...], NoDecode, BeforeValidator(_split_commas)]


def check_redis_urls(value: Any) -> Any:
    """A Redis URL, or each of several, as redis-py will read it; the message never repeats
    the URL (it may hold a password)."""
    for url in (value,) if isinstance(value, str) else value:
        try:
            redis.connection.parse_url(url)
            # redis-py reads a path that is not a number as database 0
            if not url.startswith("unix:") and not re.fullmatch(r"/?\d*", urlparse(url).path):
                raise ValueError
        except ValueError:
            raise ValueError("not a Redis URL: redis://host:port/db, rediss:// for TLS or "
                             "unix:///path/to/socket; a user and password go before the host, "
                             "percent-encoded where they hold / : @ % or spaces") from None
    return value


RedisUrl = Annotated[str, AfterValidator(check_redis_urls)]
RedisUrls = Annotated[CommaSeparated, AfterValidator(check_redis_urls)]


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


def features_replicas(threads: int | None = None) -> int:
    """How many features workers share this machine by default: one per core with one
    inference thread each, or the cores divided by `threads` (SOUNDHIVE_THREADS) when it is
    set. A process holds its GIL for the model's numpy front end and the bus work, so
    single-thread processes use the cores better than threads in one (docs/benchmarks.md)."""
    return max(1, usable_cpus() // (threads or 1))


def secret_field(default: Any, description: str, flag: str | None = None,
                 **kwargs: Any) -> Any:
    """A secret setting: never shown, and also read from the file NAME_FILE names; a CLI
    option only where `flag` names one (a command line is visible to every local user)."""
    return Field(default, description=description, repr=False,
                 json_schema_extra={"secret": True, "flag": flag}, **kwargs)


def internal_field(**kwargs: Any) -> Any:
    """A value the code sets (never read from the environment, not documented)."""
    return Field(json_schema_extra={"internal": True}, **kwargs)


def is_secret(info: FieldInfo) -> bool:
    return isinstance(info.json_schema_extra, dict) and bool(info.json_schema_extra.get("secret"))


def is_internal(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("internal"))


class _Environment(EnvSettingsSource):
    """The environment, less the internal fields."""

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        return {key: value for key, value in super().__call__().items()
                if key not in fields or not is_internal(fields[key])}


class _SecretFiles(PydanticBaseSettingsSource):
    """NAME_FILE for every secret field NAME: the file's content, stripped."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ does the work

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name, info in self.settings_cls.model_fields.items():
            variable = f"{self.settings_cls.env_name(name)}_FILE"
            if is_secret(info) and (path := os.environ.get(variable)):
                values[name] = read_secret(variable, path)
        return values


def read_secret(variable: str, path: str) -> str:
    """The content of the secret file `path` (named by `variable`), stripped; ConfigError in
    one line when it cannot be read or is empty."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path} ({exc.strerror or exc})") from None
    if not value:
        raise ConfigError(f"{variable}: {path} is empty")
    return value


class SettingsModel(BaseSettings):
    """Base of every settings model (see the module's docstring)."""

    model_config = SettingsConfigDict(env_prefix="SOUNDHIVE_", env_ignore_empty=True,
                                      populate_by_name=True, frozen=True, extra="ignore")

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(self._one_line(exc)) from None

    @classmethod
    def load(cls, **overrides: Any) -> "SettingsModel":
        """The environment's settings with the overrides that are not None (CLI options)."""
        return cls(**{key: value for key, value in overrides.items() if value is not None})

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls), _SecretFiles(settings_cls)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable a field is read from."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, str):
            return alias
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    @classmethod
    def environment(cls, **values: Any) -> dict[str, str]:
        """The environment variables that set these field values (None: left out), as the
        model reads them back: lists as JSON, booleans as true/false."""
        return {cls.env_name(name): _env_text(value) for name, value in values.items()
                if value is not None}

    @classmethod
    def settings_fields(cls) -> dict[str, FieldInfo]:
        """The fields read from the environment, by name."""
        return {name: info for name, info in cls.model_fields.items() if not is_internal(info)}

    @classmethod
    def _one_line(cls, exc: ValidationError) -> str:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        field = next((f for f, info in cls.model_fields.items()
                      if name in (f, info.validation_alias)), None)
        message = error["msg"].removeprefix("Value error, ")
        if field is None:  # a check of several fields: its message names them
            return message
        if is_secret(cls.model_fields[field]):
            return f"{cls.env_name(field)}: {message}"
        return f"{cls.env_name(field)}: {message} (got {error['input']!r})"


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set | frozenset):
        return json.dumps([str(item) for item in value])
    return str(value)


class ProcessSettings(SettingsModel):
    """What every soundhive process reads (services, and the CLI's models folder)."""

    models: Path = Field(Path("~/.cache/soundhive/models"), description="Folder of the models "
                         "(`soundhive models pull` fills it).")
    log_level: str = Field("INFO", description="Service log level: DEBUG, INFO, WARNING, "
                           "ERROR.")
    verbose: bool = Field(False, description="Also show what the native libraries "
                          "(TensorFlow, LiteRT, ALSA, FFmpeg) print.")


def metrics_port_field(default: int) -> Any:
    return Field(default, ge=0, le=65535,
                 description="Port of /metrics, /healthz and /readyz (0: any free port).")


class RedisSettings(SettingsModel):
    """Where the pipeline's Redis is and how its streams are sharded: every process that
    reads or writes the streams (the pipeline's services and the api) reads these."""

    redis_url: RedisUrl = secret_field(
        DEFAULT_REDIS_URL, "Redis to use, redis://[user:password@]host:port/db (`soundhive up` "
        "starts an embedded one when it is unset); with SOUNDHIVE_REDIS_CLUSTER, any node of "
        "the cluster.", flag="--redis-url", validation_alias="REDIS_URL")
    redis_urls: RedisUrls = secret_field(
        (), "Several independent Redis servers, comma-separated: shard i lives on server "
        "i modulo their number, the global keys on the first (REDIS_URL is then unused).",
        validation_alias="REDIS_URLS")
    redis_cluster: bool = Field(
        False, validation_alias="SOUNDHIVE_REDIS_CLUSTER",
        description="REDIS_URL is a node of a Redis Cluster: each shard's keys share one "
        "hash slot (its hash tag {sN}), so its transactions stay on one node.")
    shards: int = Field(
        1, ge=1, le=16384, validation_alias="SOUNDHIVE_SHARDS",
        description="Shards of the streams; a source's shard is the BLAKE2b hash of its id "
        "modulo this. Every service of a pipeline must use the same count: the first to start "
        "records it in Redis, the others refuse another (changing it means new, empty "
        "streams: docs/deploy.md).")
    shard_ids: CommaSeparatedInts = Field(
        (), validation_alias="SOUNDHIVE_SHARD_IDS",
        description="The shards this features, classifier or recorder worker serves, "
        "comma-separated (0 to SOUNDHIVE_SHARDS - 1); unset: all of them, in turn.")

    @model_validator(mode="after")
    def _check_shards(self) -> "RedisSettings":
        outside = [shard for shard in self.shard_ids if not 0 <= shard < self.shards]
        if outside:
            raise ValueError(f"SOUNDHIVE_SHARD_IDS: shard {outside[0]} does not exist "
                             f"(SOUNDHIVE_SHARDS={self.shards}: 0 to {self.shards - 1})")
        repeated = sorted({shard for shard in self.shard_ids if self.shard_ids.count(shard) > 1})
        if repeated:
            raise ValueError(f"SOUNDHIVE_SHARD_IDS: shard {repeated[0]} is listed twice (each "
                             "shard once)")
        if self.redis_cluster and self.redis_urls:
            raise ValueError("REDIS_URLS and SOUNDHIVE_REDIS_CLUSTER exclude each other: a "
                             "cluster is reached through one node (REDIS_URL)")
        return self


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(RedisSettings):
    """What every pipeline service reads: Redis and its shards, its metrics port, and the
    bus's reading, claiming, dead-lettering and trimming."""

    service: str = internal_field(default="")
    consumer: str = internal_field(default_factory=_consumer_name)
    metrics_port: int = metrics_port_field(0)
    metrics_host: str = Field("127.0.0.1", description="Address the metrics port binds "
                              "(the images set 0.0.0.0: the network).")
    batch_size: int = Field(32, ge=1, le=1000, description="Entries read per XREADGROUP (at "
                            "most 1000: a batch's writes go to Redis as one script's "
                            "arguments).")
    block_ms: int = Field(1000, ge=1, description="XREADGROUP BLOCK time in milliseconds.")
    claim_idle_s: float = Field(
        5.0, gt=0, description="An entry pending this long without its consumer renewing it "
        "(a dead consumer's, or a failed one) is claimed by another.")
    max_deliveries: int = Field(5, ge=1,
                                description="Deliveries before an entry is dead-lettered.")
    backlog_max: int = Field(
        2000, ge=1, description="Entries of the audio or embeddings stream not yet read by "
        "their consumers before the producer holds back: files wait, live audio is dropped "
        "oldest first and counted (2000 chunks: about 90 MB of audio).")
    stream_maxlen: int = Field(
        10000, ge=1, description="Approximate length of the history streams (predictions, "
        "dead letters); the pipeline's own streams are trimmed of what their group "
        "acknowledged.")
    events_maxlen: int = Field(
        100000, ge=1, description="Length of the events stream's history (the events API's "
        "resume, `up`'s view); older events a notifier sink has not had yet are kept beyond "
        "it, up to SOUNDHIVE_EVENTS_BACKLOG_MAX.")
    events_backlog_max: int = Field(
        500000, ge=1, description="Most events the events stream holds for notifier sinks "
        "that are behind (about 300 bytes each: 150 MB); past it the oldest go, counted per "
        "sink as soundhive_deliveries_total{outcome=\"lost\"}. At least SOUNDHIVE_EVENTS_MAXLEN.")

    @model_validator(mode="after")
    def _check_events_bounds(self) -> "Settings":
        if self.events_backlog_max < self.events_maxlen:
            raise ValueError(f"SOUNDHIVE_EVENTS_BACKLOG_MAX ({self.events_backlog_max}) is "
                             f"below SOUNDHIVE_EVENTS_MAXLEN ({self.events_maxlen}): the bound "
                             "on what sinks hold must keep at least the history")
        return self


def model_field() -> Any:
    return Field("yamnet", validation_alias="SOUNDHIVE_MODEL",
                 description="Embedding model: yamnet (LiteRT) or vggish (TensorFlow).")


@dataclass(frozen=True)
class Described:
    """One setting as docs and --help show it."""

    env: str
    default: str
    description: str
    secret: bool


def describe(model: type[SettingsModel]) -> list[Described]:
    """Every setting a model reads, its nested models' (a notifier's sinks) after its own."""
    own = [Described(model.env_name(name), _default_text(info), info.description or "",
                     is_secret(info)) for name, info in model.settings_fields().items()]
    nested = [item for info in model.model_fields.values() if is_internal(info)
              and isinstance(info.annotation, type) and issubclass(info.annotation, SettingsModel)
              for item in describe(info.annotation)]
    return own + nested


def _default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "computed"
    value = info.default
    if value is None or value == "" or (isinstance(value, tuple | frozenset) and not value):
        return "unset"
    if isinstance(value, frozenset):
        return ",".join(sorted(value))
    return _env_text(value)
