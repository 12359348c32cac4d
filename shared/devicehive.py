"""Where DeviceHive may be reached: the environment's server and the hosts the dashboard may
point the notifier at. Read by the notifier (which connects, and checks a stored URL again
before it does: others may write Redis) and by the api (whose form stores a configuration)."""

from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.config import CommaSeparated, SettingsModel
from shared.redact import where

SCHEMES = ("http", "https", "ws", "wss")
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _host_port(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port` or `[v6]:port` as (lower-case host, port or None)."""
    parts = urlsplit(f"//{entry.strip()}")
    if not parts.hostname or parts.username is not None or parts.path or parts.query:
        raise ValueError("each entry is host or host:port")
    try:
        return parts.hostname, parts.port
    except ValueError:
        raise ValueError("each entry is host or host:port, the port 0-65535") from None


class DeviceHiveTarget(SettingsModel):
    """The DeviceHive server of the environment, and the hosts the dashboard may set."""

    model_config = SettingsConfigDict(env_prefix="SOUNDHIVE_DEVICEHIVE_")

    url: str = Field("", repr=False, description="http(s)://host/api/rest or "
                     "ws(s)://host/api/websocket; empty: the sink waits for the dashboard's "
                     "configuration.")
    allowed_hosts: CommaSeparated = Field(
        (), description="Hosts (host or host:port, comma-separated) the dashboard may point "
        "DeviceHive at, with credentials entered in the form (set it on the api and the "
        "notifier); unset: the host of SOUNDHIVE_DEVICEHIVE_URL, or none.")

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for entry in hosts:
            _host_port(entry)
        return hosts

    def hosts(self) -> tuple[str, ...]:
        """The allowed hosts: ALLOWED_HOSTS, else the environment URL's host[:port]."""
        if self.allowed_hosts:
            return self.allowed_hosts
        netloc = urlsplit(where(self.url)).netloc
        return (netloc,) if netloc else ()

    def allows(self, url: str) -> bool:
        """Whether the dashboard may point DeviceHive at `url` (an entry without a port allows
        every port of its host)."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.hostname:
            return False
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            return False
        for host, allowed_port in map(_host_port, self.hosts()):
            if host == parts.hostname and allowed_port in (None, port):
                return True
        return False

    def refusal(self, url: str) -> str:
        """Why the dashboard may not set `url` (one line)."""
        if not self.hosts():
            return ("the dashboard may not set a DeviceHive URL: set "
                    "SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS (on the api and the notifier) to the "
                    "hosts it may use")
        return (f"{where(url)} is not on SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS "
                f"({', '.join(self.hosts())})")
