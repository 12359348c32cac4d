"""The dashboard and the event history in a real headless Chromium (Debian's, driven by
playwright) against a running pipeline replaying real clips, with the real notifier and api;
and the live page with 500 sources written to Redis as the pipeline writes them.

Screenshots (phone width and a 1080p wall screen) go to $SOUNDHIVE_SCREENSHOTS or tmp_path; so
does timings.json, the 500-source page's load and filter times (docs/benchmarks.md)."""

import json
import math
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
from source_fleet import state_of, write_event, write_sources

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
API_TOKEN = "browser-test-api-token"
DEVICEHIVE_TOKEN = "browser-test-refresh-token"
CLIPS = ("dog.mp3", "speech.wav", "cow.mp3")
WALL = {"width": 1920, "height": 1080}
PHONE = {"width": 360, "height": 780}
NARROW = {"width": 390, "height": 844}
FLEET = 500
PAGE_SIZE = 50  # app.js
FEED_MAX = 100  # app.js
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
    expect(phone.locator(".source-row")).to_have_count(len(CLIPS))
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
    dog = page.locator('.source-row[data-source="dog.mp3"]')
    expect(dog).to_be_visible()
    expect(dog.locator(".badge")).to_contain_text(re.compile("running|finished"))
    expect(dog.locator('[role="meter"][aria-label="Level"]')).to_have_attribute(
        "aria-valuetext", re.compile(r"^-?\d+\.\d dBFS$"))
    expect(page.locator(".source-row")).to_have_count(len(CLIPS))
    expect(dog.locator(".top-label")).to_be_visible()
    expect(dog_events(page).first).to_be_visible()


def dog_events(page: Page):
    return page.locator("#feed li", has=page.locator(".event-label", has_text=re.compile("^Bark$")))


def see_events_end(page: Page) -> None:
    """An event's end updates its start's row, in place."""
    expect(dog_events(page)).to_have_count(1)
    expect(dog_events(page).locator(".badge")).to_contain_text("ended")
    expect(page.locator('.source-row[data-source="dog.mp3"] .badge')).to_contain_text("finished")


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
    expect(rows).to_have_count(2)  # three clips, one event per sound (or more): pages of two
    page.click("#more")
    expect(rows.nth(2)).to_be_attached()  # the next page is added below the first
    ids = [row.get_attribute("data-event-id") for row in rows.all()]
    assert 2 < len(ids) <= 4 and len(set(ids)) == len(ids)


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


def publish(client: redis.Redis, source: str, label: str, start_time: float | None = None
            ) -> None:
    """An event start, as the classifier writes it (start_time: now by default)."""
    with client.pipeline() as pipe:
        write_event(pipe, source, label, time.time() if start_time is None else start_time)
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
    with page.expect_response(lambda answer: "/sources?" in answer.url
                              and "authorization" not in answer.request.headers):
        pass
    expect(prompt.locator(".result")).to_have_text("The server refused that token.")
    page.screenshot(path=screenshots / "token-prompt-1920x1080.png")
    page.fill("#token-prompt-input", API_TOKEN)
    page.click("#token-prompt button")
    expect(prompt).to_be_hidden()
    expect(page.locator("#stream-state")).to_contain_text("live")
    publish(client, "hall", "Glass")
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
    publish(client, "yard", "Bark")
    expect(from_up.locator("#feed li .event-label")).to_have_text(["Bark", "Glass"])
    assert js_errors == []


