"""The api's clips, spectrograms, CSV and reviews, over clips the real recorder wrote from the
real pipeline, served by the real api process."""

import csv
import io
from pathlib import Path

import httpx
from pipeline_helpers import Services, dog_scene, start_api
from test_recorder_pipeline import run_pipeline, settled_clips

from shared import clips, streams

TOKEN = "clips-token-8e2a"


def test_clip_range_requests_spectrogram_csv_and_reviews(services: Services, clips_dir: Path,
                                                         tmp_path: Path):
    folder = tmp_path / "clips"
    path, _ = dog_scene(clips_dir, tmp_path)
    run_pipeline(services, path, folder)
    url = start_api(services, SOUNDHIVE_CLIPS_DIR=str(folder), SOUNDHIVE_API_TOKEN=TOKEN,
                    SOUNDHIVE_API_READ_AUTH="true")
    client = services.server.client()
    event_id, clip = next(iter(settled_clips(client, 1).items()))
    auth = {"Authorization": f"Bearer {TOKEN}"}

    page = httpx.get(f"{url}/events", headers=auth).json()["events"]
    shown = next(e for e in page if e["id"] == event_id)
    assert shown["clip_status"] == "ready" and shown["review"] is None
    assert shown["clip"] == clips.clip_urls(event_id)["clip"]
    whole = httpx.get(f"{url}{shown['clip']}", headers=auth)
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/ogg"
    assert whole.content == (folder / clip.audio).read_bytes()
    assert whole.headers["accept-ranges"] == "bytes"
    part = httpx.get(f"{url}{shown['clip']}", headers={**auth, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    assert httpx.get(f"{url}{shown['clip']}").status_code == 401  # reads need the token here
    by_query = httpx.get(f"{url}{shown['spectrogram']}", params={"token": TOKEN})
    assert by_query.status_code == 200 and by_query.headers["content-type"] == "image/png"

    unknown = httpx.get(f"{url}/events/no%2Fsuch%2Fevent/clip", headers=auth)
    assert unknown.status_code == 404 and "no event" in unknown.json()["detail"]

    table = httpx.get(f"{url}/events.csv", params={"text": "DOMESTIC"}, headers=auth)
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert table.headers["content-type"].startswith("text/csv")
    assert [row["id"] for row in rows] == [event_id] and rows[0]["clip_status"] == "ready"
    assert list(csv.DictReader(io.StringIO(httpx.get(
        f"{url}/events.csv", params={"text": "meow"}, headers=auth).text))) == []

    review = f"{url}/events/{event_id.replace('/', '%2F')}/review"
    assert httpx.post(review, json={"verdict": "wrong"}).status_code == 401
    assert httpx.post(review, json={"verdict": "maybe"}, headers=auth).status_code == 422
    assert httpx.post(f"{url}/events/nope/review", json={"verdict": "wrong"},
                      headers=auth).status_code == 404
    done = httpx.post(review, json={"verdict": "wrong"}, headers=auth)
    assert done.status_code == 200 and done.json()["verdict"] == "wrong"
    label = done.json()["label"]
    assert httpx.get(f"{url}/reviews", headers=auth).json() == {"correct": {},
                                                                "wrong": {label: 1}}
    httpx.post(review, json={"verdict": "correct"}, headers=auth)  # a change of mind
    assert httpx.get(f"{url}/reviews", headers=auth).json() == {"correct": {label: 1},
                                                                "wrong": {}}
    assert httpx.get(f"{url}/events", headers=auth).json()["events"][0]["review"] == "correct"

    (folder / clip.audio).unlink()  # gone from the disk behind soundhive's back
    gone = httpx.get(f"{url}{shown['clip']}", headers=auth)
    assert gone.status_code == 410 and "no longer on the disk" in gone.json()["detail"]
    withheld = clips.Clip(event_id, clip.source, clip.label, "withheld", "speech", "", "",
                          0.0, 0.0, 0, 0.0)
    client.hset(streams.CLIPS_HASH, event_id, withheld.encode())
    answer = httpx.get(f"{url}{shown['clip']}", headers=auth)
    assert answer.status_code == 410 and answer.json()["detail"] == "clip withheld (speech)"
