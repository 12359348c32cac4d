"""Secure by default, against the real api process: writes need the token (403 while none is
set, 401 with a wrong one), wrong tokens lock their address out (429), one warning when the
api answers reads without a token on a non-loopback address; `soundhive up` makes a token per
session and prints the dashboard's URL with it; a web page of another origin can neither write
nor lock the dashboard out."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from pipeline_helpers import REPO, Services, api_ready, start_api, wait_for
from prometheus_client.parser import text_string_to_metric_families

from services.api.lockout import FAILURES_ALLOWED

TOKEN = "auth-test-token"
FORM = {"url": "https://dh.example/api/rest", "device_id": "hall-1", "refresh_token": "r"}
DEVICEHIVE = {"SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS": "dh.example"}


def writes(url: str, headers: dict[str, str]) -> list[int]:
    """The status of each kind of write: the DeviceHive form (read and stored), an upload."""
    return [httpx.get(f"{url}/config/devicehive", headers=headers).status_code,
            httpx.put(f"{url}/config/devicehive", json=FORM, headers=headers).status_code,
            httpx.post(f"{url}/classify", files={"file": ("a.wav", b"RIFF")},
                       headers=headers).status_code]


def test_without_a_token_every_write_is_refused_and_exposure_is_warned(services: Services):
    url = start_api(services, SOUNDHIVE_API_HOST="0.0.0.0")
    assert writes(url, {}) == [403] * 3
    assert writes(url, {"Authorization": "Bearer anything"}) == [403] * 3
    detail = httpx.put(f"{url}/config/devicehive", json=FORM).json()["detail"]
    assert "\n" not in detail and "set SOUNDHIVE_API_TOKEN" in detail
    assert httpx.get(f"{url}/events").status_code == 200  # reads stay open...
    api_log = services.log_text(services.processes[-1][0])
    warnings = [line for line in api_log.splitlines() if "readable by anyone" in line]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0]  # ...and the log says so, once

    loopback = start_api(services, SOUNDHIVE_API_READ_AUTH="1")
    assert httpx.get(f"{loopback}/events").status_code == 403  # read auth and no token
    assert "readable" not in services.log_text(services.processes[-1][0])


def test_wrong_tokens_lock_their_address_out(services: Services):
    url = start_api(services, SOUNDHIVE_API_TOKEN=TOKEN, **DEVICEHIVE)
    good, wrong = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer guess"}
    assert writes(url, good)[:2] == [200, 200]  # the upload is no audio: 400 past the token
    assert writes(url, {}) == [401] * 3  # no token sent: not an attempt
    for _ in range(FAILURES_ALLOWED.amount):
        assert httpx.put(f"{url}/config/devicehive", json=FORM, headers=wrong).status_code == 401
    locked = httpx.put(f"{url}/config/devicehive", json=FORM, headers=good)
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= FAILURES_ALLOWED.get_expiry()
    assert httpx.get(f"{url}/events/stream", params={"token": TOKEN}).status_code == 429
    assert httpx.get(f"{url}/events").status_code == 200  # no token: reads still served
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    assert other.put(f"{url}/config/devicehive", json=FORM, headers=good).status_code == 200
    counted = {sample.labels["outcome"]: sample.value
               for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
               if family.name == "soundhive_api_token_failures" for sample in family.samples
               if sample.name.endswith("_total")}
    assert counted == {"refused": FAILURES_ALLOWED.amount, "locked_out": 2}


def test_up_prints_a_dashboard_url_whose_token_its_api_takes(clips_dir: Path, tmp_path: Path):
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("SOUNDHIVE_API_TOKEN")} | DEVICEHIVE
    up = subprocess.Popen(
        [sys.executable, "-m", "soundhive", "up", "--source", f"file:{clips_dir / 'dog.mp3'}",
         "--metrics-port-base", "0", "--api-port", "0", "--log-dir", str(tmp_path)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert up.stderr is not None
        found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=([\w-]{40,})", up.stderr.readline())
        assert found, "no dashboard URL with a token"
        url, token = found.groups()
        wait_for(lambda: api_ready(url), 120, "up's api")
        assert httpx.put(f"{url}/config/devicehive", json=FORM).status_code == 401
        assert httpx.put(f"{url}/config/devicehive", json=FORM,
                         headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    assert not [log for log in tmp_path.glob("*.log") if token in log.read_text()]



def test_a_page_of_another_origin_can_neither_write_nor_lock_the_owner_out(services: Services):
    url = start_api(services, SOUNDHIVE_API_TOKEN=TOKEN, **DEVICEHIVE)
    foreign = {"Origin": "http://evil.example"}
    for _ in range(FAILURES_ALLOWED.amount + 5):  # what a form on an open page can send
        answer = httpx.post(f"{url}/classify", params={"token": "guess"},
                            files={"file": ("a.wav", b"RIFF")}, headers=foreign)
        assert answer.status_code == 403
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.put(f"{url}/config/devicehive", json=FORM, headers=foreign | good
                     ).status_code == 403  # even with the token: a page cannot write
    same = {"Origin": url}  # the dashboard's own requests
    assert httpx.put(f"{url}/config/devicehive", json=FORM, headers=same | good
                     ).status_code == 200


def test_a_page_whose_name_resolves_to_the_api_is_refused_and_forwarded_addresses_are_not_trusted(
        services: Services):
    """DNS rebinding: a page of evil.example whose name is made to resolve to 127.0.0.1 sends
    Host and Origin evil.example; a loopback api answers only loopback names. Wrong tokens with
    a new X-Forwarded-For each still count against the connection's address."""
    url = start_api(services, SOUNDHIVE_API_TOKEN=TOKEN)
    rebound = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    answer = httpx.get(f"{url}/events", headers=rebound)
    assert answer.status_code == 400 and "SOUNDHIVE_API_ALLOWED_HOSTS" in answer.json()["detail"]
    assert httpx.get(f"{url}/events", headers={"Host": "localhost"}).status_code == 200
    statuses = [httpx.put(f"{url}/config/devicehive", json=FORM, headers={
        "Authorization": f"Bearer wrong{n}", "X-Forwarded-For": f"10.0.0.{n}"}).status_code
        for n in range(FAILURES_ALLOWED.amount + 2)]
    assert statuses[-1] == 429, statuses


def test_allowed_hosts_names_the_hosts_a_proxied_api_answers(services: Services):
    url = start_api(services, SOUNDHIVE_API_ALLOWED_HOSTS="sound.example")
    assert httpx.get(f"{url}/events", headers={"Host": "sound.example"}).status_code == 200
    assert httpx.get(f"{url}/events").status_code == 400  # 127.0.0.1 is no longer listed
