"""A private redis-server process: the embedded Redis of `soundhive up`, and the tests' Redis;
a Redis Cluster of such processes on loopback (the tests' and the bus benchmark's cluster).

It listens on a unix socket in its folder (or a TCP port on 127.0.0.1), keeps nothing on disk
unless asked (`appendonly`: an AOF in `data`, by default its folder), and is killed with its
parent even if the parent is killed with SIGKILL (PR_SET_PDEATHSIG), so no run leaves a Redis
behind.
"""

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from shared.errors import UserError
from shared.ports import free_port, port_free

PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 20.0
CLUSTER_BUS_OFFSET = 10000  # a cluster node's bus listens on its port + 10000


class RedisProcessError(UserError, RuntimeError):
    """redis-server is missing or did not start (one-line message)."""


_forked_by = 0  # the pid of the process that forked last, as its child sees it


def _note_forking_process() -> None:
    global _forked_by
    _forked_by = os.getpid()


os.register_at_fork(before=_note_forking_process)


def die_with_parent() -> None:
    """preexec_fn for children: SIGTERM when the parent dies, however it dies (Linux). A child
    whose parent died between the fork and this (no signal would come) ends at once."""
    with contextlib.suppress(OSError):  # not Linux: `up` still stops them on every signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != _forked_by:
            os._exit(1)


class RedisProcess:
    def __init__(self, folder: Path, port: int | None = None, appendonly: bool = False,
                 extra: tuple[str, ...] = (), data: Path | None = None):
        self.folder, self.port, self.appendonly, self.extra = folder, port, appendonly, extra
        self.data = data or folder
        self.socket = folder / "redis.sock"
        self.url = (f"redis://127.0.0.1:{port}/0" if port is not None
                    else f"unix://{self.socket}")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisProcessError("redis-server is not installed (run ./scripts/install.sh, "
                                    "or set REDIS_URL to a Redis of yours)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        listen = (["--port", str(self.port), "--bind", "127.0.0.1"] if self.port is not None
                  else ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm",
                        "700"])
        self.process = subprocess.Popen(
            [binary, *listen, "--dir", str(self.data), "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RedisProcessError(f"redis-server exited ({self.process.returncode}) "
                                        "at start")
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise RedisProcessError(f"redis-server did not answer within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """SIGTERM (Redis writes its AOF, if any, and exits), SIGKILL after 20 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


class LoopbackCluster:
    """A Redis Cluster of `masters` redis-server processes on 127.0.0.1, no replicas, each
    with an AOF (a node restarts with its data); start() creates it (redis-cli --cluster
    create) and waits until every node says it is ok."""

    def __init__(self, folder: Path, masters: int = 3, node_timeout_ms: int = 2000):
        """`node_timeout_ms`: how long a silent node is failed after (the cluster is then down
        until it answers): short for the tests' restarts, long on a machine busy enough to
        delay its answers."""
        self.nodes = [RedisProcess(folder / f"node{i}", port=_cluster_port(), appendonly=True,
                                   extra=("--cluster-enabled", "yes", "--cluster-config-file",
                                          "nodes.conf", "--cluster-node-timeout",
                                          str(node_timeout_ms)))
                      for i in range(masters)]

    @property
    def url(self) -> str:
        """A seed node's URL."""
        return self.nodes[0].url

    def start(self) -> None:
        """Start the nodes and create the cluster; on failure, every node started is stopped."""
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(["redis-cli", "--cluster", "create",
                            *(f"127.0.0.1:{node.port}" for node in self.nodes),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not self.ok():
                if time.monotonic() > deadline:
                    raise RedisProcessError("the loopback Redis Cluster is not ok after "
                                            f"{START_TIMEOUT_S:.0f} s")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def ok(self) -> bool:
        try:
            return all(node.client().cluster("info")["cluster_state"] == "ok"
                       for node in self.nodes)
        except redis.RedisError:
            return False

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port is free too."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET < 65536 and port_free("127.0.0.1", port + CLUSTER_BUS_OFFSET):
            return port
