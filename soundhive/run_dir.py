"""The run folder of `soundhive up` ($TMPDIR/soundhive-up-*): its embedded Redis's socket, the
service logs (unless --log-dir) and, with --ephemeral, the clips. `up` removes it at exit. One
whose `up` was killed with SIGKILL (its services and Redis die with it) is removed by the next
`up`: each run holds a lock on a file in its folder for its whole life, which the kernel releases
however the process ends, so a folder whose lock is free belongs to no running `up`.
"""

import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO

PREFIX = "soundhive-up-"
LOCK_FILE = "up.lock"


class RunDir:
    """A new run folder, locked until remove()."""

    def __init__(self, base: Path | None = None):
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
        # Locked before it has its name: a sweep that finds the lock file finds it held.
        unnamed = self.path / f".{LOCK_FILE}"
        self._lock: IO[str] = unnamed.open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        unnamed.rename(self.path / LOCK_FILE)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()


def remove_abandoned(base: Path | None = None) -> list[Path]:
    """Remove this user's run folders whose `up` is gone (their lock is free); the folders
    removed. A folder without a lock file (being created, or left by a version before the
    lock) is left as it is."""
    removed = []
    for folder in Path(base or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            found = folder.lstat()  # not a link's target
            if found.st_uid != os.getuid() or not stat.S_ISDIR(found.st_mode):
                continue
            lock = (folder / LOCK_FILE).open("r")
        except OSError:
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its `up` is running
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
