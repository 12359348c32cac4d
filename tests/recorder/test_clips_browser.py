"""The event history in a real headless Chromium (Debian's, driven by playwright): a clip the
real recorder wrote plays to its end, its spectrogram shows, a review counts, the filters and
the CSV export work, with reads behind the token (the page takes ?token=)."""

from pathlib import Path

import httpx
from pipeline_helpers import Services, dog_scene, start_api
from playwright.sync_api import expect, sync_playwright
from test_recorder_pipeline import run_pipeline, settled_clips

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--autoplay-policy=no-user-gesture-required"]
TOKEN = "browser-clips-token"


def test_history_plays_a_clip_and_takes_a_review(services: Services, clips_dir: Path,
                                                tmp_path: Path):
    folder = tmp_path / "clips"
    path, _ = dog_scene(clips_dir, tmp_path)
    run_pipeline(services, path, folder)
    url = start_api(services, SOUNDHIVE_CLIPS_DIR=str(folder), SOUNDHIVE_API_TOKEN=TOKEN,
                    SOUNDHIVE_API_READ_AUTH="true")
    event_id, clip = next(iter(settled_clips(services.server.client(), 1).items()))
    errors: list[str] = []
    expect.set_options(timeout=30_000)  # a busy machine
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/events?token={TOKEN}")
        row = page.locator(f'#history tr[data-event-id="{event_id}"]')
        audio = row.locator("audio")
        expect(audio).to_have_count(1, timeout=30_000)
        ended = audio.evaluate("""audio => new Promise((resolve, reject) => {
            audio.addEventListener("ended", () => resolve(audio.duration));
            audio.addEventListener("error", () => reject(String(audio.error && audio.error.code)));
            audio.play().catch(reject);
        })""")
        assert abs(ended - clip.duration) < 0.1, (ended, clip.duration)
        assert row.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")

        row.locator(".review-wrong").click()
        expect(page.locator("#wrong-counts")).to_have_text(f"Marked wrong: {clip.label} 1")
        expect(row.locator(".review-wrong")).to_have_attribute("aria-pressed", "true")

        page.fill("#filter-label", "DOMESTIC")  # a part of a category, any case
        page.fill("#filter-min-score", "0.99")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/events?label=DOMESTIC&min_score=0.99")
        expect(page.locator("#history-message")).to_have_text("No events match.")
        page.fill("#filter-min-score", "")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/events?label=DOMESTIC")
        expect(page.locator("#history tbody tr")).to_have_count(1)
        csv = httpx.get(url + page.locator("#csv").get_attribute("href"))
        assert csv.status_code == 200 and event_id in csv.text and "wrong" in csv.text
        browser.close()
    assert errors == []
