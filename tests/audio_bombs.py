"""Long audio files for the decoding limits, written block by block so that a test never holds
hours of audio in memory, and a process's peak memory while they are decoded (for the tests and
bench/classify_upload.py)."""

import threading
from pathlib import Path

import numpy as np
import psutil
import soundfile

STREAMINFO_LENGTH = slice(21, 26)  # "fLaC", a block header, then 36 bits of total samples end here


def silent_flac(path: Path, seconds: int, rate: int = 16000, channels: int = 1,
                declared: bool = True) -> Path:
    """`seconds` of silence as FLAC (about 50 KB per 16 kHz mono hour). Undeclared, the length
    in its STREAMINFO is zero (unknown, as a FLAC written to a pipe leaves it), so that only
    decoding can tell how long it is."""
    minute = np.zeros((60 * rate, channels), np.int16)
    with soundfile.SoundFile(path, "w", rate, channels, format="FLAC") as out:
        for start in range(0, seconds, 60):
            out.write(minute[: min(60, seconds - start) * rate])
    if not declared:
        data = bytearray(path.read_bytes())
        data[STREAMINFO_LENGTH.start] &= 0xF0  # the high nibble is the bits per sample
        data[STREAMINFO_LENGTH.start + 1: STREAMINFO_LENGTH.stop] = bytes(4)
        path.write_bytes(bytes(data))
    return path


class PeakRss:
    """The highest resident memory of a process while the block runs, sampled every 20 ms."""

    def __init__(self, process: psutil.Process):
        self.process, self.peak = process, process.memory_info().rss
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> "PeakRss":
        self._sampler.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._sampler.join()
