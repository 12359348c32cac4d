"""Credentials are bound to their server: the attacks of issue 18 against the real api and the
real notifier, with the DeviceHive stub as the operator's server and a catcher on loopback as
the attacker's. A DeviceHive configuration is one unit (the environment's or the stored one);
the dashboard may only target SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS, with credentials of its own;
readers without the api token never see what a server answered; a URL's password is never
logged nor shown."""

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis
from devicehive_stub import DeviceHiveStub
from notifier_helpers import Catcher
from pipeline_helpers import RedisServer, Services, start_api, wait_for
from test_notifier_service import WAIT_S, publish, sink_env, start_notifier

from shared import streams

TOKEN = "api-token-for-devicehive-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV_LOGIN, ENV_PASSWORD = "env-login-3c1", "env-password-77a"
GENERIC = {"failed": "refused by the server or misconfigured (the api token shows why)",
           "connecting": "unreachable (the api token shows why)"}


def start(services: Services, client: redis.Redis, stub: DeviceHiveStub,
          **env: str) -> str:
    """The notifier with the stub as the environment's DeviceHive (a refresh token, a login
    and a password), and the api with a token and the same DeviceHive environment (no
    credentials: it needs none); the api's URL."""
    start_notifier(services, client, {"devicehive"},
                   **sink_env(devicehive_url=stub.rest_url, refresh_token=stub.refresh_token,
                              SOUNDHIVE_DEVICEHIVE_LOGIN=ENV_LOGIN,
                              SOUNDHIVE_DEVICEHIVE_PASSWORD=ENV_PASSWORD, **env))
    return start_api(services, SOUNDHIVE_API_TOKEN=TOKEN,
                     SOUNDHIVE_DEVICEHIVE_URL=stub.rest_url, **env)


def env_secrets(stub: DeviceHiveStub) -> tuple[str, ...]:
    return stub.refresh_token, ENV_LOGIN, ENV_PASSWORD


def devicehive_detail(api: str, headers: dict[str, str] | None = None) -> tuple[str, str]:
    sinks = httpx.get(f"{api}/sinks", headers=headers).json()["sinks"]
    status = next(s for s in sinks if s["sink"] == "devicehive")
    return status["state"], status["detail"]


def put_config(api: str, **form: str) -> httpx.Response:
    return httpx.put(f"{api}/config/devicehive", json={"device_id": "x", **form}, headers=AUTH)


def all_logs(tmp_path: Path) -> str:
    return "".join(log.read_text() for log in tmp_path.glob("*.log"))


def test_the_form_cannot_point_the_environments_credentials_at_another_host(
        services: Services, redis_server: RedisServer, stub: DeviceHiveStub, catcher: Catcher):
    """Only the environment's host is allowed (the default); a stored URL elsewhere, even
    written straight to Redis, is refused by the notifier before it connects."""
    client = redis_server.client()
    api = start(services, client, stub)
    publish(client, "yard", "Dog", "start")
    wait_for(lambda: len(stub.notifications) == 1, WAIT_S, "the environment's configuration")

    refused = put_config(api, url=catcher.url)
    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        f"{catcher.url} is not on SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS "
        f"(127.0.0.1:{urlsplit(stub.rest_url).port})")
    assert client.exists(streams.DEVICEHIVE_CONFIG) == 0

    client.hset(streams.DEVICEHIVE_CONFIG, mapping={"url": catcher.url, "device_id": "x"})
    wait_for(lambda: "not on SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS"
             in devicehive_detail(api, AUTH)[1], WAIT_S, "the notifier's refusal")
    assert devicehive_detail(api) == ("failed", GENERIC["failed"])
    publish(client, "yard", "Dog", "end")  # held while the configuration is refused
    wait_for(lambda: client.xpending(streams.EVENTS_STREAM,
                                     streams.notifier_group("devicehive"))["pending"] == 1,
             WAIT_S, "the event held")

    client.delete(streams.DEVICEHIVE_CONFIG)  # back to the environment's configuration
    wait_for(lambda: len(stub.notifications) == 2, WAIT_S, "the held event delivered")
    assert catcher.requests == []


