"""Pipeline capacity: how many live microphones one machine holds in real time, and how fast a
chunk's event reaches an api client; with the raw model ceiling measured in the same run.

    .venv/bin/python bench/pipeline.py [--mics 200,400,600,800,1000] [--seconds 40]
                                       [--features N] [--capture http|rtsp]
                                       [--capture-processes 1] [--out bench/results/pipeline.json]

For each N: a private redis-server; features (--features replicas, SOUNDHIVE_THREADS divided
among them), classifier and api as separate processes, as `soundhive up` runs them; a client of
the api's /events/stream (SSE), as the dashboard is; and N simulated live microphones: one
publisher thread in this process writes each microphone's chunks in real time, every 0.96 s per
microphone, phases spread over the hop, with correct source/session/seq/t. Each microphone loops
over a real clip from ../shared/data/clips (a different clip and start per microphone) followed by
9.6 s of silence, so its events start and end. Like capture, it drops live audio (counted) while
the features group is SOUNDHIVE_BACKLOG_MAX chunks behind.

With --capture http|rtsp, the full system instead: N network streams served on loopback (the
endless MP3 of bench/capture_cost.py) read by real capture processes (--capture-processes, the
streams divided among them) on the same machine; their CPU and RSS are reported with the other
services', and their dropped audio is read from their metrics.


Per N: predictions/s against N / 0.96 (predictions written after the warm-up, while the
microphones run: what the pipeline delivers, however old the chunks it works on at overload);
both groups' lag sampled every second; latency from a chunk's last sample to its prediction
(written_at) and to a start event arriving at the SSE client (p50/p95/p99), from two chunks:
the one whose prediction decided the event (written in the same transaction: its
predictions-stream id is the nearest in time to the event's SSE id, the earliest on a tie),
which is what the pipeline adds, and the one holding the event's start (`event_after_onset_s`),
which adds the rules' own wait (smoothing over patches, a start placed back over the frames
before its patch, a renamed event keeping its vaguer one's start); audio dropped; CPU and
RSS per process (this one: "mics"); Redis memory.
Real time = nothing dropped, neither lag grows over the second half of the run, throughput at
least 95 % of N / 0.96, and p95 chunk-to-prediction latency under one chunk hop (0.96 s).

In the same run: the raw ceiling (patches/s of the bare embedder on batches of 32 chunks of two
patches, called as the features worker calls it, with the features workers' threads together),
so efficiency = (largest real-time N * 2 patches / 0.96 s) / ceiling; and `soundhive classify`
over the clips folder (clips/s, x real time).

With --profile DIR: py-spy samples each service (features, classifier, api) for the middle of
each run; the raw profiles go to DIR, and each service's most sampled functions (self and
inclusive, % of its samples) to the JSON. The load average is recorded at each run's end.

Writes the JSON and a PNG plot next to it (same name, .png). Needs SOUNDHIVE_MODELS, redis-server
and the bench extra (./scripts/install.sh installs it). Every process it starts is stopped on
every exit (and dies with it if killed).
"""

import argparse
import bisect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from bisect import bisect_right
from contextlib import nullcontext
from pathlib import Path

import httpx
import machine
import numpy as np
import psutil
import redis
from capture_cost import PROTOCOLS, Radio, launch_capture, stop_all
from machine import CLIPS, REPO
from runtimes import rate

from services.features.settings import FeaturesSettings
from services.registry import SERVICES
from shared import bus, streams
from shared.audio import find_audio_files, load_audio
from shared.config import Settings, features_replicas, threads_per_replica, usable_cpus
from shared.messages import (
    CHUNK_HOP_SAMPLES,
    CHUNK_HOP_SECONDS,
    CHUNK_SAMPLES,
    PATCH_HOP_SECONDS,
    PATCHES_PER_CHUNK,
    PcmChunk,
    Prediction,
)
from shared.models import ModelError, QuantizedEmbedder
from shared.native import quiet_native_stderr
from shared.ports import free_port
from soundhive.redis_process import RedisProcess, die_with_parent

CHUNK_SECONDS = CHUNK_SAMPLES / 16000
# Chunks captured this early in a run are left out of latency; predictions written this early,
# out of throughput.
WARMUP_S = 5.0
SERVICE_START_S = 120.0
TICK_S = 0.01
SILENT_CHUNKS = 10  # 9.6 s of quiet between a microphone's clip loops (events hold 1 s)
CEILING_BATCH = 32  # chunks: the features worker's default batch


