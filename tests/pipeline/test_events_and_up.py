"""Window heads across replicas, release-framed models, `soundhive up`."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from pipeline_helpers import REPO, plain_tracker, wait_for

from services.features.settings import FeaturesSettings
from shared.audio import load_audio
from shared.config import features_replicas, threads_per_replica
from soundhive.pipeline import CAPTURE_SOURCES_PER_PROCESS


def test_up_with_embedded_redis_shows_events_for_clips(clips_dir: Path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "soundhive", "up", "--source", f"file:{clips_dir}", "--fast",
         "--exit-when-done", "--metrics-port-base", "0", "--api-port", "0"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    found = {(row[0], row[1]) for row in rows}
    assert {("dog.mp3", "Bark"), ("speech.wav", "Speech"), ("cow.mp3", "Moo")} <= found
    assert all(float(row[2]) < float(row[3]) for row in rows)


def test_up_divides_many_sources_among_capture_processes(clips_dir: Path, tmp_path: Path):
    """Past CAPTURE_SOURCES_PER_PROCESS sources, a folder's files each counted, `up` starts
    another capture process (one process's source threads thrash past ~50 network streams),
    each reading its share, and waits for them all."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(20):
        (folder / f"dog{i:02}.mp3").symlink_to(clips_dir / "dog.mp3")
    named = CAPTURE_SOURCES_PER_PROCESS + 1 - 20
    sources = ["--source", f"file:{folder}", *(
        option for i in range(named) for option in ("--source", f"d{i}=file:{folder}/dog00.mp3"))]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    logs = tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "-m", "soundhive", "up", *sources, "--fast", "--exit-when-done",
         "--ephemeral", "--metrics-port-base", "0", "--api-port", "0", "--log-dir", str(logs)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    barked = [row.split("\t")[0] for row in result.stdout.splitlines() if "\tBark\t" in row]
    assert sorted(barked) == sorted([f"dog{i:02}.mp3" for i in range(20)]
                                    + [f"d{i}" for i in range(named)])  # each once
    assert sorted(log.name for log in logs.glob("capture-*.log")) == [
        "capture-0.log", "capture-1.log"]


def pink_noise(seconds: float, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(int(seconds * 16000)))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(int(seconds * 16000)), 1e-3))
    noise = np.fft.irfft(spectrum, int(seconds * 16000))
    return (noise / np.sqrt(np.mean(noise**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def test_up_hears_a_dog_over_noise_and_nothing_in_noise_alone(clips_dir: Path, tmp_path: Path):
    """The relative gate and the denied noise classes through the real pipeline: steady noise,
    quiet or loud, makes no event; a dog 10 dB over noise makes Dog events, only where it is."""
    rng = np.random.default_rng(0)
    for name, dbfs in (("quiet-noise", -55), ("loud-noise", -30)):
        soundfile.write(tmp_path / f"{name}.wav", pink_noise(20, dbfs, rng), 16000)
    dog = load_audio(clips_dir / "dog.mp3")
    scene = pink_noise(20, -45, rng)
    dog_at_snr = dog / np.sqrt(np.mean(dog**2)) * 10 ** ((-45 + 10) / 20)
    scene[5 * 16000:5 * 16000 + len(dog)] += dog_at_snr[:15 * 16000]
    soundfile.write(tmp_path / "dog-in-noise.wav", scene, 16000)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "soundhive", "up", "--source", f"file:{tmp_path}", "--fast",
         "--exit-when-done", "--metrics-port-base", "0", "--api-port", "0"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert not [row for row in rows if row[0] != "dog-in-noise.wav"], rows
    assert {"Dog", "Bark"} & {row[1] for row in rows}, rows
    dog_end = 5 + len(dog) / 16000
    assert all(4.0 <= float(row[2]) < float(row[3]) <= dog_end + 1.5 for row in rows), rows


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_up_leaves_nothing_behind_when_stopped(clips_dir: Path, tmp_path: Path, sig):
    env = {**{k: v for k, v in os.environ.items() if k != "REDIS_URL"}, "TMPDIR": str(tmp_path)}
    up = subprocess.Popen(
        [sys.executable, "-m", "soundhive", "up", "--source", f"file:{clips_dir}",
         "--metrics-port-base", "0", "--api-port", "0"], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # One single-thread features worker per core (unless SOUNDHIVE_THREADS says otherwise).
    features = features_replicas(FeaturesSettings.threads_set())
    children = wait_for(lambda: len(pids := children_of(up.pid)) == 6 + features and pids, 120,
                        f"redis-server, capture, {features} features, classifier, notifier, "
                        "recorder and api")
    threads = [environ(pid).get("SOUNDHIVE_THREADS") for pid in children
               if b"features" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    each = FeaturesSettings.threads_set() or threads_per_replica(features)
    assert threads == [str(each)] * features
    time.sleep(1)
    up.send_signal(sig)
    assert up.wait(60) == 128 + sig
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert list(tmp_path.iterdir()) == []  # no logs, no socket, no Redis dump


def environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode().split("=", 1) for pair in pairs if b"=" in pair)


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in found.stdout.split()]


def test_a_bad_threads_setting_is_one_line_before_anything_starts(clips_dir: Path):
    env = {**os.environ, "SOUNDHIVE_THREADS": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "soundhive", "up", "--ephemeral", "--source", f"file:{clips_dir}",
         "--metrics-port-base", "0", "--api-port", "0"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SOUNDHIVE_THREADS" in lines[0], lines


def test_a_second_up_names_the_port_in_use(clips_dir: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "soundhive", "up", "--source", f"file:{clips_dir}",
             "--metrics-port-base", str(port - 1), "--api-port", "0"], cwd=REPO,
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: metrics port 127.0.0.1:{port} (features) is in use: another `soundhive up`? "
        "Choose other ports with --metrics-port-base"]


class MeanWindowHead:
    """A window head (the interface trained heads implement): AudioSet scores of the mean of
    each patch's window of recent embeddings; it records the window lengths it saw."""

    name = "mean-window"
    embedding_model = "yamnet"
    window = 4

    def __init__(self):
        from shared.models import load_model

        self._head = load_model("yamnet").head
        self.class_names = self._head.class_names
        self.lengths: list[int] = []

    def changed_on_disk(self) -> bool:
        return False

    def score_windows(self, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        self.lengths += lengths.tolist()
        means = np.stack([w[:n].mean(axis=0) for w, n in zip(windows, lengths, strict=True)])
        return self._head.score(means)


def test_window_head_sees_the_source_history_across_replicas(redis_server):
    from services.classifier.service import Classifier
    from services.classifier.settings import ClassifierSettings
    from shared import bus, streams
    from shared.messages import Embeddings, PcmChunk, Prediction

    head = MeanWindowHead()
    replicas = [Classifier(redis_server.client(), head, plain_tracker(head.class_names),
                           ClassifierSettings()) for _ in range(2)]
    rng = np.random.default_rng(0)
    for seq in range(3):
        chunk = PcmChunk.from_samples("src", "s", seq, 0.0, seq * 0.96,
                                      np.zeros(23280, np.float32), False)
        message = Embeddings.of(chunk, "yamnet", rng.random((2, 1024), np.float32))
        replicas[seq % 2].handle([bus.Delivery(f"{seq}-0", message, 1)])
    assert head.lengths == [1, 2, 3, 4, 4, 4]  # seq 1 (other replica) saw seq 0's patches
    assert redis_server.client().xlen(streams.PREDICTIONS_STREAM) == 3
    replicas[0].handle([bus.Delivery("9-0", message, 2)])  # a redelivery changes nothing
    predictions = [Prediction.decode(f[streams.MESSAGE_FIELD])
                   for _, f in redis_server.client().xrange(streams.PREDICTIONS_STREAM)]
    assert [p.seq for p in predictions] == [0, 1, 2]


class ReleaseRateEmbedder:
    """An embedder framed as the AudioSet release (VGGish): one patch every 0.96 s; its
    embedding is the patch's first samples, so the test sees which audio it was given."""

    name = "vggish"
    embedding_size = 128
    patch_hop_seconds = 0.96

    def embed(self, patches: np.ndarray) -> np.ndarray:
        return patches[:, :128].copy()


class LastOfWindowHead:
    name = "release-window"
    embedding_model = "vggish"
    window = 3

    def __init__(self):
        self.class_names = ["Dog"]
        self.lengths: list[int] = []

    def changed_on_disk(self) -> bool:
        return False

    def score_windows(self, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        self.lengths += lengths.tolist()
        return np.full((len(windows), 1), 0.9, np.float32)


def test_release_framed_models_get_one_patch_per_chunk_end_to_end(redis_server):
    from services.classifier.service import Classifier
    from services.classifier.settings import ClassifierSettings
    from services.features.service import make_handler
    from shared import bus, streams
    from shared.messages import CHUNK_HOP_SAMPLES, CHUNK_SAMPLES, Event, PcmChunk, Prediction

    audio = np.random.default_rng(0).uniform(-0.5, 0.5, CHUNK_HOP_SAMPLES * 4 + CHUNK_SAMPLES)
    chunks = [PcmChunk.from_samples("src", "s", seq, 100.0 + seq * 0.96, seq * 0.96,
                                    audio[seq * CHUNK_HOP_SAMPLES:][:CHUNK_SAMPLES], seq == 3)
              for seq in range(4)]
    outputs = make_handler(ReleaseRateEmbedder())(
        [bus.Delivery(f"{c.seq}-0", c, 1) for c in chunks])
    embeddings = [output.message for output in outputs]
    for chunk, message in zip(chunks, embeddings, strict=True):
        assert message.rows == 1 and message.patch_hop_seconds == 0.96
        np.testing.assert_array_equal(message.vectors()[0], chunk.samples()[:128])
    head = LastOfWindowHead()
    classifier = Classifier(redis_server.client(), head, plain_tracker(["Dog"]),
                            ClassifierSettings())
    classifier.handle([bus.Delivery(f"{m.seq}-0", m, 1) for m in embeddings])
    assert head.lengths == [1, 2, 3, 3]  # one frame per 0.96 s, in order
    client = redis_server.client()
    events = [Event.decode(f[streams.MESSAGE_FIELD]) for _, f in client.xrange(
        streams.EVENTS_STREAM)]
    assert [(e.kind, e.start, e.end) for e in events] == [
        ("start", 0.0, None), ("end", 0.0, round(3 * 0.96 + 0.975, 6))]
    assert len(client.xrange(streams.PREDICTIONS_STREAM)) == 4
    assert Prediction.decode(client.xrange(streams.PREDICTIONS_STREAM)[-1][1][
        streams.MESSAGE_FIELD]).offset == pytest.approx(3 * 0.96)
