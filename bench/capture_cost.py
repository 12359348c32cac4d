"""Capture's cost per network stream: N live audio streams served on loopback (HTTP or RTSP),
read by real capture processes (`soundhive serve capture`, PyAV decoding and resampling as in
production).

    .venv/bin/python bench/capture_cost.py [--streams 25,50,100] [--seconds 30]
                                           [--protocol http|rtsp] [--processes 1] [--no-hub]
                                           [--out bench/results/issue20/capture_cost.json]

Every stream is an endless MP3 (128 kbit/s, 44.1 kHz stereo, as internet radio is: a public clip
and 9.6 s of silence, looped and encoded by ffmpeg). HTTP: this process serves each client the
file as fast as it reads it (capture replays network streams in real time, so TCP's flow control
paces the server).
RTSP: GStreamer's RTSP server (bench/rtsp_radio.py, under the system Python) sends MP3 over RTP
in real time, one shared pipeline for every client; it needs
`apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good`.
HTTP streams are read by capture's hub (services/capture/hub.py: many to a thread) unless
--no-hub (a thread per stream through FFmpeg, as RTSP always is).
The N streams are divided among --processes capture processes (as several capture services,
each with its share of the sources). A private redis-server takes the chunks; this process trims
the PCM stream so that capture never holds back (nothing reads it). Per N: capture's CPU (user +
system of every capture process, over the measured window after a warm-up), its RSS, the chunks
published against N / 0.96 per second, and from those the CPU per stream and the streams one
core would hold, and the CPU per chunk delivered (on a loaded machine capture may fall behind,
and then its CPU per stream reads low). The load average is recorded: CPU time is less moved
than wall time by other work on the machine, not unmoved. Every process it starts is stopped on
every exit.
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
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import machine
import psutil
import redis
from machine import CLIPS, REPO

from services.registry import SERVICES
from shared import streams
from shared.audio import find_audio_files
from shared.messages import CHUNK_HOP_SECONDS
from shared.ports import free_port
from soundhive.redis_process import RedisProcess, die_with_parent

WARMUP_S = 8.0
LOOP_S = 60
SILENCE_S = 9.6
PROTOCOLS = ("http", "rtsp")
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good"
RTSP_START_S = 10.0


def radio_mp3(folder: Path) -> Path:
    """A public clip and SILENCE_S of silence, looped to LOOP_S seconds, as a 128 kbit/s
    44.1 kHz stereo MP3 (the silence lets the clip's events end and start again)."""
    clip = find_audio_files(CLIPS)[0]
    cycle, out = folder / "cycle.wav", folder / "radio.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-af", f"apad=pad_dur={SILENCE_S}",
                    "-y", str(cycle)], check=True)
    # No gapless (Info) header: a live stream has none, and the capture hub hands an MP3 file
    # that starts with one to FFmpeg (whose demuxer trims the audio by it).
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "-1", "-i", str(cycle), "-t",
                    str(LOOP_S), "-ac", "2", "-ar", "44100", "-b:a", "128k", "-write_xing", "0",
                    "-y", str(out)], check=True)
    return out


class Radio(AbstractContextManager):
    """The endless MP3 served on loopback by `protocol`; `urls(n)`: what n streams read."""

    def __init__(self, protocol: str, folder: Path):
        self.protocol, self.mp3 = protocol, radio_mp3(folder)
        self._http: ThreadingHTTPServer | None = None
        self._rtsp: subprocess.Popen | None = None
        self.port = free_port()

    def __enter__(self) -> "Radio":
        if self.protocol == "http":
            self._http = _serve_http(self.mp3.read_bytes(), self.port)
        else:
            self._rtsp = _serve_rtsp(self.mp3, self.port)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._http is not None:
            self._http.shutdown()
        if self._rtsp is not None:
            _stop(self._rtsp)

    def urls(self, n: int) -> list[str]:
        if self.protocol == "http":
            return [f"http://127.0.0.1:{self.port}/{i}" for i in range(n)]
        return [f"rtsp://127.0.0.1:{self.port}/radio"] * n


