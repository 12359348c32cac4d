"""Runs the api (app.py) with uvicorn on SOUNDHIVE_API_HOST:SOUNDHIVE_API_PORT."""

import logging
import resource
import socket

import uvicorn

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.metrics import PortInUse

log = logging.getLogger("soundhive.api")


def main(settings: ApiSettings) -> None:
    _check_port(settings.host, settings.port)
    allow_many_connections()
    log.info("api: http://%s:%d (auth: %s)", settings.host, settings.port,
             "token" if settings.token else "none")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="warning", access_log=False)


def _check_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUse(f"api port {host}:{port} is already in use (set "
                            "SOUNDHIVE_API_PORT, or `up --api-port`)") from None


def allow_many_connections() -> None:
    """Raise this process's open-file limit to its hard limit: each live-stream client holds a
    socket, and a soft limit of 1024 (systemd's default) would refuse the thousandth."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