def test_the_live_page_at_500_sources(services: Services, redis_server: RedisServer,
                                      browser: Browser, screenshots: Path,
                                      js_errors: list[str]):
    """500 sources: counts, a page of the table, filters, sorting, pages, a source's detail,
    the feed in time order, capped and paused; at 1920x1080 and 390 px wide."""
    client = redis.Redis.from_url(redis_server.url)
    write_sources(client, FLEET)
    url = start_api(services, SOUNDHIVE_API_TOKEN=API_TOKEN, SOUNDHIVE_API_READ_AUTH="1")
    timings = {}
    started = time.monotonic()
    wall = open_page(browser, f"{url}/?token={API_TOKEN}", WALL, js_errors)
    rows = wall.locator("#sources tbody tr")
    expect(rows).to_have_count(PAGE_SIZE)
    expect(wall.locator("#count-sources")).to_have_text(str(FLEET))
    timings["load_s"] = time.monotonic() - started
    expect(wall.locator("#sources-range")).to_have_text(shown(1, PAGE_SIZE, FLEET))
    states = [state_of(i) for i in range(FLEET)]
    expect(wall.locator("#count-failed")).to_have_text(str(states.count("failed")))
    expect(wall.locator("#count-ongoing")).to_have_text(str(math.ceil(FLEET / 3)))
    expect(wall.locator("#feed li")).to_have_count(FEED_MAX)  # 500 in the history: capped
    expect(wall.locator("#stream-state")).to_contain_text("live")
    wall.screenshot(path=screenshots / "live-500-1920x1080.png")

    timings["filter_name_s"] = timed(lambda: wall.fill("#source-search", "mic-04"),
                                     lambda: expect(rows).to_have_count(10))
    assert rows.locator("th").all_inner_texts() == [f"mic-{i:03d}" for i in range(40, 50)]
    wall.fill("#source-search", "")
    timings["filter_state_s"] = timed(
        lambda: wall.select_option("#source-state", "failed"),
        lambda: expect(wall.locator("#sources-range")).to_have_text(
            shown(1, states.count("failed"), states.count("failed"))))
    assert set(rows.locator(".badge").all_inner_texts()) == {"failed"}
    wall.select_option("#source-state", "")
    wall.check("#source-ongoing")
    expect(wall.locator("#sources-range")).to_have_text(
        shown(1, PAGE_SIZE, math.ceil(FLEET / 3)))
    expect(rows.locator(".live-marker")).to_have_count(PAGE_SIZE)
    wall.uncheck("#source-ongoing")
    wall.click("#summary .count[data-state='silent']")  # a count filters the table
    expect(wall.locator("#source-state")).to_have_value("silent")
    expect(rows.first.locator(".badge")).to_have_text("silent")
    wall.click("#summary .count[data-state='']")

    sort_by_last_event_and_page(wall, rows)
    see_a_sources_detail(wall, screenshots)
    see_the_feed_in_time_order_and_paused(wall, client)
    wall.screenshot(path=screenshots / "live-500-feed-1920x1080.png")

    narrow = open_page(browser, f"{url}/?token={API_TOKEN}", NARROW, js_errors)
    expect(narrow.locator("#sources tbody tr")).to_have_count(PAGE_SIZE)
    expect(narrow.locator("#feed li").first).to_be_visible()
    narrow.screenshot(path=screenshots / "live-500-390.png")
    narrow.screenshot(path=screenshots / "live-500-390-full.png", full_page=True)
    assert "ⓘ" not in wall.content()  # icons are the dashboard's own SVGs
    (screenshots / "timings.json").write_text(json.dumps(timings, indent=1))
    print(f"500 sources: {timings}")
    assert js_errors == []


def shown(first: int, last: int, total: int) -> str:
    """The table's range line."""
    return f"{first}\N{EN DASH}{last} of {total}"


def timed(act, done) -> float:
    started = time.monotonic()
    act()
    done()
    return round(time.monotonic() - started, 3)


def sort_by_last_event_and_page(page: Page, rows) -> None:
    page.click("#sources th[data-sort='last_event'] button")
    expect(page.locator("#sources th[data-sort='last_event']")).to_have_attribute(
        "aria-sort", "ascending")
    page.click("#sources th[data-sort='last_event'] button")
    expect(page.locator("#sources th[data-sort='last_event']")).to_have_attribute(
        "aria-sort", "descending")
    expect(rows.first.locator("th")).to_have_text(f"mic-{FLEET - 1:03d}")  # the latest event
    page.click("#page-next")
    expect(page.locator("#sources-range")).to_have_text(
        shown(PAGE_SIZE + 1, 2 * PAGE_SIZE, FLEET))
    expect(rows.first.locator("th")).to_have_text(f"mic-{FLEET - 1 - PAGE_SIZE:03d}")
    page.click("#sources th[data-sort='source'] button")  # a new order starts at page 1
    expect(page.locator("#sources-range")).to_have_text(shown(1, PAGE_SIZE, FLEET))


def see_a_sources_detail(page: Page, screenshots: Path) -> None:
    page.click('.source-row[data-source="mic-003"] .source-name')
    dialog = page.locator("#source-detail")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#detail-title")).to_have_text("mic-003")
    expect(dialog.locator(".level-chart polyline")).to_have_count(1)
    expect(dialog.locator(".labels li")).to_have_count(2)
    expect(dialog.locator(".detail-events li .event-source")).to_have_text(["mic-003"])
    page.screenshot(path=screenshots / "live-500-detail-1920x1080.png")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def see_the_feed_in_time_order_and_paused(page: Page, client: redis.Redis) -> None:
    """Events published out of time order are shown newest start first; paused, the feed
    waits and says how many wait; the DOM keeps FEED_MAX rows."""
    labels = page.locator("#feed li .event-label")
    now = time.time()
    for source, label, delay in (("mic-010", "Glass", 5), ("mic-020", "Siren", 10),
                                 ("mic-030", "Bark", 1)):
        publish(client, source, label, now + delay)
    newest = page.locator("#feed li:nth-child(-n+3)")  # they may come in separate frames
    expect(newest.locator(".event-label")).to_have_text(["Siren", "Glass", "Bark"])
    expect(newest.locator(".event-source")).to_have_text(["mic-020", "mic-010", "mic-030"])
    page.click("#feed-pause")
    publish(client, "mic-040", "Music", now + 20)
    expect(page.locator("#feed-pause")).to_contain_text("Resume (1 new)")
    assert labels.first.inner_text() == "Siren"
    page.click("#feed-pause")
    expect(labels.first).to_have_text("Music")
    expect(page.locator("#feed li")).to_have_count(FEED_MAX)