def clip_chunks() -> list[list[tuple[bytes, float]]]:
    """Per clip, its chunks' (pcm bytes, rms), as capture cuts a source (zero-padded last),
    then SILENT_CHUNKS of silence: a microphone loops over them, so its events start and end."""
    out = []
    for path in find_audio_files(CLIPS):
        audio = load_audio(path)
        audio = np.pad(audio, (0, max(0, CHUNK_SAMPLES - len(audio))))
        chunks = []
        for start in range(0, len(audio) - CHUNK_SAMPLES + 1, CHUNK_HOP_SAMPLES):
            chunk = PcmChunk.from_samples("x", "x", 0, 0.0, 0.0,
                                          audio[start:start + CHUNK_SAMPLES], False)
            chunks.append((chunk.pcm, chunk.rms))
        silence = PcmChunk.from_samples("x", "x", 0, 0.0, 0.0, np.zeros(CHUNK_SAMPLES), False)
        out.append(chunks + [(silence.pcm, silence.rms)] * SILENT_CHUNKS)
    return out


def raw_ceiling(seconds: float, clips: list[list[tuple[bytes, float]]], threads: int) -> dict:
    """Patches/s of the bare embedder on batches of 32 chunks (64 patches), called as the
    features worker calls it, in this process, with as many inference threads as all the
    features workers have together."""
    from shared.models import load_embedder

    embedder = load_embedder("yamnet", threads=threads)
    assert isinstance(embedder, QuantizedEmbedder)
    chunks = np.stack([PcmChunk("x", "x", 0, 0.0, 0.0, rms, pcm).pcm_samples()
                       for clip in clips for pcm, rms in clip])
    chunks = np.concatenate([chunks] * -(-CEILING_BATCH // len(chunks)))
    chunks = chunks[:len(chunks) // CEILING_BATCH * CEILING_BATCH]

    cpu = {"s": 0.0, "patches": 0}

    def in_batches(chunks: np.ndarray) -> np.ndarray:
        started = time.process_time()
        out = np.concatenate([embedder.embed_int8(batch, PATCH_HOP_SECONDS)[0]
                              for batch in np.split(chunks, len(chunks) // CEILING_BATCH)])
        cpu["s"] += time.process_time() - started
        cpu["patches"] += len(out)
        return out

    chunks_per_s, _ = rate(in_batches, chunks, seconds)
    patches_per_s = chunks_per_s * PATCHES_PER_CHUNK
    return {"model": "yamnet", "threads": threads,
            "batch_patches": CEILING_BATCH * PATCHES_PER_CHUNK,
            "patches_per_s": patches_per_s, "cpu_ms_per_patch": 1000 * cpu["s"] / cpu["patches"],
            "chunks_per_s": chunks_per_s,
            "mics_at_ceiling": chunks_per_s * CHUNK_HOP_SECONDS}


def classify_folder_speed(repeats: int = 3) -> dict:
    """`soundhive classify --json` over the clips folder as a user runs it (start-up and model
    load included; best of `repeats`), and the same files classified in this process with the
    model loaded once (the steady rate a long folder approaches)."""
    from shared.inference import classify_file
    from shared.models import load_model

    files = find_audio_files(CLIPS)
    audio_s = sum(len(load_audio(f)) for f in files) / 16000
    command = [sys.executable, "-m", "soundhive", "classify", "--json", str(CLIPS)]
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise RuntimeError(f"soundhive classify failed: {done.stderr.strip()[-500:]}")
        walls.append(time.perf_counter() - started)
    model = load_model("yamnet", threads=usable_cpus())
    classify_file(model, files[0])  # warm up
    started = time.perf_counter()
    for _ in range(repeats):
        for path in files:
            classify_file(model, path)
    steady = (time.perf_counter() - started) / repeats
    return {"clips": len(files), "audio_s": audio_s,
            "cli_wall_s": min(walls), "cli_clips_per_s": len(files) / min(walls),
            "cli_real_time_factor": audio_s / min(walls),
            "loaded_wall_s": steady, "loaded_clips_per_s": len(files) / steady,
            "loaded_real_time_factor": audio_s / steady}


class Mics(threading.Thread):
    """N live microphones, each a chunk every 0.96 s, phases spread over the hop."""

    def __init__(self, url: str, n: int, clips: list[list[tuple[bytes, float]]], start: float,
                 until: float, backlog_max: int):
        super().__init__(name="mics", daemon=True)
        self.client = redis.Redis.from_url(url)
        self.n, self.clips, self.start_at, self.until = n, clips, start, until
        self.backlog_max = backlog_max
        self.session = uuid.uuid4().hex[:12]
        self.published = 0
        self.dropped = 0
        self.late_max_s = 0.0  # how far behind schedule the publisher got
        self.error: BaseException | None = None
        self.stop_event = threading.Event()
        # When each microphone's chunk 0 starts (unix time); chunk k starts k hops later.
        self.phases = [start + i * CHUNK_HOP_SECONDS / n for i in range(n)]

    def chunk_start(self, source: str, t: float) -> float:
        """The start of `source`'s chunk that holds time t."""
        phase = self.phases[int(source.removeprefix("mic"))]
        return phase + np.floor((t - phase + 1e-3) / CHUNK_HOP_SECONDS) * CHUNK_HOP_SECONDS

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _run(self) -> None:
        n = self.n
        phase = self.phases
        clip_of = [i % len(self.clips) for i in range(n)]
        first = [(i * 7) % len(self.clips[clip_of[i]]) for i in range(n)]
        seq = [0] * n  # written chunks per mic (a dropped chunk takes no number)
        k = 0  # chunk index on every mic's timeline
        mic = 0  # next mic due at chunk index k
        next_backlog_check, holding = 0.0, False
        while not self.stop_event.is_set():
            now = time.time()
            due = []
            while True:
                t0 = phase[mic] + k * CHUNK_HOP_SECONDS  # first sample of the chunk
                if t0 + CHUNK_SECONDS > now or t0 >= self.until:
                    break
                due.append((mic, t0))
                mic += 1
                if mic == n:
                    mic, k = 0, k + 1
            if t0 >= self.until and not due:
                return
            if due:
                self.late_max_s = max(self.late_max_s, now - (due[0][1] + CHUNK_SECONDS))
                if now >= next_backlog_check:
                    next_backlog_check = now + 0.2
                    holding = lag(self.client, streams.PCM_STREAM,
                                  streams.FEATURES_GROUP) >= self.backlog_max
                if holding:
                    self.dropped += len(due)
                else:
                    with self.client.pipeline(transaction=False) as pipe:
                        for i, t0 in due:
                            chunks = self.clips[clip_of[i]]
                            index = first[i] + round((t0 - phase[i]) / CHUNK_HOP_SECONDS)
                            pcm, rms = chunks[index % len(chunks)]
                            chunk = PcmChunk(f"mic{i:04d}", self.session, seq[i], t0,
                                             t0 - phase[i], rms, pcm, False)
                            seq[i] += 1
                            bus.publish(pipe, streams.PCM_STREAM, chunk)
                        pipe.execute()
                    self.published += len(due)
            self.stop_event.wait(TICK_S)


class CapturedStreams:
    """N network streams read by real capture processes, in Mics' place: what they published
    and dropped (from capture's metrics), and each source's chunk starts (from predictions)."""

    def __init__(self, redis_url: str, urls: list[str], processes: int, logs: Path):
        self.client = redis.Redis.from_url(redis_url)
        self.error: BaseException | None = None
        self.late_max_s = 0.0  # capture paces itself; nothing to be late
        self.stop_event = threading.Event()
        self.processes: dict[str, subprocess.Popen] = {}
        self._metrics_ports: list[int] = []
        share = -(-len(urls) // processes)
        try:
            for first in range(0, len(urls), share):
                port = free_port()
                self._metrics_ports.append(port)
                self.processes[f"capture{first // share}"] = launch_capture(
                    urls[first:first + share], first, redis_url, logs / f"capture-{first}.log",
                    metrics_port=port)
        except BaseException:
            stop_all(list(self.processes.values()))
            raise
        self._chunk_starts: dict[str, list[float]] | None = None

    def start(self) -> None:
        pass

    def join(self, timeout: float) -> None:
        pass

    @property
    def published(self) -> int:
        return int(self.client.xinfo_stream(streams.PCM_STREAM)["entries-added"])

    @property
    def dropped(self) -> int:
        seconds = sum(float(line.rsplit(" ", 1)[1])
                      for port in self._metrics_ports
                      for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines()
                      if line.startswith("soundhive_audio_dropped_seconds_total{"))
        return round(seconds / CHUNK_HOP_SECONDS)

    def chunk_start(self, source: str, t: float) -> float:
        """The start of `source`'s chunk that holds time t (its latest chunk starting by t)."""
        if self._chunk_starts is None:
            self._chunk_starts = {}
            for _, fields in self.client.xrange(streams.PREDICTIONS_STREAM):
                p = Prediction.decode(fields[streams.MESSAGE_FIELD])
                self._chunk_starts.setdefault(p.source, []).append(p.t)
            for starts in self._chunk_starts.values():
                starts.sort()
        starts = self._chunk_starts.get(source, [t])
        return starts[max(0, bisect_right(starts, t + 1e-3) - 1)]


def lag(client: redis.Redis, stream: str, group: str) -> int:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return 0
    info = next((g for g in groups if g["name"] in (group, group.encode())), None)
    if info is None or info.get("lag") is None:
        return int(client.xlen(stream))
    return int(info["lag"])


class EventListener(threading.Thread):
    """A client of the api's /events/stream (SSE), as the dashboard is: notes when each start
    event arrives, and its SSE id (its entry in the events stream)."""

    def __init__(self, api_url: str):
        super().__init__(name="events", daemon=True)
        self.url = f"{api_url}/events/stream"
        self.arrivals: list[tuple[float, dict, str]] = []  # (unix time received, event, id)
        self.connected = threading.Event()
        self.error: BaseException | None = None
        self._response: httpx.Response | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(5, read=None)) as response:
                response.raise_for_status()
                self._response = response
                self.connected.set()
                kind = sse_id = ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line.removeprefix("event:").strip()
                    elif line.startswith("id:"):
                        sse_id = line.removeprefix("id:").strip()
                    elif line.startswith("data:") and kind == "start":
                        self.arrivals.append((time.time(), json.loads(line[5:]), sse_id))
        except httpx.StreamClosed:
            pass
        except BaseException as exc:  # reported by the main thread
            if not self.connected.is_set() or self._response is not None:
                self.error = exc
            self.connected.set()

    def stop(self) -> None:
        if self._response is not None:
            response, self._response = self._response, None
            response.close()
        self.join(5)


def deciding_chunk(event_ms: int, predicted: list[tuple[int, float]]) -> float:
    """The start (t) of the chunk whose prediction was written with an event: of the source's
    predictions (stream ms, t; in stream order), the nearest in time to the event's entry,
    the earliest on a tie (a later chunk of the same transaction shares its ms)."""
    times = [ms for ms, _ in predicted]
    at = bisect.bisect_left(times, event_ms)
    if at == len(times) or (at > 0 and event_ms - times[at - 1] < times[at] - event_ms):
        at -= 1
    return predicted[at][1]


def percentiles(values: list[float]) -> dict:
    v = np.array(values) if values else np.array([np.nan])
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
            "p99": float(np.percentile(v, 99)), "max": float(np.max(v)), "count": len(values)}


def wait_for_api(api_url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVICE_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the api exited ({process.returncode}) at start")
        try:
            if httpx.get(f"{api_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the api was not ready within {SERVICE_START_S:.0f} s")


def start_services(url: str, api_port: int, logs: Path, features: int
                   ) -> dict[str, subprocess.Popen]:
    """As `soundhive up --features N` runs them: SOUNDHIVE_THREADS divided among the features
    replicas unless it is set."""
    shared_settings = {"redis_url": url, "stream_maxlen": 200000,
                       "threads": features_threads(features)}
    names = [f"features{i}" if features > 1 else "features" for i in range(features)]
    processes = {}
    for name in [*names, "classifier", "api"]:
        service = SERVICES[name.rstrip("0123456789")]
        fields = service.settings.model_fields
        settings = {key: value for key, value in shared_settings.items() if key in fields}
        settings |= {service.port_field: api_port if service.name == "api" else 0,
                     service.host_field: "127.0.0.1"}
        with (logs / f"{name}.log").open("wb") as out:
            processes[name] = service.launch(
                dict(os.environ), settings, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent)
    return processes


def stop_services(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    for process in processes.values():
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(client: redis.Redis, processes: dict[str, subprocess.Popen], logs: Path) -> None:
    """Until both groups exist (each worker creates its own when its model is loaded)."""
    deadline = time.monotonic() + SERVICE_START_S
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                tail = (logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited ({process.returncode}) at start:\n{tail}")
        try:
            if client.xinfo_groups(streams.PCM_STREAM) and \
                    client.xinfo_groups(streams.EMBEDDINGS_STREAM):
                return
        except redis.ResponseError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"services not ready within {SERVICE_START_S:.0f} s")


def growth_per_s(samples: list[tuple[float, int]]) -> float:
    """Slope (entries/s) of a least-squares line through the second half of the samples."""
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return 0.0
    t = np.array([s[0] for s in half])
    y = np.array([s[1] for s in half], float)
    return float(np.polyfit(t - t[0], y, 1)[0])


def features_threads(features: int) -> int:
    """SOUNDHIVE_THREADS when set, else as `up` divides the cores among the replicas."""
    return FeaturesSettings.threads_set() or threads_per_replica(features)


PROFILED = ("features", "classifier", "api")
PROFILE_TOP = 8
PROFILE_RATE = 100  # samples/s


def start_profiles(processes: dict[str, subprocess.Popen], folder: Path, n: int,
                   seconds: float) -> dict[str, tuple[subprocess.Popen, Path]]:
    """py-spy on each service for `seconds` (raw collapsed stacks; --nonblocking: the services
    are not paused to be sampled)."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    started = {}
    for name, process in processes.items():
        if name.rstrip("0123456789") in PROFILED:
            out = folder / f"{n}-{name}.txt"
            started[name] = (subprocess.Popen(
                [py_spy, "record", "--pid", str(process.pid), "--duration", str(round(seconds)),
                 "--rate", str(PROFILE_RATE), "--format", "raw", "--nonblocking",
                 "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out)
    return started


def profile_summary(path: Path, seconds: float) -> dict:
    """The functions most sampled (self: on top of the stack; inclusive: anywhere in it), as
    % of one core (a thread's samples at PROFILE_RATE over `seconds`; idle threads are not
    sampled; a runnable thread waiting for a core counts as busy), from py-spy's raw output
    ("thread;frame;frame;... count" lines)."""
    own: dict[str, int] = {}
    anywhere: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0].rstrip(")")
                  for f in stack.split(";")[1:]]  # the thread's name first
        total += int(count)
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in set(frames):
            anywhere[frame] = anywhere.get(frame, 0) + int(count)

    def top(counts: dict[str, int]) -> list[tuple[str, float]]:
        # Frames under nearly every sample (the thread's entry, the CLI, the loop) say nothing.
        telling = {name: c for name, c in counts.items() if c < 0.9 * total}
        ranked = sorted(telling.items(), key=lambda kv: -kv[1])[:PROFILE_TOP]
        return [(name, round(100 * c / (PROFILE_RATE * seconds), 1)) for name, c in ranked]

    return {"busy_percent_of_core": round(100 * total / (PROFILE_RATE * seconds), 1),
            "self": top(own), "inclusive": top(anywhere)}


def finish_profiles(started: dict[str, tuple[subprocess.Popen, Path]], seconds: float) -> dict:
    summaries = {}
    for name, (process, out) in started.items():
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if out.is_file():
            summaries[name] = profile_summary(out, seconds)
    return summaries


def run_n(n: int, seconds: float, clips: list, backlog_max: int, features: int,
          profile: Path | None = None, radio: Radio | None = None,
          capture_processes: int = 1) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"soundhive-bench-{n}-"))
    server = RedisProcess(folder, port=free_port())
    processes: dict[str, subprocess.Popen] = {}
    mics: Mics | CapturedStreams | None = None
    listener = None
    profiles: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        server.start()
        client = server.client()
        api_url = f"http://127.0.0.1:{free_port()}"
        processes = start_services(server.url, int(api_url.rsplit(":", 1)[1]), folder, features)
        wait_ready(client, processes, folder)
        wait_for_api(api_url, processes["api"])
        listener = EventListener(api_url)
        listener.start()
        listener.connected.wait(10)
        if listener.error is not None:
            raise listener.error
        if radio is not None:
            mics = CapturedStreams(server.url, radio.urls(n), capture_processes, folder)
            processes |= mics.processes
        procs = {name: psutil.Process(p.pid) for name, p in processes.items()}
        procs["redis"] = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        # This process: the simulated microphones and the measuring (only the measuring and the
        # HTTP streams' server with --capture).
        procs["mics" if radio is None else "bench"] = psutil.Process()
        for p in procs.values():
            p.cpu_percent(None)
        client.config_resetstat()
        start = time.time() + 0.5
        until = start + seconds
        if mics is None:
            mics = Mics(server.url, n, clips, start, until, backlog_max)
        mics.start()
        lags: list[tuple[float, int, int]] = []
        latencies: list[float] = []
        by_source: dict[str, list[tuple[int, float]]] = {}  # (stream ms, t) of its predictions
        predicted = 0
        rss: dict[str, int] = {name: 0 for name in procs}
        cpu: dict[str, list[float]] = {name: [] for name in procs}
        redis_mem = 0
        last_id = b"0-0"
        next_sample = time.time()
        profile_at = start + WARMUP_S if profile is not None else float("inf")
        while time.time() < until + CHUNK_SECONDS + 0.5:
            if time.time() >= profile_at:
                profile_at = float("inf")
                profiles = start_profiles(processes, profile, n, seconds - 2 * WARMUP_S)
            for name, process in processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}) during the run")
            if mics.error is not None:
                raise mics.error
            if listener.error is not None:
                raise listener.error
            reply = client.xread({streams.PREDICTIONS_STREAM: last_id}, count=5000, block=200)
            for _, items in reply or []:
                for entry_id, fields in items:
                    last_id = entry_id
                    p = Prediction.decode(fields[streams.MESSAGE_FIELD])
                    by_source.setdefault(p.source, []).append(
                        (int(entry_id.split(b"-")[0]), p.t))
                    if start + WARMUP_S <= p.written_at <= until:
                        predicted += 1
                    if p.t >= start + WARMUP_S:
                        latencies.append(p.written_at - (p.t + CHUNK_SECONDS))
            now = time.time()
            if now >= next_sample:
                next_sample += 1.0
                lags.append((now - start, lag(client, streams.PCM_STREAM, streams.FEATURES_GROUP),
                             lag(client, streams.EMBEDDINGS_STREAM, streams.CLASSIFIER_GROUP)))
                redis_mem = max(redis_mem, int(client.info("memory")["used_memory"]))
                for name, p in procs.items():
                    try:
                        usage = p.cpu_percent(None)
                        if start + WARMUP_S <= now <= until:  # as predictions are counted
                            cpu[name].append(usage)
                        rss[name] = max(rss[name], p.memory_info().rss)
                    except psutil.Error:
                        pass
        mics.stop_event.set()
        mics.join(5)
        listener.stop()
        load_average = os.getloadavg()
        commands = {name.removeprefix("cmdstat_"): info["calls"]
                    for name, info in client.info("commandstats").items()}
        event_latencies, after_onset = [], []
        read_until_ms = int(last_id.split(b"-")[0])
        for received, event, sse_id in listener.arrivals:
            event_ms = int(sse_id.split("-")[0])
            if event_ms >= read_until_ms:  # its chunk's prediction may not have been read
                continue
            onset_chunk = mics.chunk_start(event["source"], event["start_time"])
            decided = deciding_chunk(event_ms, by_source[event["source"]])
            if onset_chunk >= start + WARMUP_S:
                after_onset.append(received - (onset_chunk + CHUNK_SECONDS))
            if decided >= start + WARMUP_S:
                event_latencies.append(received - (decided + CHUNK_SECONDS))
        if not event_latencies:
            print(f"N={n}: no event reached the SSE client (see the api's log)", file=sys.stderr)
        window = seconds - WARMUP_S
        expected = n / CHUNK_HOP_SECONDS
        pcm_growth = growth_per_s([(t, a) for t, a, _ in lags])
        emb_growth = growth_per_s([(t, b) for t, _, b in lags])
        bound = 0.5  # chunks/s: a lag that grows faster than this is falling behind
        result = {
            "mics": n, "seconds": seconds,
            "expected_predictions_per_s": expected,
            "predictions_per_s": predicted / window,
            "throughput_ratio": predicted / window / expected,
            "published": mics.published, "dropped_chunks": mics.dropped,
            "dropped_audio_s": mics.dropped * CHUNK_HOP_SECONDS,
            "publisher_late_max_s": mics.late_max_s,
            "latency_s": percentiles(latencies),
            "event_latency_s": percentiles(event_latencies),
            "event_after_onset_s": percentiles(after_onset),
            "lag": {"features_max": max((a for _, a, _ in lags), default=0),
                    "classifier_max": max((b for _, _, b in lags), default=0),
                    "features_growth_per_s": pcm_growth, "classifier_growth_per_s": emb_growth,
                    "samples": [[round(t, 2), a, b] for t, a, b in lags]},
            "cpu_percent": {name: float(np.mean(v[1:])) if len(v) > 1 else None
                            for name, v in cpu.items()},
            # CPU time per chunk predicted: how the work divides, much less moved by other
            # load on the machine than rates are.
            "cpu_ms_per_chunk": {name: float(np.mean(v[1:])) * 10 / max(predicted / window, 1e-9)
                                 for name, v in cpu.items() if len(v) > 1},
            "rss_mb": {name: v / 2**20 for name, v in rss.items()},
            "redis_used_memory_mb": redis_mem / 2**20,
            "load_average": [round(x, 2) for x in load_average],
            # Every client's (this process's lag probes and reads too), per chunk published.
            "redis_calls_per_chunk": {name: round(calls / max(mics.published, 1), 2)
                                      for name, calls in sorted(commands.items(),
                                                                key=lambda kv: -kv[1])},
            "profile": finish_profiles(profiles, seconds - 2 * WARMUP_S),
        }
        # Keeping up also means a chunk is predicted, at p95, before its microphone's next one.
        result["real_time"] = bool(mics.dropped == 0 and pcm_growth < bound
                                   and emb_growth < bound and result["throughput_ratio"] > 0.98
                                   and result["latency_s"]["p95"] < CHUNK_HOP_SECONDS)
        return result
    finally:
        for process, _ in profiles.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        if mics is not None:
            mics.stop_event.set()
            mics.join(5)
        if listener is not None:
            listener.stop()
        stop_services(processes)
        server.stop()
        if sys.exc_info()[0] is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"logs of the failed run: {folder}", file=sys.stderr)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = report["runs"]
    ns = [r["mics"] for r in runs]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    left.plot(ns, [r["latency_s"]["p50"] * 1000 for r in runs], "o-", label="prediction p50")
    left.plot(ns, [r["latency_s"]["p95"] * 1000 for r in runs], "s-", label="prediction p95")
    left.plot(ns, [r["event_latency_s"]["p95"] * 1000 for r in runs], "^--",
              label="event at the api p95 (from its deciding chunk)")
    left.set_yscale("log")
    left.set_xlabel("live microphones")
    left.set_ylabel("from a chunk's last sample (ms)")
    left.legend()
    left.grid(True, which="both", alpha=0.3)
    middle.plot(ns, [r["lag"]["features_max"] for r in runs], "o-", label="features (audio)")
    middle.plot(ns, [r["lag"]["classifier_max"] for r in runs], "s-",
                label="classifier (embeddings)")
    middle.set_xlabel("live microphones")
    middle.set_ylabel("max consumer-group lag (entries)")
    middle.legend()
    middle.grid(True, alpha=0.3)
    for r in runs:
        samples = r["lag"]["samples"]
        right.plot([s[0] for s in samples], [s[1] + s[2] for s in samples],
                   label=f"N={r['mics']}" + ("" if r["real_time"] else " (not real time)"))
    right.set_xlabel("seconds into the run")
    right.set_ylabel("unread entries (features + classifier lag)")
    right.legend()
    right.grid(True, alpha=0.3)
    up_to = "" if report.get("limit_found", True) else "at least "
    fig.suptitle(f"soundhive pipeline, {report['machine']['cpus']} CPUs: real time up to "
                 f"{up_to}{report['max_real_time_mics']} mics, {report['efficiency']:.0%} of "
                 f"the raw YAMNet ceiling ({report['ceiling']['patches_per_s']:.0f} patches/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cpu_text(percent: dict[str, float | None]) -> str:
    return " ".join(f"{name} {value:.0f}" for name, value in percent.items() if value is not None)


def mic_counts(text: str) -> list[int]:
    try:
        counts = sorted(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}"
                                         ) from None
    if counts[0] < 1:
        raise argparse.ArgumentTypeError("each run needs at least one microphone")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mics", type=mic_counts, default="200,400,600,700,800,900",
                        help="comma-separated numbers of microphones, one run each")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each run")
    parser.add_argument("--ceiling-seconds", type=float, default=15.0,
                        help="length of the raw model measurement")
    parser.add_argument("--features", type=int, default=None,
                        help="features worker processes, SOUNDHIVE_THREADS divided among them "
                        "(default: as `soundhive up`, one per core with one thread each)")
    parser.add_argument("--capture", choices=PROTOCOLS,
                        help="the full system: real capture reading N network streams served "
                        "this way, in place of simulated microphones")
    parser.add_argument("--capture-processes", type=int, default=1,
                        help="with --capture: capture processes the streams are divided among")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy each service during each run; raw profiles to DIR")
    parser.add_argument("--plot-only", action="store_true",
                        help="only draw the PNG again from the JSON at --out")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/pipeline.json",
                        help="write the JSON report here (default: %(default)s)")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    if args.seconds <= 2 * WARMUP_S:
        parser.error(f"--seconds must exceed {2 * WARMUP_S:g}")
    if args.features is None:
        args.features = features_replicas(FeaturesSettings.threads_set())
    if args.ceiling_seconds <= 0 or args.features < 1 or args.capture_processes < 1:
        parser.error("--ceiling-seconds must be positive, --features and --capture-processes "
                     "at least 1")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    quiet_native_stderr()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    backlog_max = Settings().backlog_max
    clips = clip_chunks()
    print(f"{len(clips)} clips, {sum(map(len, clips))} chunks", file=sys.stderr)
    ceiling = raw_ceiling(args.ceiling_seconds, clips,
                          args.features * features_threads(args.features))
    print(f"raw YAMNet: {ceiling['patches_per_s']:.1f} patches/s, "
          f"{ceiling['cpu_ms_per_patch']:.2f} ms of CPU each "
          f"(= {ceiling['mics_at_ceiling']:.0f} mics)", file=sys.stderr)
    folder = classify_folder_speed()
    print(f"classify {folder['clips']} clips ({folder['audio_s']:.0f} s of audio): "
          f"{folder['cli_wall_s']:.2f} s by the CLI ({folder['cli_real_time_factor']:.0f}x real "
          f"time, start-up included), {folder['loaded_clips_per_s']:.0f} clips/s "
          f"({folder['loaded_real_time_factor']:.0f}x) with the model loaded", file=sys.stderr)
    runs = []
    radio_folder = Path(tempfile.mkdtemp(prefix="soundhive-radio-"))
    radio = Radio(args.capture, radio_folder) if args.capture else None
    try:
        with radio or nullcontext():
            for n in args.mics:
                runs.append(one_run(n, args, clips, backlog_max, ceiling, radio))
    finally:
        shutil.rmtree(radio_folder, ignore_errors=True)
    report_runs(args, runs, ceiling, folder, backlog_max)


def one_run(n: int, args: argparse.Namespace, clips: list, backlog_max: int, ceiling: dict,
            radio: Radio | None) -> dict:
    result = run_n(n, args.seconds, clips, backlog_max, args.features, args.profile, radio,
                   args.capture_processes)
    # The bare model's CPU per chunk against the whole box's (mics or capture included).
    result["model_share_of_cpu"] = PATCHES_PER_CHUNK * ceiling["cpu_ms_per_patch"] / sum(
        result["cpu_ms_per_chunk"].values())
    lat = result["latency_s"]
    print(f"N={n:4d}: {result['predictions_per_s']:7.1f}/"
          f"{result['expected_predictions_per_s']:.1f} pred/s, latency p50 "
          f"{lat['p50'] * 1000:.0f} p95 {lat['p95'] * 1000:.0f} "
          f"p99 {lat['p99'] * 1000:.0f} ms, event at api p50 "
          f"{result['event_latency_s']['p50'] * 1000:.0f} p95 "
          f"{result['event_latency_s']['p95'] * 1000:.0f} ms "
          f"({result['event_latency_s']['count']}; after the onset's chunk p95 "
          f"{result['event_after_onset_s']['p95'] * 1000:.0f}), "
          f"lag max {result['lag']['features_max']}+"
          f"{result['lag']['classifier_max']}, dropped {result['dropped_chunks']}, "
          f"CPU % {cpu_text(result['cpu_percent'])} (model "
          f"{result['model_share_of_cpu']:.0%} of it), load {result['load_average'][0]:.1f}, "
          f"real time {result['real_time']}",
          file=sys.stderr)
    return result


def report_runs(args: argparse.Namespace, runs: list[dict], ceiling: dict, folder: dict,
                backlog_max: int) -> None:
    best = max((r["mics"] for r in runs if r["real_time"]), default=0)
    limit_found = not runs[-1]["real_time"]
    if not limit_found:
        print(f"every N held: the limit is above {best} microphones (try larger --mics)",
              file=sys.stderr)
    report = {
        "machine": machine.describe(),
        "command": {"argv": sys.argv[1:], "commit": machine.git_commit(),
                    "features": args.features, "threads": features_threads(args.features),
                    "batch_size": Settings().batch_size,
                    "backlog_max": backlog_max, "capture": args.capture,
                    "capture_processes": args.capture_processes if args.capture else None},
        "limit_found": limit_found,
        "ceiling": ceiling, "classify_folder": folder, "max_real_time_mics": best,
        "efficiency": best * PATCHES_PER_CHUNK / CHUNK_HOP_SECONDS / ceiling["patches_per_s"],
        # The most the pipeline delivered in any run (at saturation), against the ceiling.
        "peak_efficiency": max(r["predictions_per_s"] for r in runs) * PATCHES_PER_CHUNK
        / ceiling["patches_per_s"],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({k: report[k]
                      for k in ("max_real_time_mics", "efficiency", "peak_efficiency")}))


if __name__ == "__main__":
    try:
        main()
    except (ModelError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
