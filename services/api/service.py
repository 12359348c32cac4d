"""Runs the api (app.py) with uvicorn on SOUNDHIVE_API_HOST:SOUNDHIVE_API_PORT."""

import logging
import socket

import uvicorn

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.metrics import PortInUse

log = logging.getLogger("soundhive.api")


def main(settings: ApiSettings) -> None:
    _check_port(settings.host, settings.port)
    log.info("api: http://%s:%d (auth: %s)", settings.host, settings.port,
             "token" if settings.token else "none")
    # log_config=None: uvicorn's lines go through the service's (redacting) log handler.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="warning", access_log=False, log_config=None)


def _check_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUse(f"api port {host}:{port} is already in use (set "
                            "SOUNDHIVE_API_PORT, or `up --api-port`)") from None
