"""Capture's resampling of a network stream, as PyAV's own AudioResampler and to_ndarray() would
do it against what capture does (services/capture/sources.Downmix: the same FFmpeg filters in a
one-thread graph, samples read from the frame's buffer): CPU per stream in one thread.

    .venv/bin/python bench/capture_downmix.py [--rounds 7]
                                              [--out bench/results/issue20/capture_downmix.json]

The endless MP3 of bench/capture_cost.py (60 s, 128 kbit/s, 44.1 kHz stereo) is decoded from
memory into capture's 0.1 s blocks, the two ways alternating; both must give the very same blocks.
The CPU is process time over the 60 s of audio (medians of the rounds); the load is recorded.
"""

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import machine
import numpy as np
from capture_cost import LOOP_S, radio_mp3
from machine import REPO

from services.capture.sources import BLOCK_SAMPLES, Downmix
from shared import params


def pyav_resampler() -> Callable[[av.AudioFrame], list[np.ndarray]]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=params.SAMPLE_RATE)
    return lambda frame: [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]


def capture_downmix() -> Callable[[av.AudioFrame], list[np.ndarray]]:
    return Downmix().samples


def blocks(mp3: bytes, samples_of: Callable[[av.AudioFrame], list[np.ndarray]]
           ) -> Iterator[np.ndarray]:
    """Capture's 0.1 s blocks (services/capture/sources._url_blocks, from memory)."""
    with av.open(io.BytesIO(mp3)) as container:
        pending: list[np.ndarray] = []
        for frame in container.decode(container.streams.audio[0]):
            pending += samples_of(frame)
            if sum(map(len, pending)) >= BLOCK_SAMPLES:
                yield np.concatenate(pending)
                pending = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench/results/issue20/capture_downmix.json")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="soundhive-capture-downmix-"))
    try:
        mp3 = radio_mp3(folder).read_bytes()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ways = {"pyav_resampler": pyav_resampler, "capture_downmix": capture_downmix}
    first, second = ([*blocks(mp3, make())] for make in ways.values())
    if len(first) != len(second) or not all(map(np.array_equal, first, second)):
        sys.exit("error: the two ways give different blocks")
    percent: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, make in ways.items():
            cpu = time.process_time()
            for _block in blocks(mp3, make()):
                pass
            percent[name].append(100 * (time.process_time() - cpu) / LOOP_S)
    report = {"machine": machine.describe(),
              "command": {"argv": sys.argv[1:], "commit": machine.git_commit()},
              "cpu_percent_per_stream": percent,
              "median": {name: statistics.median(v) for name, v in percent.items()},
              "load_average": [round(x, 2) for x in os.getloadavg()]}
    for name, median in report["median"].items():
        print(f"{name}: {median:.3f} % of a core per stream (median of {args.rounds})",
              file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
