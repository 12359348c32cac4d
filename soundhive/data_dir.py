"""The data directory of `soundhive up`: where its embedded Redis keeps what must outlive a run.

The embedded redis-server writes an append-only file (AOF, fsync every second) here, so the
DeviceHive configuration stored from the dashboard, the event history and each notifier sink's
place in the events stream (its undelivered events) survive a restart; at most the last second
of writes is lost to a crash. A lock file keeps a second `up` out while one runs.
"""

import fcntl
import os
from pathlib import Path
from typing import IO

from shared.errors import UserError

LOCK_FILE = "up.lock"
REDIS_FOLDER = "redis"
# Raw audio passes through Redis: with AOF it stays on disk in the AOF's newest part until Redis
# rewrites the file (keeping only the live data), once it is past this size and has doubled
# since its last rewrite.
AOF_REWRITE_MIN_SIZE = "32mb"
PERSISTENCE = ("--appendfsync", "everysec", "--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE)


class DataDirError(UserError):
    """The data directory cannot be used (one-line message)."""


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/soundhive, or ~/.local/share/soundhive."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "soundhive"


class DataDir:
    """A data directory; lock() keeps any other `up` out of it until release()."""

    def __init__(self, path: Path):
        self.path = path.expanduser().resolve()
        self.redis = self.path / REDIS_FOLDER
        self._lock: IO[str] | None = None

    def lock(self) -> None:
        try:
            self.redis.mkdir(parents=True, exist_ok=True)
            self.redis.chmod(0o700)  # the stored DeviceHive tokens are in there
            lock = (self.path / LOCK_FILE).open("a+")
        except OSError as exc:
            raise DataDirError(f"data dir {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise DataDirError(f"data dir {self.path} is in use by another `soundhive up` "
                               f"(pid {holder}): stop it, or choose another --data-dir") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None
