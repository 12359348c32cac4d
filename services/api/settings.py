"""The api service's settings (SOUNDHIVE_API_*, with REDIS_URL and SOUNDHIVE_MODEL as every
service reads them, and SOUNDHIVE_CLIPS_DIR as the recorder does)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.clips import clips_dir_field
from shared.config import (
    CommaSeparated,
    RedisSettings,
    internal_field,
    model_field,
    secret_field,
)
from shared.devicehive import DeviceHiveTarget


class ApiSettings(RedisSettings):
    """The api: where it listens, who may call it, and how large an upload may be."""

    model_config = SettingsConfigDict(env_prefix="SOUNDHIVE_API_")

    host: str = Field("127.0.0.1", description="Address the api binds (the images set "
                      "0.0.0.0: the network).")
    port: int = Field(8000, ge=0, le=65535, description="Port of the events API, the dashboard, "
                      "/healthz, /readyz and /metrics.")
    token: str | None = secret_field(None, "Bearer token for writes, uploads and "
                                     "configuration; with none, they are refused (403).")
    read_auth: bool = Field(False, description="Reads need the token too (health and metrics "
                            "stay open).")
    max_upload_mb: int = Field(50, ge=1, description="Size limit of POST /classify uploads, "
                               "in MB.")
    max_audio_s: float = Field(600, gt=0, description="Most seconds of audio a POST /classify "
                               "upload may hold: one whose header declares more, or whose "
                               "decoding passes it, is refused there (413).")
    redis_max_connections: int = Field(
        50, ge=2, description="Redis connections the api opens at most, per pool (one for the "
        "routes, one for the live stream); a request finding none free within a few seconds "
        "gets 503 with Retry-After.")
    sse_queue: int = Field(
        500, ge=1, description="Events a live-stream client may have waiting; one further "
        "behind is sent a `reconnect` event and disconnected (it resumes with Last-Event-ID).")
    cors_origins: CommaSeparated = Field(
        (), description="Comma-separated origins allowed to call the API from a browser.")
    allowed_hosts: CommaSeparated = Field(
        (), description="Comma-separated host names (the Host header, without its port) the "
        "api answers; others get 400, but for /healthz and /readyz. Empty: only localhost, "
        "127.0.0.1 and ::1 while it binds a loopback address (a web page whose name is made "
        "to resolve to this machine, DNS rebinding, is refused), any name otherwise; `*` "
        "allows any.")
    forwarded_allow_ips: CommaSeparated = Field(
        (), description="Comma-separated addresses of reverse proxies whose X-Forwarded-For "
        "names the client (for the wrong-token lockout, per address). Empty: the client is "
        "the connection's peer, and X-Forwarded-For is ignored.")
    model: str = model_field()
    clips_dir: Path = clips_dir_field()
    devicehive: DeviceHiveTarget = internal_field(default_factory=DeviceHiveTarget)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 2**20
