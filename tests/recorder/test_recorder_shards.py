"""The recorder with sharded streams (SOUNDHIVE_SHARDS=4 on one Redis): a source outside shard 0
gets its clip, recorded where clips.records_shard says, and the real api serves it."""

from pathlib import Path

import httpx
import soundfile
from pipeline_helpers import Services, read_all, start_api, wait_for
from test_recorder_pipeline import dog_scene

from shared import bus, clips, streams
from shared.messages import Clip, Event

SHARDS = 4
SOURCE = "garden"  # shard 3 of 4: its clip's record is written across shards


def test_a_sharded_source_gets_its_clip_and_the_api_serves_it(
        services: Services, clips_dir: Path, tmp_path: Path):
    shard = streams.shard_for(SOURCE, SHARDS)
    records = clips.records_shard(SHARDS)
    assert shard != records
    env = {"SOUNDHIVE_SHARDS": str(SHARDS)}
    folder = tmp_path / "clips"
    path, _ = dog_scene(clips_dir, tmp_path)
    services.start("recorder", SOUNDHIVE_CLIPS_DIR=str(folder), **env)
    services.start("features", **env)
    services.start("classifier", **env)
    client = services.server.client()
    wait_for(lambda: streams.RECORDER_GROUP in {
        g.group for g in bus.group_backlogs(client, [shard.key(streams.PCM_STREAM)])}, 60,
        "the recorder's group on the source's shard of the audio stream")
    services.start("capture", "--fast", "--source", f"{SOURCE}=file:{path}", **env)

    def settled() -> dict[str, Clip] | None:
        ends = [e for e in read_all(client, shard.key(streams.EVENTS_STREAM), Event)
                if e.kind == "end"]
        found = clips.read_many(client, [e.id for e in ends], records)
        return found if ends and len(found) == len(ends) else None

    event_id, clip = next(iter(wait_for(settled, 180, "the dog's clip record").items()))
    assert clip.status == "ready" and clip.source == SOURCE, clip
    audio, rate = soundfile.read(folder / clip.audio, dtype="float32")
    assert rate == 16000 and len(audio) / rate >= 4  # both rolls at least
    assert not client.exists(streams.CLIPS_HASH, streams.ring_key(SOURCE))  # no 1-shard keys
    assert client.exists(shard.key(streams.ring_key(SOURCE)))

    url = start_api(services, SOUNDHIVE_CLIPS_DIR=str(folder), **env)
    shown = next(e for e in httpx.get(f"{url}/events").json()["events"] if e["id"] == event_id)
    assert shown["clip_status"] == "ready"
    served = httpx.get(f"{url}{shown['clip']}")
    assert served.status_code == 200 and served.content == (folder / clip.audio).read_bytes()
    assert httpx.get(f"{url}/events/no%2Fsuch/clip").status_code == 404
