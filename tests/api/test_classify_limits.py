"""POST /classify is bounded by the audio an upload holds, not only by its bytes: hours of
silence in a few hundred KB of FLAC (a decompression bomb) are refused, whether the file
declares its length or not, and the api's memory stays bounded while a long upload is decoded."""

from pathlib import Path

import httpx
import psutil
from audio_bombs import PeakRss, silent_flac
from pipeline_helpers import Services, start_api

TOKEN = "test-token-7d2e"
MAX_AUDIO_S = 300
RSS_GROWTH_LIMIT = 100 * 2**20


def test_audio_bombs_are_refused_and_decoding_memory_is_bounded(services: Services,
                                                               clips_dir: Path, tmp_path: Path):
    url = start_api(services, SOUNDHIVE_API_TOKEN=TOKEN,
                    SOUNDHIVE_API_MAX_AUDIO_S=str(MAX_AUDIO_S))
    api = psutil.Process(services.processes[-1][0].pid)

    def classify(path: Path) -> httpx.Response:
        return httpx.post(f"{url}/classify", files={"file": (path.name, path.read_bytes())},
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    assert classify(clips_dir / "dog.mp3").status_code == 200  # the model's buffers are in
    baseline = api.memory_info().rss
    bombs = [silent_flac(tmp_path / "3h.flac", 3 * 3600),  # refused by its header
             silent_flac(tmp_path / "1h-undeclared.flac", 3600, declared=False)]  # by counting
    for bomb in bombs:
        with PeakRss(api) as rss:
            answer = classify(bomb)
        assert answer.status_code == 413, (bomb.name, answer.text)
        assert answer.json()["detail"] == (
            f"the upload holds more than {MAX_AUDIO_S} s of audio (SOUNDHIVE_API_MAX_AUDIO_S)")
        assert rss.peak - baseline < RSS_GROWTH_LIMIT, bomb.name

    within = silent_flac(tmp_path / "long.flac", MAX_AUDIO_S - 10, 48000, channels=2)
    with PeakRss(api) as rss:  # 290 s at 48 kHz stereo: 111 MB as float32 samples
        answer = classify(within)
    assert answer.status_code == 200, answer.text
    assert answer.json()["duration_s"] == MAX_AUDIO_S - 10
    assert rss.peak - baseline < RSS_GROWTH_LIMIT
