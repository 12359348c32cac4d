"""A child started with die_with_parent never outlives its parent, even one that dies between
the fork and the child's request for a signal at its death (a SIGKILL of `up` while it starts
its services once left a notifier running for good)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline_helpers import REPO

PARENT = """
import os, subprocess, sys, threading, time
from soundhive.redis_process import die_with_parent

def ask_late():
    time.sleep(1.0)  # the parent dies meanwhile
    die_with_parent()

threading.Timer(0.3, lambda: os._exit(0)).start()
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", sys.argv[1]],
                 preexec_fn=ask_late)
time.sleep(60)
"""


def processes_naming(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_child_whose_parent_died_before_it_asked_ends():
    marker = f"die-with-parent-{os.getpid()}-{time.monotonic_ns()}"
    subprocess.run([sys.executable, "-c", PARENT, marker], cwd=REPO, timeout=60)
    time.sleep(2.5)  # the child has asked, and ended or run its command, by now
    left = [pid for pid in processes_naming(marker) if pid != os.getpid()]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []
