"""The dashboard and the event history in a real headless Chromium (Debian's, driven by
playwright) against a running pipeline replaying real clips, with the real notifier and api.

Screenshots (phone width and a 1080p wall screen) go to $SOUNDHIVE_SCREENSHOTS or tmp_path."""

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from pipeline_helpers import RedisServer, Services, free_port, start_api
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from shared import bus, detections, streams
from shared.messages import Event

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
API_TOKEN = "browser-test-api-token"
DEVICEHIVE_TOKEN = "browser-test-refresh-token"
CLIPS = ("dog.mp3", "speech.wav", "cow.mp3")
WALL = {"width": 1920, "height": 1080}
PHONE = {"width": 360, "height": 780}
TIMEOUT_MS = 30_000


@pytest.fixture
def api_url(services: Services) -> str:
    """features, classifier, notifier (DeviceHive on a closed port: it cannot connect) and the
    api with a token; the api's URL once it is ready."""
    services.start("features")
    services.start("classifier")
    services.start("notifier", SOUNDHIVE_DEVICEHIVE_URL=f"http://127.0.0.1:{free_port()}/api/rest",
                   SOUNDHIVE_DEVICEHIVE_ACCESS_TOKEN="unused")
    return start_api(services, SOUNDHIVE_API_TOKEN=API_TOKEN,
                     SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS="devicehive.example")


@pytest.fixture
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SOUNDHIVE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def js_errors() -> list[str]:
    """Uncaught errors of every page opened with open_page."""
    return []


def open_page(browser: Browser, url: str, viewport: dict, errors: list[str]) -> Page:
    page = browser.new_context(viewport=viewport).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    page.goto(url)
    return page


def test_dashboard_and_history_in_chromium(api_url: str, services: Services, clips_dir: Path,
                                           browser: Browser, screenshots: Path,
                                           js_errors: list[str]):
    wall = open_page(browser, api_url, WALL, js_errors)
    expect(wall.locator("#stream-state")).to_contain_text("live")
    expect(wall.locator("#sources-message")).to_contain_text("No sources yet")

    services.start("capture", *[f"--source=file:{clips_dir / clip}" for clip in CLIPS])
    see_sources_and_events_live(wall)
    see_the_devicehive_sink(wall)
    wall.screenshot(path=screenshots / "dashboard-1920x1080.png")
    see_events_end(wall)

    submit_the_devicehive_form(wall, api_url)
    wall.screenshot(path=screenshots / "dashboard-form-1920x1080.png", full_page=True)
    reload_keeps_the_api_token(wall)
    see_the_sinks_last_error_with_the_token(wall)

    phone = open_page(browser, api_url, PHONE, js_errors)
    expect(phone.locator(".tile")).to_have_count(len(CLIPS))
    expect(phone.locator("#feed li").first).to_be_visible()
    phone.screenshot(path=screenshots / "dashboard-360.png")
    phone.screenshot(path=screenshots / "dashboard-360-full.png", full_page=True)

    page_through_history(open_page(browser, f"{api_url}/events?limit=2", WALL, js_errors))
    for viewport, size in ((PHONE, "360"), (WALL, "1920x1080")):
        filter_the_history(open_page(browser, f"{api_url}/events", viewport, js_errors),
                           screenshots, size)
    assert js_errors == []


def see_sources_and_events_live(page: Page) -> None:
    """The clips play in real time: tiles come from polling /sources, events only from the SSE
    stream (the page loaded before any existed)."""
    dog = page.locator('.tile[data-source="dog.mp3"]')
    expect(dog).to_be_visible()
    expect(dog.locator(".badge")).to_contain_text(re.compile("running|finished"))
    expect(dog.locator('[role="meter"][aria-label="Level"]')).to_have_attribute(
        "aria-valuetext", re.compile(r"^-?\d+\.\d dBFS$"))
    expect(page.locator(".tile")).to_have_count(len(CLIPS))
    expect(dog.locator(".labels li").first).to_be_visible()
    expect(dog_events(page).first).to_be_visible()


def dog_events(page: Page):
    return page.locator("#feed li", has=page.locator(".event-label", has_text=re.compile("^Bark$")))


