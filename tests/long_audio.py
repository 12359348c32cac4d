"""Long audio files for the decoding limits, written block by block so that a test never holds
hours of audio in memory."""

from pathlib import Path

import numpy as np
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
