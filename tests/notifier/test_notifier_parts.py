"""The notifier's parts without a service process: the gate, the webhook signature, the
configuration errors, and the DeviceHive client against the stub (REST and WebSocket)."""

import hashlib
import hmac
import json
import re
import time

import httpx
import pytest
from devicehive_stub import MESSAGES, DeviceHiveStub
from websockets.sync.client import connect as ws_connect

from services.notifier import devicehive, mqtt, webhook
from services.notifier.delivery import Gate, SinkDown
from services.notifier.settings import (
    DeviceHiveSettings,
    Filter,
    NotifierSettings,
    WebhookSettings,
)
from shared.config import ConfigError
from shared.devicehive import DeviceHiveTarget
from shared.messages import Event


def event(kind: str = "start", label: str = "Dog", score: float = 0.8, source: str = "yard",
          start_time: float = 1_700_000_000.0, ident: str = "yard/Dog/1") -> Event:
    ended = kind == "end"
    return Event(ident, source, label, kind, score, 1.0, 3.5 if ended else None, start_time,
                 start_time + 2.5 if ended else None, "yamnet")


def test_gate_filters_starts_and_their_ends_follow():
    gate = Gate(Filter(labels=frozenset({"dog"}), min_score=0.5, rate_per_min=2))
    assert gate.decide(event(label="Cat", ident="c"), 0) == "filtered"
    assert gate.decide(event("end", label="Cat", ident="c"), 1) == "filtered"
    assert gate.decide(event(score=0.4, ident="low"), 0) == "filtered"
    assert gate.decide(event("end", score=0.9, ident="low"), 1) == "filtered"  # as its start
    assert gate.decide(event(ident="a"), 0) is None
    assert gate.decide(event(ident="b"), 1) is None
    assert gate.decide(event(ident="c2"), 2) == "rate_limited"
    assert gate.decide(event("end", ident="c2"), 3) == "rate_limited"
    assert gate.decide(event("end", ident="a"), 4) is None  # a sink told of a start hears its end
    assert gate.decide(event(ident="d"), 61) is None  # the minute has passed
    assert gate.decide(event("end", score=0.9, ident="unseen"), 62) is None


def test_gate_kinds():
    gate = Gate(Filter(kinds=frozenset({"end"})))
    assert gate.decide(event(ident="x"), 0) == "filtered"
    assert gate.decide(event("end", ident="x"), 1) is None


def test_webhook_body_is_signed_with_its_timestamp():
    body = webhook.body_of(event("end"), 123.5)
    fields = json.loads(body)
    assert fields["event_id"] == "yard/Dog/1" and fields["sent_at"] == 123.5
    assert fields["kind"] == "end" and fields["end"] == 3.5
    expected = hmac.new(b"s", body, hashlib.sha256).hexdigest()
    assert webhook.sign("s", body) == f"sha256={expected}"


@pytest.mark.parametrize(("env", "message"), [
    ({"SOUNDHIVE_DEVICEHIVE_URL": "http://h/api/rest", "SOUNDHIVE_DEVICEHIVE_DEVICE_ID": "a_b",
      "SOUNDHIVE_DEVICEHIVE_REFRESH_TOKEN": "t"}, "may only hold letters, digits and dashes"),
    ({"SOUNDHIVE_DEVICEHIVE_URL": "ftp://h/x", "SOUNDHIVE_DEVICEHIVE_REFRESH_TOKEN": "t"},
     "URL must be http(s)://host/api/rest or ws(s)://host/api/websocket"),
    ({"SOUNDHIVE_DEVICEHIVE_URL": "http://h/api/rest"}, "needs SOUNDHIVE_DEVICEHIVE_REFRESH"),
])
def test_devicehive_config_errors_are_one_line(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="SOUNDHIVE_DEVICEHIVE_") as error:
        NotifierSettings()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_webhook_needs_a_secret_and_secrets_come_from_files(monkeypatch, tmp_path):
    monkeypatch.setenv("SOUNDHIVE_WEBHOOK_URLS", "http://127.0.0.1:9/hook")
    with pytest.raises(ConfigError, match="needs SOUNDHIVE_WEBHOOK_SECRET"):
        webhook.WebhookSink.from_settings(WebhookSettings())
    (tmp_path / "secret").write_text("from-a-file\n")
    monkeypatch.setenv("SOUNDHIVE_WEBHOOK_SECRET_FILE", str(tmp_path / "secret"))
    [sink] = webhook.WebhookSink.from_settings(WebhookSettings())
    assert sink.name == "webhook" and sink._secret == "from-a-file"