def see_events_end(page: Page) -> None:
    """An event's end updates its start's row, in place."""
    expect(dog_events(page)).to_have_count(1)
    expect(dog_events(page).locator(".badge")).to_contain_text("ended")
    expect(page.locator('.tile[data-source="dog.mp3"] .badge')).to_contain_text("finished")


def see_the_devicehive_sink(page: Page) -> None:
    sink = page.locator(".sink", has=page.locator("h3", has_text="devicehive"))
    expect(sink.locator(".badge")).to_contain_text(re.compile("connecting|failed"))
    expect(sink.locator(".counters")).to_contain_text("delivered")


def submit_the_devicehive_form(page: Page, api_url: str) -> None:
    result = page.locator("#config-result")
    expect(result).to_contain_text("Enter the API token")  # nothing is shown without it
    page.fill("#dh-url", "https://devicehive.example/api/rest")
    page.fill("#dh-refresh-token", DEVICEHIVE_TOKEN)
    page.fill("#dh-device-id", "soundhive-test")
    page.fill("#dh-notification", "sound_event")
    page.click("#devicehive-form button[type=submit]")
    expect(result).to_contain_text("Not authorised (401)")
    expect(page.locator("#dh-refresh-token-state")).to_have_text("not set")

    page.fill("#api-token", API_TOKEN)
    page.fill("#dh-refresh-token", DEVICEHIVE_TOKEN)
    page.click("#devicehive-form button[type=submit]")
    expect(result).to_contain_text("Saved")
    expect(page.locator("#dh-refresh-token-state")).to_have_text("set")
    expect(page.locator("#dh-access-token-state")).to_have_text("not set")
    expect(page.locator("#dh-refresh-token")).to_have_value("")
    expect(page.locator("#dh-url")).to_have_value("https://devicehive.example/api/rest")
    expect(page.locator("#dh-allowed-hosts")).to_have_text("Allowed servers: devicehive.example.")
    assert DEVICEHIVE_TOKEN not in page.content()

    page.fill("#dh-url", "https://devicehive.example/other/api/rest")  # its tokens stay behind
    expect(page.locator("#dh-refresh-token")).to_have_attribute(
        "placeholder", re.compile("needed for a new URL"))
    page.click("#devicehive-form button[type=submit]")
    expect(result).to_contain_text("A new server URL needs its credentials")
    page.fill("#dh-url", "https://devicehive.example/api/rest")
    stored = httpx.get(f"{api_url}/config/devicehive",
                       headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
    assert stored["refresh_token_set"] and stored["device_id"] == "soundhive-test"


def see_the_sinks_last_error_with_the_token(page: Page) -> None:
    """The api allows devicehive.example, the notifier (its own allow-list: the environment's
    host) refuses it; the error itself shows only to holders of the token."""
    sink = page.locator(".sink", has=page.locator("h3", has_text="devicehive"))
    expect(sink.locator(".detail")).to_contain_text("not on SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS")


def reload_keeps_the_api_token(page: Page) -> None:
    """The API token stays in the tab's sessionStorage; the form is filled back."""
    page.reload()
    expect(page.locator("#api-token")).to_have_value(API_TOKEN)
    expect(page.locator("#dh-device-id")).to_have_value("soundhive-test")
    expect(page.locator("#dh-refresh-token-state")).to_have_text("set")


def page_through_history(page: Page) -> None:
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(2)  # three clips, one event per sound: pages of two
    page.click("#more")
    expect(rows).to_have_count(4)
    ids = [row.get_attribute("data-event-id") for row in rows.all()]
    assert len(set(ids)) == 4


def filter_the_history(page: Page, screenshots: Path, size: str) -> None:
    rows = page.locator("#history tbody tr")
    expect(rows.first).to_be_visible()
    page.select_option("#filter-source", "dog.mp3")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/events?source=dog.mp3*")
    expect(rows.first).to_be_visible()
    sources = rows.locator('td[data-heading="Source"]').all_inner_texts()
    assert sources and set(sources) == {"dog.mp3"}
    assert "Bark" in rows.locator('td[data-heading="Label"]').all_inner_texts()
    page.screenshot(path=screenshots / f"events-{size}.png", full_page=True)

    page.fill("#filter-label", "Dog")  # a category: finds the Bark
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/events?source=dog.mp3&label=Dog")
    expect(rows.first).to_be_visible()
    assert set(rows.locator('td[data-heading="Label"]').all_inner_texts()) == {"Bark"}
    durations = rows.locator('td[data-heading="Duration"]').all_inner_texts()
    assert all(d.endswith(" s") for d in durations)


def test_api_docs_render_with_the_network_blocked(services: Services, browser: Browser,
                                                  js_errors: list[str]):
    """Swagger UI comes from the api itself: every request elsewhere is aborted, and none is
    even tried."""
    url = start_api(services)
    page = browser.new_context(viewport=WALL).new_page()
    page.on("pageerror", lambda error: js_errors.append(f"{page.url}: {error}"))
    elsewhere: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", loopback_only)
    page.goto(f"{url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("soundhive")
    expect(page.locator(".opblock-summary-path", has_text="/events/stream")).to_be_visible()
    page.click("#operations-events-event_stream_events_stream_get button")  # it works
    expect(page.locator(".opblock-description-wrapper").first).to_contain_text("Last-Event-ID")
    assert elsewhere == [] and js_errors == []


def write_event(client: redis.Redis, source: str, label: str) -> None:
    """An event start as the classifier writes it: to the events stream and the history."""
    now = time.time()
    event = Event(id=f"{source}/{label}/{now:.3f}", source=source, label=label, kind="start",
                  score=0.9, start=1.0, end=None, start_time=now, end_time=None, model="yamnet")
    pipe = client.pipeline()
    bus.publish(pipe, streams.EVENTS_STREAM, event)
    detections.write(pipe, event)
    pipe.execute()


def test_the_token_prompt_reconnects_the_live_feed(services: Services, redis_server: RedisServer,
                                                   browser: Browser, screenshots: Path,
                                                   js_errors: list[str]):
    """With read auth, the pages ask for the token once, keep it for the tab and reconnect the
    live feed as soon as it is entered; `up`'s ?token= URL needs no prompt."""
    url = start_api(services, SOUNDHIVE_API_TOKEN=API_TOKEN, SOUNDHIVE_API_READ_AUTH="1")
    client = redis.Redis.from_url(redis_server.url)
    page = open_page(browser, url, WALL, js_errors)
    prompt = page.locator("#token-prompt")
    expect(prompt).to_be_visible()
    expect(page.locator("#stream-state")).to_contain_text("retrying")
    page.fill("#token-prompt-input", "not-the-token")
    page.click("#token-prompt button")
    expect(prompt.locator(".result")).to_have_text("The server refused that token.")
    # The refused token is forgotten: the next poll goes without one, and its 401 keeps the why.
    with page.expect_response(lambda answer: answer.url.endswith("/sources")
                              and "authorization" not in answer.request.headers):
        pass
    expect(prompt.locator(".result")).to_have_text("The server refused that token.")
    page.screenshot(path=screenshots / "token-prompt-1920x1080.png")
    page.fill("#token-prompt-input", API_TOKEN)
    page.click("#token-prompt button")
    expect(prompt).to_be_hidden()
    expect(page.locator("#stream-state")).to_contain_text("live")
    write_event(client, "hall", "Glass")
    expect(page.locator("#feed li .event-label")).to_have_text(["Glass"])
    expect(page.locator("#api-token")).to_have_value(API_TOKEN)  # the form's field follows
    page.reload()  # the tab keeps it
    expect(page.locator("#stream-state")).to_contain_text("live")
    expect(prompt).to_have_count(0)

    history = open_page(browser, f"{url}/events", WALL, js_errors)  # a new tab: asked again
    history.fill("#token-prompt-input", API_TOKEN)
    history.click("#token-prompt button")
    expect(history.locator('#history td[data-heading="Label"]')).to_have_text(["Glass"])

    from_up = open_page(browser, f"{url}/?token={API_TOKEN}", WALL, js_errors)
    expect(from_up.locator("#stream-state")).to_contain_text("live")
    assert from_up.url == f"{url}/" and from_up.locator("#token-prompt").count() == 0
    write_event(client, "yard", "Bark")
    expect(from_up.locator("#feed li .event-label")).to_have_text(["Bark", "Glass"])
    assert js_errors == []
