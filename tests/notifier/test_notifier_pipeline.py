"""A real dog clip replayed through the real pipeline (capture --fast -> features ->
classifier -> notifier, and the recorder) reaches DeviceHive (the stub), Mosquitto and a webhook
receiver, its end with the URLs of the clip the recorder writes."""

import re
import urllib.request
from pathlib import Path

from devicehive_stub import DeviceHiveStub
from notifier_helpers import Mosquitto, MqttCollector, WebhookReceiver, retained
from pipeline_helpers import RedisServer, Services, wait_for
from test_notifier_service import sink_env, start_notifier

from shared import clips

WAIT_S = 60  # the models load in each process
PUBLIC_URL = "https://soundhive.example"


def test_a_dog_clip_reaches_every_sink(services: Services, redis_server: RedisServer,
                                       clips_dir: Path, mosquitto: Mosquitto,
                                       mqtt_collector: MqttCollector, webhook: WebhookReceiver,
                                       stub: DeviceHiveStub, tmp_path: Path):
    client = redis_server.client()
    services.start("recorder", SOUNDHIVE_CLIPS_DIR=str(tmp_path / "clips"))
    wait_for(lambda: clips.recorder_running(client), WAIT_S, "the recorder")
    notifier = start_notifier(services, client, {"devicehive", "mqtt", "webhook"},
                              **sink_env(mosquitto, webhook, stub.ws_url, stub.refresh_token,
                                         SOUNDHIVE_WEBHOOK_LABELS="dog",
                                         SOUNDHIVE_PUBLIC_URL=PUBLIC_URL))
    services.start("features")
    services.start("classifier")
    capture = services.start("capture", "--fast", "--source", f"file:{clips_dir / 'dog.mp3'}")

    def dog(bodies: list[dict]) -> list[str]:
        return [b["kind"] for b in bodies if (b["source"], b["label"]) == ("dog.mp3", "Bark")]

    wait_for(lambda: dog([n.body["parameters"] for n in stub.notifications]) == ["start", "end"]
             and dog([r.body for r in webhook.received]) == ["start", "end"]
             and dog(mqtt_collector.events()) == ["start", "end"], WAIT_S,
             "the Bark start and end at every sink")
    assert capture.wait(WAIT_S) == 0
    assert mqtt_collector.payloads("soundhive/dog_mp3/bark") == [b"ON", b"OFF"]
    assert retained(mosquitto.port, "soundhive/dog_mp3/bark") == b"OFF"
    assert retained(mosquitto.port, "homeassistant/binary_sensor/soundhive_dog_mp3/bark/config")
    assert mqtt_collector.payloads("soundhive/dog_mp3/dog") == []  # no entity per ancestor
    # the sink's filter names a category ("dog", any case): the bark passes, nothing else
    assert {(r.body["label"], "Dog" in r.body["categories"]) for r in webhook.received} == {
        ("Bark", True)}
    parameters = stub.notifications[0].body["parameters"]
    assert parameters["categories"] == ["Dog", "Domestic animals, pets", "Animal"]
    assert webhook.bad_signatures == 0
    end = webhook.received[-1].body
    links = clips.clip_urls(end["event_id"], PUBLIC_URL)
    assert links["clip"].startswith(f"{PUBLIC_URL}/events/dog.mp3%2FBark%2F")
    ends = [b for b in [*mqtt_collector.events(), *(n.body["parameters"]
                                                    for n in stub.notifications), end]
            if (b["event_id"], b["kind"]) == (end["event_id"], "end")]
    assert len(ends) == 3 and all((b["clip"], b["spectrogram"]) == (
        links["clip"], links["spectrogram"]) for b in ends), ends
    assert "clip" not in webhook.received[0].body  # a start: no clip yet
    wait_for(lambda: clips.read(client, end["event_id"]), WAIT_S, "the clip")
    assert clips.read(client, end["event_id"]).status == "ready"

    port = re.search(r"metrics on :(\d+)", services.log_text(notifier)).group(1)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    for sink in ("devicehive", "mqtt", "webhook"):
        count = _sample(text, "soundhive_delivery_latency_seconds_count", sink)
        total = _sample(text, "soundhive_delivery_latency_seconds_sum", sink)
        assert count >= 2
        print(f"{sink}: {count:.0f} deliveries, mean latency {1000 * total / count:.1f} ms")


def _sample(text: str, name: str, sink: str) -> float:
    return float(re.search(rf'^{name}{{sink="{sink}"}} (\S+)$', text, re.M).group(1))