def test_secrets_stay_out_of_the_config_repr():
    config = DeviceHiveSettings(url="http://me:U-SECRET@h/api/rest", device_id="dev",
                                notification="n", refresh_token="R-SECRET",
                                access_token="A-SECRET", login="me", password="P-SECRET")
    shown = repr(config) + str(config.public())
    assert not any(secret in shown for secret in ("R-SECRET", "A-SECRET", "P-SECRET",
                                                  "U-SECRET"))
    assert config.public()["url"] == "http://h/api/rest"


def test_a_stored_url_never_gets_the_environments_credentials():
    env = DeviceHiveSettings(url="http://dh.example/api/rest", device_id="env-dev",
                             notification="env-name", refresh_token="ENV-R",
                             access_token="ENV-A", login="env-user", password="ENV-P")
    assert env.in_force({}) is env and env.in_force({b"url": b" "}) is env
    stored = env.in_force({b"url": b"http://other/api/rest", b"device_id": b"x"})
    assert (stored.url, stored.device_id, stored.notification) == (
        "http://other/api/rest", "x", "sound_event")
    assert (stored.refresh_token, stored.access_token, stored.login, stored.password) == \
        ("", "", "", "")
    with pytest.raises(ConfigError, match="needs stored DeviceHive REFRESH_TOKEN"):
        stored.check("stored DeviceHive ")
    with_token = env.in_force({b"url": b"http://dh.example/api/rest", b"access_token": b"T"})
    assert (with_token.access_token, with_token.refresh_token) == ("T", "")
    assert with_token.device_id.startswith("soundhive-")  # the default, not the environment's


@pytest.mark.parametrize(("target", "url", "allowed"), [
    (DeviceHiveTarget(url="http://dh.example/api/rest"), "wss://DH.example/api/websocket", True),
    (DeviceHiveTarget(url="http://dh.example/api/rest"), "http://dh.example.evil/api/rest",
     False),
    (DeviceHiveTarget(url="http://dh.example:8080/api/rest"), "http://dh.example/api/rest",
     False),
    (DeviceHiveTarget(url="http://dh.example:8080/x"), "ws://dh.example:8080/y", True),
    (DeviceHiveTarget(), "http://dh.example/api/rest", False),
    (DeviceHiveTarget(allowed_hosts=("a.example:443", "10.0.0.7")), "https://a.example/x", True),
    (DeviceHiveTarget(allowed_hosts=("a.example:443",)), "http://a.example/x", False),
    (DeviceHiveTarget(allowed_hosts=("10.0.0.7",)), "http://10.0.0.7:22/x", True),
    (DeviceHiveTarget(allowed_hosts=("[::1]:80",)), "http://[::1]/x", True),
    (DeviceHiveTarget(allowed_hosts=("a.example",)), "http://a.example:99999/x", False),
    (DeviceHiveTarget(allowed_hosts=("a.example",)), "ftp://a.example/x", False),
])
def test_allowed_hosts(target: DeviceHiveTarget, url: str, allowed: bool):
    assert target.allows(url) is allowed


def test_allowed_hosts_errors_are_one_line(monkeypatch):
    assert "set SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS" in DeviceHiveTarget().refusal("http://x/")
    monkeypatch.setenv("SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS", "a.example,http://b/x")
    with pytest.raises(ConfigError, match="SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS: each entry is "
                                          "host or host:port"):
        NotifierSettings()


def test_notification_shape():
    body = devicehive.notification(event("end", start_time=1_700_000_000.25), "sound_event")
    assert body["notification"] == "sound_event"
    assert body["timestamp"] == "2023-11-14T22:13:22.750"  # the end time, UTC, milliseconds
    assert set(body["parameters"]) == {"event_id", "source", "label", "kind", "score", "start",
                                       "end", "start_time", "end_time", "model", "categories"}


