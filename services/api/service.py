"""Runs the api (app.py) with uvicorn on SOUNDHIVE_API_HOST:SOUNDHIVE_API_PORT."""

import logging
import resource
from types import FrameType

import uvicorn

from services.api.app import create_app
from services.api.origin import is_loopback
from services.api.settings import ApiSettings
from shared.metrics import PortInUse
from shared.ports import port_free

log = logging.getLogger("soundhive.api")


def main(settings: ApiSettings) -> None:
    _check_port(settings.host, settings.port)
    allow_many_connections()
    log.info("api: http://%s:%d (auth: %s)", settings.host, settings.port,
             "token" if settings.token else "none")
    if (exposure := _exposure(settings)) is not None:
        log.warning(exposure)
    # log_config=None: uvicorn's lines go through the service's (redacting) log handler.
    # X-Forwarded-For only from the listed proxies: uvicorn would trust it from 127.0.0.1, so
    # any local user could pick a new address for each wrong token and skip the lockout.
    proxies = list(settings.forwarded_allow_ips)
    _Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                           proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
                           log_level="warning", access_log=False, log_config=None)).run()


class _Server(uvicorn.Server):
    """Ends the live streams when told to stop: uvicorn waits for open responses to end first,
    and a live stream never would."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        broadcaster = getattr(self.config.app.state, "broadcaster", None)  # once started
        if broadcaster is not None:
            broadcaster.stop_soon()


def _check_port(host: str, port: int) -> None:
    if not port_free(host, port):
        raise PortInUse(f"api port {host}:{port} is already in use (set "
                        "SOUNDHIVE_API_PORT, or `up --api-port`)")


def _exposure(settings: ApiSettings) -> str | None:
    """One line when the api answers reads without a token (writes never) on an address other
    machines reach."""
    if settings.read_auth or is_loopback(settings.host):
        return None
    where = f"{settings.host}:{settings.port}"
    if settings.token is None:
        return (f"api: no SOUNDHIVE_API_TOKEN: writes are refused, and events, sources and "
                f"notifier states are readable by anyone reaching {where}")
    return (f"api: events, sources and notifier states are readable without the token by "
            f"anyone reaching {where} (SOUNDHIVE_API_READ_AUTH=1 protects them)")


def allow_many_connections() -> None:
    """Raise this process's open-file limit to its hard limit: each live-stream client holds a
    socket, and a soft limit of 1024 (systemd's default) would refuse the thousandth."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
