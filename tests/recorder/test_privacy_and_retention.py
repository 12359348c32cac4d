"""Privacy (speech clips are withheld; `up` keeps no Redis on disk), retention (oldest first,
a minimum per label) and a full disk (a status, not a crash), with the real recorder, Redis and
pipeline."""

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from pipeline_helpers import REPO, RedisServer, Services, dog_scene
from test_recorder_pipeline import run_pipeline, settled_clips

from services.recorder.service import speech_score
from shared import clips, streams
from shared.audio import load_audio
from shared.messages import Clip, Prediction


def speech_scene(clips_dir: Path, folder: Path) -> Path:
    speech = load_audio(clips_dir / "speech.wav")
    scene = np.concatenate([np.zeros(3 * 16000, np.float32), speech,
                            np.zeros(4 * 16000, np.float32)])
    path = folder / "talk.wav"
    soundfile.write(path, scene, 16000, "FLOAT")
    return path


def test_privacy_withholds_speech_clips_and_keeps_the_others(services: Services,
                                                             clips_dir: Path, tmp_path: Path):
    sources = tmp_path / "sources"
    sources.mkdir()
    speech_scene(clips_dir, sources)
    dog_scene(clips_dir, sources)
    folder = tmp_path / "clips"
    run_pipeline(services, sources, folder, SOUNDHIVE_PRIVACY="speech")
    found = settled_clips(services.server.client(), 2)
    talk = [clip for clip in found.values() if clip.source == "talk.wav"]
    dog = [clip for clip in found.values() if clip.source == "dog-scene.wav"]
    assert talk and all(c.status == "withheld" and c.reason == "speech" for c in talk), talk
    assert dog and all(c.status == "ready" for c in dog), dog
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert written == {name for c in dog for name in (c.audio, c.spectrogram)}


def test_up_in_privacy_mode_keeps_no_redis_on_disk_and_clips_in_its_data_dir(
        clips_dir: Path, tmp_path: Path):
    data = tmp_path / "data"
    sources = tmp_path / "sources"
    sources.mkdir()
    dog_scene(clips_dir, sources)
    env = {**{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
           "SOUNDHIVE_PRIVACY": "speech"}
    result = subprocess.run(
        [sys.executable, "-m", "soundhive", "up", "--source", f"file:{sources}", "--fast",
         "--exit-when-done", "--metrics-port-base", "0", "--api-port", "0", "--data-dir",
         str(data)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "keeps nothing on disk" in result.stderr
    assert not [p for p in (data / "redis").rglob("*") if p.is_file()]  # no AOF, no dump
    recorded = list((data / "clips").rglob("*.ogg"))
    assert recorded, result.stderr[-2000:]
    assert stat.S_IMODE((data / "clips").stat().st_mode) == clips.PRIVATE_FOLDER
    assert {stat.S_IMODE(path.stat().st_mode) for path in recorded} == {clips.PRIVATE_FILE}


def fake_clip(client, folder: Path, event_id: str, label: str, written: float,
              size: int) -> Clip:
    stem = clips.file_stem(event_id)
    for suffix in (".ogg", ".png"):
        (folder / f"{stem}{suffix}").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}{suffix}").write_bytes(b"x" * (size // 2))
    clip = Clip(event_id, "mic", label, "ready", "", f"{stem}.ogg", f"{stem}.png", 0.0, 5.0,
                size, written)
    clips.record(client, clip)
    return clip


def test_retention_removes_the_oldest_first_keeping_a_minimum_per_label(
        redis_server: RedisServer, tmp_path: Path):
    client = redis_server.client()
    now = time.time()
    made = [fake_clip(client, tmp_path, f"mic/{label}/{i}", label, now - 1000 + i, 1000)
            for i, label in enumerate(["Bark", "Bark", "Meow", "Bark", "Meow", "Bark"])]
    policy = clips.Retention(tmp_path, max_age_days=30, max_bytes=3500, keep_per_label=1)
    expired = clips.enforce_retention(client, policy)
    # Oldest first until 3 clips (3000 bytes) remain; the only older Meow is kept (its last
    # but one goes, as soon as a newer one exists).
    assert [(c.id, why) for c, why in expired] == [
        ("mic/Bark/0", "size"), ("mic/Bark/1", "size"), ("mic/Meow/2", "size")]
    assert int(client.get(streams.CLIPS_BYTES)) == 3000
    for clip in made:
        gone = clip in [c for c, _ in expired]
        assert (tmp_path / clip.audio).exists() != gone
        assert clips.read(client, clip.id).status == ("expired" if gone else "ready")
    old = clips.Retention(tmp_path, max_age_days=0, max_bytes=10**9, keep_per_label=1)
    assert [c.id for c, why in clips.enforce_retention(client, old)] == ["mic/Bark/3"]
    assert sorted(clips.read_many(client, [c.id for c in made]).values(),
                  key=lambda c: c.id)[-1].status == "ready"
    withheld = Clip("mic/Speech/9", "mic", "Speech", "withheld", "speech", "", "", 0.0, 5.0, 0,
                    now - 40 * 86400)
    clips.record(client, withheld)
    clips.enforce_retention(client, policy)  # a record without files, past the age limit
    assert clips.read(client, withheld.id) is None
    assert clips.read(client, "mic/Bark/5").status == "ready"  # the last Bark stays


def test_a_full_disk_pauses_recording_with_a_status_not_a_crash(services: Services,
                                                               clips_dir: Path,
                                                               tmp_path: Path):
    folder = tmp_path / "clips"
    path, _ = dog_scene(clips_dir, tmp_path)
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    port = "19105"
    run_pipeline(services, path, folder, SOUNDHIVE_CLIPS_MIN_FREE_MB=str(free_mb * 2),
                 SOUNDHIVE_METRICS_PORT=port)
    found = settled_clips(services.server.client(), 1)
    assert all(c.status == "skipped" and c.reason.startswith("disk full") for c in
               found.values()), found
    assert not list(folder.rglob("*.ogg"))
    recorder = services.processes[0][0]
    assert recorder.poll() is None
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "soundhive_recording_paused 1.0" in text
    assert 'soundhive_clips_total{status="skipped"} 1.0' in text
    assert "recording paused: disk full" in services.log_text(recorder)


def test_speech_below_a_full_list_of_top_labels_counts_as_heard():
    """A prediction lists the chunk's top labels only: with no speech among a full list, speech
    may have scored up to its lowest score, and counts as if it did; a short list is all."""
    speech = {"Speech", "Male speech, man speaking"}
    full = [(f"Label {n}", 0.9 - n * 0.05) for n in range(Prediction.TOP_LABELS)]
    assert speech_score(full, speech) == pytest.approx(0.45)  # hidden speech, bounded
    assert speech_score([*full[:-1], ("Male speech, man speaking", 0.3)], speech) == 0.3
    assert speech_score(full[:3], speech) == 0.0
