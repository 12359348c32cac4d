"""The recorder in the real pipeline: capture -> features -> classifier -> recorder, real Redis,
real files."""

import re
import time
from pathlib import Path

import httpx
import numpy as np
import redis
import soundfile
from pipeline_helpers import Services, dog_scene, free_port, read_all, start_api, wait_for

from shared import bus, clips, streams
from shared.messages import CHUNK_HOP_SECONDS, Clip, Event


def run_pipeline(services: Services, source: Path, clips_folder: Path, **recorder_env: str):
    """The recorder, features and classifier, then capture once the recorder reads the audio
    stream (its group: before, the features' acknowledgements trim what it never saw)."""
    services.start("recorder", SOUNDHIVE_CLIPS_DIR=str(clips_folder), **recorder_env)
    services.start("features")
    services.start("classifier")
    client = services.server.client()
    wait_for(lambda: streams.RECORDER_GROUP in {
        g.group for g in bus.group_backlogs(client, [streams.PCM_STREAM])}, 60,
        "the recorder's group on the audio stream")
    services.start("capture", "--fast", "--source", f"file:{source}")


def settled_clips(client: redis.Redis, count: int) -> dict[str, Clip]:
    """The clip records once `count` events have ended and each has one."""
    def done() -> dict[str, Clip] | None:
        ends = [e for e in read_all(client, streams.EVENTS_STREAM, Event) if e.kind == "end"]
        found = clips.read_many(client, [e.id for e in ends])
        return found if len(ends) >= count and len(found) == len(ends) else None
    return wait_for(done, 180, "a clip record for every event")


def test_a_dog_gives_a_clip_of_the_event_with_its_rolls(services: Services, clips_dir: Path,
                                                       tmp_path: Path):
    folder = tmp_path / "clips"
    path, scene = dog_scene(clips_dir, tmp_path)
    run_pipeline(services, path, folder)
    client = services.server.client()
    found = settled_clips(client, 1)
    events = {e.id: e for e in read_all(client, streams.EVENTS_STREAM, Event) if e.kind == "end"}
    assert found and all(clip.status == "ready" for clip in found.values()), found
    for event_id, clip in found.items():
        event = events[event_id]
        audio, rate = soundfile.read(folder / clip.audio, dtype="float32")
        assert rate == 16000
        assert abs(len(audio) / rate - (event.end - event.start + 4)) <= CHUNK_HOP_SECONDS, \
            (len(audio) / rate, event)
        assert clip.start == event.start - 2
        at = round(clip.start * 16000)
        heard = scene[at:at + len(audio)]
        correlation = np.dot(heard, audio) / np.linalg.norm(heard) / np.linalg.norm(audio)
        assert correlation > 0.9, correlation
        print(f"{event.label}: event {event.end - event.start:.2f} s, clip "
              f"{len(audio) / rate:.2f} s, correlation {correlation:.3f}")
        assert (folder / clip.spectrogram).read_bytes().startswith(b"\x89PNG")
    assert clips.read(client, "no/such/event") is None


def test_history_older_than_the_ring_is_recorded_as_dropped_without_a_clip(
        services: Services, tmp_path: Path):
    """A recorder started after events happened: their audio is gone, and they say so."""
    client = services.server.client()
    now = time.time()
    old = Event("mic/Bark/1", "mic", "Bark", "end", 0.9, 10.0, 13.0, now - 600, now - 597,
                "yamnet")
    bus.publish(client, streams.EVENTS_STREAM, old, 1000)
    services.start("recorder", SOUNDHIVE_CLIPS_DIR=str(tmp_path / "clips"))
    clip = wait_for(lambda: clips.read(client, old.id), 60, "the old event's record")
    assert clip.status == "dropped" and "older than the ring" in clip.reason
    assert not list((tmp_path / "clips").rglob("*.*"))


def test_two_recorders_write_each_clip_once(services: Services, clips_dir: Path,
                                            tmp_path: Path):
    folder = tmp_path / "clips"
    path, _ = dog_scene(clips_dir, tmp_path)
    ports = [str(free_port()), str(free_port())]
    services.start("recorder", SOUNDHIVE_CLIPS_DIR=str(folder), SOUNDHIVE_METRICS_PORT=ports[0])
    run_pipeline(services, path, folder, SOUNDHIVE_METRICS_PORT=ports[1])
    found = settled_clips(services.server.client(), 1)
    assert all(clip.status == "ready" for clip in found.values())
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == sorted(name for c in found.values() for name in (c.audio, c.spectrogram))
    written = sum(float(re.search(r'^soundhive_clips_total\{status="ready"\} (\S+)$',
                                  httpx.get(f"http://127.0.0.1:{port}/metrics").text,
                                  re.M)[1]) for port in ports)
    assert written == len(found)


def recorded_dog(services: Services, clips_dir: Path, tmp_path: Path, token: str
                 ) -> tuple[str, Path, str, Clip]:
    """A dog scene recorded through the real pipeline, and an api with read auth serving its
    clips: (the api's URL, the clips folder, the event's id, its clip)."""
    folder = tmp_path / "clips"
    path, _ = dog_scene(clips_dir, tmp_path)
    run_pipeline(services, path, folder)
    url = start_api(services, SOUNDHIVE_CLIPS_DIR=str(folder), SOUNDHIVE_API_TOKEN=token,
                    SOUNDHIVE_API_READ_AUTH="true")
    event_id, clip = next(iter(settled_clips(services.server.client(), 1).items()))
    return url, folder, event_id, clip