def test_a_new_url_needs_its_own_credentials_and_probes_learn_nothing(
        services: Services, redis_server: RedisServer, stub: DeviceHiveStub, catcher: Catcher,
        tmp_path: Path):
    """Every port of 127.0.0.1 allowed: the catcher is a host the form may target. It never
    gets the environment's credentials nor the token stored for another URL; what it answers
    reaches only holders of the api token."""
    client = redis_server.client()
    api = start(services, client, stub, SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS="127.0.0.1")

    refused = put_config(api, url=catcher.url)
    assert refused.status_code == 400 and "needs its own credentials" in refused.json()["detail"]
    client.hset(streams.DEVICEHIVE_CONFIG, mapping={"url": catcher.url, "device_id": "x"})
    wait_for(lambda: "needs stored DeviceHive REFRESH_TOKEN" in devicehive_detail(api, AUTH)[1],
             WAIT_S, "the stored URL without credentials refused")
    client.delete(streams.DEVICEHIVE_CONFIG)

    stored = put_config(api, url=stub.rest_url, device_id="form-mic",
                        refresh_token=stub.refresh_token)
    assert stored.status_code == 200 and stored.json()["refresh_token_set"]
    assert stored.json()["allowed_hosts"] == ["127.0.0.1"]
    publish(client, "porch", "Bark", "start")
    wait_for(lambda: [n.device_id for n in stub.notifications] == ["form-mic"], WAIT_S,
             "the form's configuration delivering")
    kept = put_config(api, url=stub.rest_url, device_id="form-mic", refresh_token="")
    assert kept.status_code == 200 and kept.json()["refresh_token_set"]  # same URL: kept

    assert put_config(api, url=catcher.url, refresh_token="").status_code == 400
    moved = put_config(api, url=catcher.url, access_token="attackers-own-token")
    assert moved.json() == {"url": catcher.url, "device_id": "x", "notification": "sound_event",
                            "refresh_token_set": False, "access_token_set": True,
                            "allowed_hosts": ["127.0.0.1"]}
    wait_for(lambda: Catcher.ANSWER in devicehive_detail(api, AUTH)[1], WAIT_S,
             "the catcher's answer, for the token's holder")

    assert catcher.requests
    assert {r.headers.get("Authorization") for r in catcher.requests} == {
        "Bearer attackers-own-token"}
    assert not any(secret in r.text() for r in catcher.requests for secret in env_secrets(stub))
    state, detail = devicehive_detail(api)
    assert (state, detail) == ("failed", GENERIC["failed"])
    assert Catcher.ANSWER not in httpx.get(f"{api}/sinks").text
    assert httpx.get(f"{api}/sinks", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert not any(secret in all_logs(tmp_path) for secret in env_secrets(stub))


def test_an_unreachable_host_is_only_unreachable_without_the_token(
        services: Services, redis_server: RedisServer, stub: DeviceHiveStub):
    client = redis_server.client()
    api = start(services, client, stub, SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS="127.0.0.1")
    stub.stop()  # its port refuses connections
    assert put_config(api, url=stub.rest_url, access_token="t").status_code == 200
    wait_for(lambda: "cannot reach DeviceHive" in devicehive_detail(api, AUTH)[1], WAIT_S,
             "connection refused, for the token's holder")
    assert devicehive_detail(api) == ("connecting", GENERIC["connecting"])


def test_a_url_password_is_never_logged_nor_shown(
        services: Services, redis_server: RedisServer, stub: DeviceHiveStub, catcher: Catcher,
        tmp_path: Path):
    client = redis_server.client()
    api = start(services, client, stub, SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS="127.0.0.1")
    with_password = catcher.url.replace("//", "//user:url-pw-SECRET@")
    refused = put_config(api, url=with_password, access_token="t")
    assert refused.status_code == 400 and "url-pw-SECRET" not in refused.text
    assert "may not hold a user or password" in refused.text

    client.hset(streams.DEVICEHIVE_CONFIG, mapping={"url": with_password, "device_id": "x",
                                                    "access_token": "t"})  # straight to Redis
    wait_for(lambda: catcher.requests, WAIT_S, "the notifier using the stored URL")
    wait_for(lambda: devicehive_detail(api, AUTH)[0] == "failed", WAIT_S, "its failure")
    shown = httpx.get(f"{api}/config/devicehive", headers=AUTH)
    assert shown.json()["url"] == catcher.url
    sinks = httpx.get(f"{api}/sinks", headers=AUTH).text
    logs = all_logs(tmp_path)
    assert "configuration changed (dashboard)" in logs
    assert not any("url-pw-SECRET" in text for text in (shown.text, sinks, logs))


def test_without_allowed_hosts_the_form_sets_no_url(services: Services):
    """No SOUNDHIVE_DEVICEHIVE_URL nor ALLOWED_HOSTS: the form may target nothing."""
    api = start_api(services, SOUNDHIVE_API_TOKEN=TOKEN)
    refused = put_config(api, url="https://dh.example/api/rest", refresh_token="t")
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("the dashboard may not set a DeviceHive URL: "
                                               "set SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS")
    assert httpx.get(f"{api}/config/devicehive", headers=AUTH).json()["allowed_hosts"] == []
