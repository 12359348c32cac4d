"""The events API over a real Redis, with events written by the real pipeline (capture ->
features -> classifier), served by the real api process."""

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from pipeline_helpers import RedisServer, Services, start_api, wait_for

from shared import streams

WAIT_S = 120
TOKEN = "test-token-4f1c"


def replay(services: Services, *paths: Path) -> None:
    capture = services.start("capture", "--fast",
                             *[arg for p in paths for arg in ("--source", f"file:{p}")])
    assert capture.wait(WAIT_S) == 0


@pytest.fixture
def pipeline(services: Services) -> Services:
    services.start("features")
    services.start("classifier")
    return services


def all_events(url: str, **params: object) -> list[dict]:
    found, cursor = [], None
    while True:
        page = httpx.get(f"{url}/events", params={**params, "cursor": cursor} if cursor
                         else params, timeout=10).json()
        found += page["events"]
        cursor = page["next"]
        if cursor is None:
            return found


def test_events_of_the_real_classifier_filtered_and_paged(pipeline: Services, clips_dir: Path):
    url = start_api(pipeline)
    replay(pipeline, clips_dir / "dog.mp3", clips_dir / "speech.wav")
    wait_for(lambda: {("dog.mp3", "Bark"), ("speech.wav", "Speech")} <= {
        (e["source"], e["label"]) for e in all_events(url) if e["end"] is not None},
        WAIT_S, "Bark and Speech events")
    events = all_events(url, limit=1)  # one sound, one event: two events, two pages
    assert len(events) == len({e["id"] for e in events}) >= 2  # pages: no repeat
    assert [e["start_time"] for e in events] == sorted((e["start_time"] for e in events),
                                                       reverse=True)
    dog = next(e for e in events if (e["source"], e["label"]) == ("dog.mp3", "Bark"))
    assert set(dog) == {"id", "source", "label", "score", "start", "end", "start_time",
                        "end_time", "model", "categories", "clip", "spectrogram",
                        "clip_status", "review"}
    assert dog["categories"] == ["Dog", "Domestic animals, pets", "Animal"]
    assert dog["model"] == "yamnet" and 0 <= dog["start"] < dog["end"] <= 7.5
    assert dog["start_time"] < dog["end_time"]
    only = all_events(url, source="dog.mp3", label="Dog", min_score=0.5)  # a category
    assert [e["id"] for e in only] == [dog["id"]]
    assert [e["id"] for e in all_events(url, label="Animal")] == [dog["id"]]
    assert all_events(url, since=dog["start_time"] + 3600) == []
    for bad in ({"limit": 0}, {"limit": 501}, {"min_score": 2}, {"cursor": "xyz"}):
        answer = httpx.get(f"{url}/events", params=bad)
        assert answer.status_code in (400, 422) and "detail" in answer.json(), bad
    sources = {s["source"]: s for s in httpx.get(f"{url}/sources").json()["sources"]}
    assert sources["dog.mp3"]["state"] == "finished" and sources["dog.mp3"]["chunks"] == 6
    assert sources["dog.mp3"]["labels"] and -60 < sources["dog.mp3"]["level"]["dbfs"] < 0
    dog_detail = httpx.get(f"{url}/sources/dog.mp3/detail").json()  # the classifier's levels
    assert len(dog_detail["levels"]) == 6 and dog_detail["events"][0]["id"] == dog["id"]
    labels = httpx.get(f"{url}/labels").json()
    assert labels["model"] == "yamnet" and len(labels["labels"]) == 521 and "Dog" in labels[
        "labels"]
    rules = httpx.get(f"{url}/config/events").json()["rules"]
    assert rules["hierarchy"] == "specific" and "Pink noise" not in rules["deny"]  # by category
    assert "Noise" in rules["deny"] and 0 < rules["default_threshold"] < 1
    assert "soundhive_api_requests_total" in httpx.get(f"{url}/metrics").text
    assert httpx.get(f"{url}/events", headers={"Accept": "text/html"}).text.lstrip().lower() \
        .startswith("<!doctype html")


class SseClient:
    """Collects (id, event, data) from /events/stream on a thread until stopped."""

    def __init__(self, url: str, last_event_id: str | None = None):
        self.messages: list[tuple[str, str, dict]] = []
        self._stop = threading.Event()
        self.connected = threading.Event()
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()
        assert self.connected.wait(20)

    def _run(self, url: str, headers: dict) -> None:
        with httpx.stream("GET", f"{url}/events/stream", headers=headers, timeout=None) as r:
            self.connected.set()
            fields: dict[str, str] = {}
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if not line:
                    if "data" in fields:
                        self.messages.append((fields["id"], fields["event"],
                                              json.loads(fields["data"])))
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.strip()

    def stop(self) -> None:
        self._stop.set()


