"""Settings of the api service, from the environment (`soundhive serve api` options override):

    SOUNDHIVE_API_PORT            port (8000)
    SOUNDHIVE_API_HOST            address (0.0.0.0 in containers; `soundhive up` uses 127.0.0.1)
    SOUNDHIVE_API_TOKEN           bearer token for writes, uploads and configuration
    SOUNDHIVE_API_TOKEN_FILE      ... or a file holding it (a Kubernetes/Docker secret)
    SOUNDHIVE_API_READ_AUTH       1: reads need the token too (health and metrics stay open)
    SOUNDHIVE_API_MAX_UPLOAD_MB   size limit of POST /classify uploads (50)
    SOUNDHIVE_API_CORS_ORIGINS    comma-separated origins allowed to call the API (none)
    REDIS_URL, SOUNDHIVE_MODEL    as for every service (shared/config.py)
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import DEFAULT_REDIS_URL, ConfigError

DEFAULT_API_PORT = 8000


@dataclass(frozen=True)
class ApiSettings:
    redis_url: str = DEFAULT_REDIS_URL
    host: str = "0.0.0.0"
    port: int = DEFAULT_API_PORT
    token: str | None = field(default=None, repr=False)  # never shown
    read_auth: bool = False
    max_upload_bytes: int = 50 * 2**20
    cors_origins: tuple[str, ...] = ()
    model: str = "yamnet"

    @classmethod
    def from_env(cls, host: str | None = None, port: int | None = None) -> "ApiSettings":
        return cls(
            redis_url=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
            host=host or os.environ.get("SOUNDHIVE_API_HOST") or "0.0.0.0",
            port=port if port is not None else _int("SOUNDHIVE_API_PORT", DEFAULT_API_PORT),
            token=_token(),
            read_auth=os.environ.get("SOUNDHIVE_API_READ_AUTH", "0") == "1",
            max_upload_bytes=_int("SOUNDHIVE_API_MAX_UPLOAD_MB", 50) * 2**20,
            cors_origins=tuple(o.strip() for o in os.environ.get(
                "SOUNDHIVE_API_CORS_ORIGINS", "").split(",") if o.strip()),
            model=os.environ.get("SOUNDHIVE_MODEL") or "yamnet",
        )


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name) or ""
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _token() -> str | None:
    if token := os.environ.get("SOUNDHIVE_API_TOKEN"):
        return token
    path = os.environ.get("SOUNDHIVE_API_TOKEN_FILE")
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"SOUNDHIVE_API_TOKEN_FILE {path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"SOUNDHIVE_API_TOKEN_FILE {path} is empty")
    return token
