"""The port check of `up` and the api says what the server will do: a port whose connections
linger in TIME_WAIT after its server stopped is free (servers bind with SO_REUSEADDR), one a
server listens on is not."""

import socket

import pytest

from shared.ports import port_free


def listener() -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_a_listening_port_is_taken():
    with listener() as server:
        assert not port_free("127.0.0.1", server.getsockname()[1])


def test_a_port_in_time_wait_after_its_server_stopped_is_free():
    server = listener()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    connection, _ = server.accept()
    connection.close()  # the server closes first: its side of the connection goes to TIME_WAIT
    server.close()
    client.recv(1)  # the client sees the close
    client.close()
    with socket.socket() as plain, pytest.raises(OSError):  # what the old check did
        plain.bind(("127.0.0.1", port))
    assert port_free("127.0.0.1", port)