def test_sse_resumes_with_last_event_id_without_loss_or_repeat(
        pipeline: Services, redis_server: RedisServer, clips_dir: Path):
    url = start_api(pipeline)
    first = SseClient(url)
    replay(pipeline, clips_dir / "dog.mp3")
    wait_for(lambda: any(e == "end" for _, e, _ in first.messages), WAIT_S, "live events")
    first.stop()
    seen = list(first.messages)
    replay(pipeline, clips_dir / "speech.wav", clips_dir / "cow.mp3")  # while disconnected
    client = redis_server.client()
    total = wait_for(lambda: (n := client.xlen(streams.EVENTS_STREAM)) > len(seen) + 2 and n,
                     WAIT_S, "events while disconnected")
    second = SseClient(url, last_event_id=seen[-1][0])
    wait_for(lambda: len(seen) + len(second.messages) >= total, WAIT_S, "the missed events")
    second.stop()
    ids = [i for i, _, _ in seen + second.messages]
    stream_ids = [eid.decode() for eid, _ in client.xrange(streams.EVENTS_STREAM)]
    assert ids == stream_ids  # every event once, in order
    assert {d["source"] for _, _, d in second.messages} >= {"speech.wav", "cow.mp3"}
    bad = httpx.get(f"{url}/events/stream", headers={"Last-Event-ID": "nope"})
    assert bad.status_code == 400


def test_uploads_auth_and_devicehive_settings(services: Services, clips_dir: Path,
                                              tmp_path: Path):
    url = start_api(services, SOUNDHIVE_API_TOKEN=TOKEN, SOUNDHIVE_API_MAX_UPLOAD_MB="1",
                    SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS="dh.example")
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def classify(name: str, body: bytes, field: str = "file", headers=auth) -> httpx.Response:
        return httpx.post(f"{url}/classify", files={field: (name, body)}, headers=headers,
                          timeout=60)

    dog = (clips_dir / "dog.mp3").read_bytes()
    assert classify("dog.mp3", dog, headers={}).status_code == 401
    assert classify("dog.mp3", dog, headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = classify("dog.mp3", dog)
    assert answer.status_code == 200, answer.text
    row = answer.json()
    assert row["file"] == "dog.mp3" and row["model"] == "yamnet"
    assert [label["label"] for label in row["labels"]][:3] == [
        "Animal", "Domestic animals, pets", "Dog"]
    timeline = httpx.post(f"{url}/classify?timeline=1", files={"file": ("d.mp3", dog)},
                          headers=auth, timeout=60).json()["timeline"]
    assert timeline[1]["time_s"] == 0.48
    soundfile.write(tmp_path / "ok.wav", np.zeros(32000, np.float32), 16000)
    wav = (tmp_path / "ok.wav").read_bytes()
    bad_uploads = {
        "empty": ("e.wav", b""),
        "garbage": ("g.mp3", b"\x00\x01 not audio" * 100),
        "truncated": ("t.wav", wav[: len(wav) // 2]),
        "huge": ("h.wav", b"\x00" * (2 * 2**20)),
    }
    for what, (name, body) in bad_uploads.items():
        answer = classify(name, body)
        assert answer.status_code in (400, 413), (what, answer.status_code)
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and str(tmp_path) not in detail
    assert classify("ok.wav", wav, field="upload").status_code == 422  # wrong field name
    two = httpx.post(f"{url}/classify", files=[("file", ("a.wav", wav)), ("file", ("b.mp3", dog))],
                     headers=auth, timeout=60)  # only one would be classified
    assert two.status_code == 400
    assert two.json()["detail"] == "the form holds 2 `file` parts: send one file per request"

    form = {"url": "https://dh.example/api/rest", "device_id": "hall-1",
            "notification": "sound_event", "refresh_token": "rt-secret"}
    assert httpx.put(f"{url}/config/devicehive", json=form).status_code == 401
    stored = httpx.put(f"{url}/config/devicehive", json=form, headers=auth).json()
    assert stored == {"url": form["url"], "device_id": "hall-1", "notification": "sound_event",
                      "refresh_token_set": True, "access_token_set": False,
                      "allowed_hosts": ["dh.example"]}
    again = httpx.put(f"{url}/config/devicehive", json={**form, "refresh_token": ""},
                      headers=auth).json()
    assert again["refresh_token_set"]  # an empty token field keeps the stored one
    shown = httpx.get(f"{url}/config/devicehive", headers=auth)
    assert "rt-secret" not in shown.text
    for bad, code in (({**form, "device_id": "hall 1"}, 422), ({**form, "url": "ftp://x"}, 400),
                      ({**form, "url": "https://elsewhere.example/api/rest"}, 400)):
        assert httpx.put(f"{url}/config/devicehive", json=bad, headers=auth).status_code == code
    unfinished = {key: value for key, value in form.items() if key != "device_id"}
    refused = httpx.put(f"{url}/config/devicehive", json=unfinished, headers=auth)
    detail = refused.json()["detail"]  # one line naming the field, the input not echoed
    assert refused.status_code == 422 and detail == "device_id: Field required", detail
    assert "rt-secret" not in refused.text
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert TOKEN not in logs and "rt-secret" not in logs


def test_read_auth_protects_reads_but_not_health_nor_pages(services: Services):
    url = start_api(services, SOUNDHIVE_API_TOKEN=TOKEN, SOUNDHIVE_API_READ_AUTH="1")
    assert httpx.get(f"{url}/events").status_code == 401
    answer = httpx.get(f"{url}/events", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.headers["vary"] == "Accept"
    assert answer.headers["cache-control"] == "no-store"
    assert httpx.get(f"{url}/events", headers={"Accept": "text/html"}).status_code == 200
    assert httpx.get(f"{url}/").status_code == 200 and httpx.get(f"{url}/healthz").is_success
    assert httpx.get(f"{url}/events/stream").status_code == 401
    assert httpx.get(f"{url}/events/stream", params={"token": "wrong"}).status_code == 401
    with httpx.stream("GET", f"{url}/events/stream", params={"token": TOKEN}) as stream:
        assert stream.status_code == 200
