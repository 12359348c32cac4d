"""Capture's cost per network stream: N live HTTP audio streams served on loopback, read by one
real capture process (`soundhive serve capture`, PyAV decoding and resampling as in production).

    .venv/bin/python bench/capture_cost.py [--streams 25,50,100] [--seconds 30]
                                           [--out bench/results/issue20/capture_cost.json]

The server sends every client an endless MP3 (128 kbit/s, 44.1 kHz stereo, as internet radio
is: a public clip looped and encoded by ffmpeg), as fast as the client reads it; capture replays
network streams in real time, so TCP's flow control paces the server. A private redis-server
takes the chunks; this process trims the PCM stream so that capture never holds back (nothing
reads it). Per N: capture's CPU (user + system, from its start and over the measured window
after a warm-up), its RSS, the chunks it published against N / 0.96 per second, and from those
the CPU per stream and the streams one core would hold. The load average is recorded: CPU time
is less moved than wall time by other work on the machine, not unmoved. Every process it starts
is stopped on every exit.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import machine
import psutil
import redis

from services.registry import SERVICES
from shared import streams
from shared.audio import find_audio_files
from shared.messages import CHUNK_HOP_SECONDS
from shared.ports import free_port
from soundhive.redis_process import RedisProcess, die_with_parent

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
REPO = Path(__file__).resolve().parents[1]
WARMUP_S = 8.0
LOOP_S = 60


def radio_mp3(folder: Path) -> bytes:
    """A public clip looped to LOOP_S seconds, as a 128 kbit/s 44.1 kHz stereo MP3."""
    clip = find_audio_files(CLIPS)[0]
    out = folder / "radio.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "-1", "-i", str(clip), "-t",
                    str(LOOP_S), "-ac", "2", "-ar", "44100", "-b:a", "128k", "-y", str(out)],
                   check=True)
    return out.read_bytes()


def serve_radio(mp3: bytes) -> ThreadingHTTPServer:
    class Radio(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(mp3)
            except OSError:  # the client went away
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Radio)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_n(n: int, seconds: float, port: int, folder: Path) -> dict:
    redis_server = RedisProcess(folder / f"redis-{n}", port=free_port())
    capture = None
    try:
        redis_server.start()
        client = redis_server.client()
        options = [arg for i in range(n)
                   for arg in ("--source", f"radio{i:04d}=url:http://127.0.0.1:{port}/{i}")]
        with (folder / f"capture-{n}.log").open("wb") as log:
            capture = SERVICES["capture"].launch(
                dict(os.environ), {"redis_url": redis_server.url, "metrics_port": 0},
                tuple(options), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent)
        process = psutil.Process(capture.pid)
        started = time.monotonic()
        window_start = None
        while time.monotonic() - started < WARMUP_S + seconds:
            if capture.poll() is not None:
                tail = (folder / f"capture-{n}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"capture exited ({capture.returncode}):\n{tail}")
            client.xtrim(streams.PCM_STREAM, maxlen=200)
            if window_start is None and time.monotonic() - started >= WARMUP_S:
                window_start = (time.monotonic(), sum(process.cpu_times()[:2]),
                                _added(client))
            time.sleep(0.25)
        assert window_start is not None
        wall = time.monotonic() - window_start[0]
        cpu = sum(process.cpu_times()[:2]) - window_start[1]
        chunks = _added(client) - window_start[2]
        cpu_percent = 100 * cpu / wall
        return {"streams": n, "window_s": wall, "cpu_percent": cpu_percent,
                "cpu_percent_per_stream": cpu_percent / n,
                "streams_per_core": 100 / (cpu_percent / n),
                "rss_mb": process.memory_info().rss / 2**20,
                "rss_mb_per_stream": process.memory_info().rss / 2**20 / n,
                "chunks_per_s": chunks / wall, "expected_chunks_per_s": n / CHUNK_HOP_SECONDS,
                "load_average": [round(x, 2) for x in os.getloadavg()]}
    finally:
        if capture is not None and capture.poll() is None:
            capture.terminate()
            try:
                capture.wait(15)
            except subprocess.TimeoutExpired:
                capture.kill()
                capture.wait()
        redis_server.stop()


def _added(client: redis.Redis) -> int:
    """Entries ever written to the PCM stream (what trimming does not change)."""
    try:
        return int(client.xinfo_stream(streams.PCM_STREAM)["entries-added"])
    except redis.ResponseError:  # no stream yet
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="25,50,100",
                        help="comma-separated numbers of streams, one run each")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window of a run")
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench/results/issue20/capture_cost.json")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = [int(x) for x in args.streams.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="soundhive-capture-bench-"))
    try:
        server = serve_radio(radio_mp3(folder))
        runs = []
        for n in counts:
            result = run_n(n, args.seconds, server.server_address[1], folder)
            runs.append(result)
            print(f"N={n}: capture {result['cpu_percent']:.0f} % CPU "
                  f"({result['cpu_percent_per_stream']:.2f} % per stream, "
                  f"~{result['streams_per_core']:.0f} streams per core), RSS "
                  f"{result['rss_mb']:.0f} MB, {result['chunks_per_s']:.1f}/"
                  f"{result['expected_chunks_per_s']:.1f} chunks/s, load "
                  f"{result['load_average'][0]:.1f}", file=sys.stderr)
        server.shutdown()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = {"machine": machine.describe(),
              "command": {"argv": sys.argv[1:], "commit": machine.git_commit()},
              "stream": "HTTP, MP3 128 kbit/s 44.1 kHz stereo, loopback", "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