def _serve_http(mp3: bytes, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
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

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _serve_rtsp(mp3: Path, port: int) -> subprocess.Popen:
    missing = f"RTSP needs GStreamer's RTSP server: apt-get install {RTSP_PACKAGES}"
    if not Path(SYSTEM_PYTHON).exists():
        raise RuntimeError(missing)
    server = subprocess.Popen([SYSTEM_PYTHON, str(REPO / "bench/rtsp_radio.py"), str(mp3),
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=die_with_parent)
    ready = threading.Timer(RTSP_START_S, server.kill)
    ready.start()
    line = server.stdout.readline()  # type: ignore[union-attr]
    ready.cancel()
    if line.strip() != "ready":
        _stop(server)
        error = server.stderr.read()  # type: ignore[union-attr]
        raise RuntimeError(missing if "gi" in error and "Error" in error
                           else f"the RTSP server did not start: {error.strip()[-500:]}")
    return server


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch_capture(urls: list[str], first: int, redis_url: str, log: Path,
                   metrics_port: int = 0, hub: bool = True) -> subprocess.Popen:
    """A capture process reading `urls` as sources radio{first:04d}, radio{first+1:04d}, ..."""
    options = [arg for i, url in enumerate(urls, first)
               for arg in ("--source", f"radio{i:04d}=url:{url}")]
    with log.open("wb") as out:
        return SERVICES["capture"].launch(
            dict(os.environ), {"redis_url": redis_url, "metrics_port": metrics_port, "hub": hub},
            tuple(options), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent)


def launch_captures(urls: list[str], processes: int, redis_url: str, folder: Path,
                    hub: bool = True) -> list[subprocess.Popen]:
    """The streams divided among `processes` capture processes, in contiguous shares."""
    share = -(-len(urls) // processes)
    captures: list[subprocess.Popen] = []
    try:
        for first in range(0, len(urls), share):
            captures.append(launch_capture(urls[first:first + share], first, redis_url,
                                           folder / f"capture-{len(urls)}-{first}.log", hub=hub))
    except BaseException:
        stop_all(captures)
        raise
    return captures


def stop_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _stop(process)


def check_alive(captures: list[subprocess.Popen], folder: Path) -> None:
    for capture in captures:
        if capture.poll() is not None:
            logs = sorted(folder.glob("capture-*.log"))
            tail = logs[-1].read_text(errors="replace")[-2000:] if logs else ""
            raise RuntimeError(f"capture exited ({capture.returncode}):\n{tail}")


def run_n(urls: list[str], processes: int, seconds: float, folder: Path, hub: bool) -> dict:
    n = len(urls)
    redis_server = RedisProcess(folder / f"redis-{n}", port=free_port())
    captures: list[subprocess.Popen] = []
    try:
        redis_server.start()
        client = redis_server.client()
        captures = launch_captures(urls, processes, redis_server.url, folder, hub)
        watched = [psutil.Process(capture.pid) for capture in captures]
        started = time.monotonic()
        window_start = None
        while time.monotonic() - started < WARMUP_S + seconds:
            check_alive(captures, folder)
            client.xtrim(streams.PCM_STREAM, maxlen=200)
            if window_start is None and time.monotonic() - started >= WARMUP_S:
                window_start = (time.monotonic(), [_cpu(p) for p in watched], _added(client))
            time.sleep(0.25)
        assert window_start is not None
        wall = time.monotonic() - window_start[0]
        cpu_each = [100 * (_cpu(p) - before) / wall for p, before in zip(watched, window_start[1],
                                                                          strict=True)]
        cpu_percent = sum(cpu_each)
        rss_mb = sum(p.memory_info().rss for p in watched) / 2**20
        chunks = _added(client) - window_start[2]
        return {"streams": n, "processes": len(captures), "hub": hub, "window_s": wall,
                "cpu_percent": cpu_percent, "cpu_percent_each": cpu_each,
                "cpu_percent_per_stream": cpu_percent / n,
                "streams_per_core": 100 / (cpu_percent / n),
                # Per chunk delivered: the fairer figure when a loaded machine delays streams.
                "cpu_ms_per_chunk": 1000 * cpu_percent / 100 / max(chunks / wall, 1e-9),
                "rss_mb": rss_mb, "rss_mb_per_stream": rss_mb / n,
                "chunks_per_s": chunks / wall, "expected_chunks_per_s": n / CHUNK_HOP_SECONDS,
                "load_average": [round(x, 2) for x in os.getloadavg()]}
    finally:
        stop_all(captures)
        redis_server.stop()


def _cpu(process: psutil.Process) -> float:
    return sum(process.cpu_times()[:2])


def _added(client: redis.Redis) -> int:
    """Entries ever written to the PCM stream (what trimming does not change)."""
    try:
        return int(client.xinfo_stream(streams.PCM_STREAM)["entries-added"])
    except redis.ResponseError:  # no stream yet
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="25,50,100",
                        help="comma-separated numbers of streams, one run each")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window of a run")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="http",
                        help="how the streams are served (rtsp needs GStreamer's RTSP server)")
    parser.add_argument("--processes", type=int, default=1,
                        help="capture processes the streams are divided among")
    parser.add_argument("--hub", action=argparse.BooleanOptionalAction, default=True,
                        help="HTTP streams read by capture's hub (--no-hub: a thread each)")
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench/results/issue20/capture_cost.json",
                        help="write the JSON report here (default: %(default)s)")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes: at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = [int(x) for x in args.streams.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="soundhive-capture-bench-"))
    try:
        runs = []
        with Radio(args.protocol, folder) as radio:
            for n in counts:
                result = run_n(radio.urls(n), args.processes, args.seconds, folder, args.hub)
                runs.append(result)
                print(f"N={n} ({args.protocol}, {'hub' if args.hub else 'a thread each'}, "
                      f"{result['processes']} process(es)): capture "
                      f"{result['cpu_percent']:.0f} % CPU "
                      f"({result['cpu_percent_per_stream']:.2f} % per stream, "
                      f"~{result['streams_per_core']:.0f} streams per core), RSS "
                      f"{result['rss_mb']:.0f} MB, {result['chunks_per_s']:.1f}/"
                      f"{result['expected_chunks_per_s']:.1f} chunks/s "
                      f"({result['cpu_ms_per_chunk']:.1f} ms of CPU each), load "
                      f"{result['load_average'][0]:.1f}", file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    streams_served = {"http": "HTTP, MP3 128 kbit/s 44.1 kHz stereo, loopback",
                      "rtsp": "RTSP (GStreamer, MP3 over RTP/UDP), 128 kbit/s 44.1 kHz stereo, "
                              "loopback"}
    report = {"machine": machine.describe(),
              "command": {"argv": sys.argv[1:], "commit": machine.git_commit()},
              "stream": streams_served[args.protocol], "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
