"""What capture's one-thread-per-source design costs: N copies of a network stream's audio
decoded and resampled as capture does (PyAV: MP3 frames -> 16 kHz mono float32, paced in real
time), in K threads (each thread takes N / K streams in turn), CPU per stream.

    .venv/bin/python bench/capture_threads.py [--streams 100] [--threads 100,4,1] [--seconds 15]
                                              [--out bench/results/issue20/capture_threads.json]

No network and no Redis: each stream is the endless MP3 of bench/capture_cost.py read from
memory, so the difference between thread counts is the cost of many Python threads waking and
taking the GIL in turn, not FFmpeg's work. The thread counts run in the order given, twice
(alternating, as the machine's load drifts); the load average is recorded.
"""

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import machine
from capture_cost import radio_mp3
from machine import REPO

from shared import params

BLOCK_SAMPLES = params.SAMPLE_RATE // 10  # as capture's network sources


def decode_in_turn(mp3: bytes, streams: int, stop: threading.Event) -> None:
    """`streams` decoders in one thread: a 0.1 s block of each in turn, then wait for real time."""
    sources = []
    for _ in range(streams):
        container = av.open(io.BytesIO(mp3))
        audio = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=params.SAMPLE_RATE)
        sources.append((container.decode(audio), resampler))
    started, done = time.time(), 0
    while not stop.is_set():
        for frames, resampler in sources:
            held = 0
            while held < BLOCK_SAMPLES:
                for out in resampler.resample(next(frames)):
                    held += out.to_ndarray().size
        done += BLOCK_SAMPLES
        stop.wait(started + done / params.SAMPLE_RATE - time.time())


def run(mp3: bytes, streams: int, threads: int, seconds: float) -> dict:
    stop = threading.Event()
    share = streams // threads
    workers = [threading.Thread(target=decode_in_turn, args=(mp3, share, stop), daemon=True)
               for _ in range(threads)]
    cpu = time.process_time()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    percent = 100 * (time.process_time() - cpu) / seconds
    return {"streams": share * threads, "threads": threads, "cpu_percent": percent,
            "cpu_percent_per_stream": percent / (share * threads),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--threads", default="100,4,1", help="comma-separated thread counts")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each run")
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench/results/issue20/capture_threads.json",
                        help="write the JSON report here (default: %(default)s)")
    args = parser.parse_args()
    counts = [int(x) for x in args.threads.split(",")]
    if args.streams < 1 or any(not 1 <= k <= args.streams for k in counts):
        parser.error("--streams at least 1; each thread count between 1 and --streams")
    folder = Path(tempfile.mkdtemp(prefix="soundhive-capture-threads-"))
    try:
        mp3 = radio_mp3(folder).read_bytes()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    runs = []
    for k in counts * 2:
        result = run(mp3, args.streams, k, args.seconds)
        runs.append(result)
        print(f"{result['streams']} streams in {k} thread(s): {result['cpu_percent']:.0f} % CPU, "
              f"{result['cpu_percent_per_stream']:.3f} % per stream, load "
              f"{result['load_average'][0]:.1f}", file=sys.stderr)
    report = {"machine": machine.describe(),
              "command": {"argv": sys.argv[1:], "commit": machine.git_commit()}, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
