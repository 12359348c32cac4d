"""Loopback ports for the processes soundhive, its tests and benchmarks start, and whether a
port is free for a server."""

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (the OS's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now. It binds as uvicorn and the metrics
    server do, with SO_REUSEADDR: a port whose last connections linger in TIME_WAIT (a client
    was still connected when its server stopped) is free for them, and so here."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