def test_stub_refuses_like_the_real_server(stub: DeviceHiveStub):
    rest = stub.rest_url
    assert httpx.put(f"{rest}/device/dev-1", json={}).status_code == 401
    token = httpx.post(f"{rest}/token/refresh",
                       json={"refreshToken": stub.refresh_token}).json()["accessToken"]
    auth = {"Authorization": f"Bearer {token}"}
    bad = httpx.put(f"{rest}/device/bad_id", json={}, headers=auth)
    assert (bad.status_code, bad.json()["message"]) == (400, MESSAGES["bad_id"])
    assert httpx.put(f"{rest}/device/dev-1", json={}, headers=auth).status_code == 204
    reserved = httpx.post(f"{rest}/device/dev-1/notification", headers=auth,
                          json={"notification": "$device-add"})
    assert reserved.status_code == 403
    missing = httpx.post(f"{rest}/device/nobody/notification", headers=auth,
                         json={"notification": "n"})
    assert missing.status_code == 404
    with ws_connect(stub.ws_url) as ws:
        ws.send(json.dumps({"action": "device/save", "requestId": "1", "deviceId": "x"}))
        answer = json.loads(ws.recv(5))
        assert answer.items() >= {"status": "error", "code": 401, "requestId": "1"}.items()
        ws.send(json.dumps({"action": "authenticate", "requestId": "2", "token": token}))
        assert json.loads(ws.recv(5))["status"] == "success"
        ws.send(json.dumps({"action": "device/save", "requestId": "3", "deviceId": "a b"}))
        assert json.loads(ws.recv(5))["code"] == 400


@pytest.mark.parametrize("transport", ["rest", "websocket"])
def test_session_refreshes_expired_tokens_and_registers_again(stub: DeviceHiveStub,
                                                               transport: str):
    # Long enough that a loaded machine does not see the token expire again before the end
    stub.access_ttl_s = 1.5
    url = stub.rest_url if transport == "rest" else stub.ws_url
    session = open_session(url, refresh=stub.refresh_token)
    session.open()
    assert "soundhive-test" in stub.devices
    session.insert(event(), {})
    time.sleep(1.6)  # the access token expires: 401, refresh, retry
    session.insert(event("end"), {})
    del stub.devices["soundhive-test"]  # 404: registered again
    session.insert(event(ident="again"), {})
    session.close()
    bodies = [n.body for n in stub.notifications]
    assert [b["parameters"]["kind"] for b in bodies] == ["start", "end", "start"]
    assert {n.transport for n in stub.notifications} == {transport}
    assert stub.refreshes == 2


def test_session_logs_in_with_a_password(stub: DeviceHiveStub):
    session = open_session(stub.rest_url, login=stub.login, password=stub.password)
    session.open()
    session.insert(event(), {})
    assert len(stub.notifications) == 1


def test_refused_credentials_and_reserved_names_hold_the_sink(stub: DeviceHiveStub):
    with pytest.raises(SinkDown, match="refused the credentials"):
        open_session(stub.rest_url, refresh="wrong").open()
    with pytest.raises(SinkDown, match=r"refused device 'bad_id': 400 Device Id can only"):
        open_session(stub.rest_url, refresh=stub.refresh_token, device_id="bad_id").open()


def open_session(url: str, refresh: str = "", login: str = "", password: str = "",
                 device_id: str = "soundhive-test") -> devicehive.Session:
    # model_construct: unchecked, so that the server is the one to refuse a bad device id
    return devicehive.Session(DeviceHiveSettings.model_construct(
        url=url, device_id=device_id, refresh_token=refresh, login=login, password=password))


def test_home_assistant_ids_belong_to_the_instance_and_keep_names_apart():
    assert mqtt.slug("dog.mp3") == "dog_mp3"
    assert mqtt.slug("Inside, large room or hall") == "inside_large_room_or_hall"
    kitchen, bathroom = mqtt.slug("厨房"), mqtt.slug("Ванная")
    assert kitchen != bathroom and re.fullmatch("[a-z0-9_]+", kitchen + bathroom)
    assert mqtt.slug("Café").startswith("cafe_") and mqtt.slug("Café") != mqtt.slug("Cafe")
    home, cottage = mqtt.Topics("soundhive", ""), mqtt.Topics("cottage", "")
    assert home.instance == "soundhive" and mqtt.Topics("soundhive", "Attic").instance == "attic"
    (home_topic, home_config), (cottage_topic, cottage_config) = (
        mqtt.sound_config(home, "yard", "Dog"), mqtt.sound_config(cottage, "yard", "Dog"))
    assert home_topic == "homeassistant/binary_sensor/soundhive_yard/dog/config"
    assert cottage_topic == "homeassistant/binary_sensor/cottage_yard/dog/config"
    assert home_config["unique_id"] != cottage_config["unique_id"]
    assert home_config["device"]["identifiers"] != cottage_config["device"]["identifiers"]
    assert mqtt.level_config(home, "yard")[1]["expire_after"] > mqtt.LEVEL_INTERVAL_S
