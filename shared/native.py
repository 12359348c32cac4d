"""Keeping C libraries' chatter (LiteRT's delegate banner, mpg123's ID3 warnings, ALSA and JACK
probing devices, TensorFlow's C++ logs) off the terminal.

Those libraries write to file descriptor 2 directly, past Python's sys.stderr. Swapping fd 2
around each call raced between threads (a line Python logged while another thread decoded was
lost), so it is done once per process, at start-up, by the entry points (the CLI and
`run_service`): Python's sys.stderr moves to a copy of the real stderr, and fd 2 goes to
/dev/null. Libraries used in-process (tests, notebooks) are left alone.
"""

import os
import sys

_quieted = False


def quiet_native_stderr() -> None:
    """Send fd 2 to /dev/null for the rest of the process, keeping sys.stderr on the real one.
    Child processes started afterwards inherit the quiet fd 2 unless given a stderr of their own."""
    global _quieted
    if _quieted:
        return
    sys.stderr.flush()
    real = os.dup(2)
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                           errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _quieted = True
