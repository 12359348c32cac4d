"""POST /classify under long uploads: seconds and the api's peak memory for a normal clip, the
decompression bomb of issue 18 (3 h of silence in a 546 KB FLAC; also with its length left
undeclared) and a long upload within SOUNDHIVE_API_MAX_AUDIO_S (590 s at 48 kHz stereo),
against the real api process and a real Redis, both started here on free ports.

    .venv/bin/python bench/classify_upload.py [--clip ../shared/data/clips/dog.mp3]

Prints JSON: per upload its size, the api's answer, seconds and RSS before and at peak (MB).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import machine
import psutil
from machine import REPO

from services.registry import SERVICES
from shared.ports import free_port
from soundhive.redis_process import RedisProcess, die_with_parent

sys.path.insert(0, str(REPO / "tests"))
from audio_bombs import PeakRss, silent_flac  # the tests' files and sampler

TOKEN = "bench-token"


def post(url: str, api: psutil.Process, path: Path) -> dict:
    body = path.read_bytes()
    before = api.memory_info().rss
    with PeakRss(api) as rss:
        started = time.perf_counter()
        answer = httpx.post(f"{url}/classify", files={"file": (path.name, body)},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600)
        seconds = time.perf_counter() - started
    return {"file": path.name, "bytes": len(body), "status": answer.status_code,
            "answer": answer.text[:90], "seconds": round(seconds, 3),
            "rss_before_mb": round(before / 2**20),
            "rss_peak_mb": round(rss.peak / 2**20)}


def normal_clip(url: str, api: psutil.Process, clip: Path, runs: int = 7) -> dict:
    results = [post(url, api, clip) for _ in range(runs)]
    return {**results[-1], "seconds": statistics.median(r["seconds"] for r in results),
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=REPO.parent / "shared/data/clips/dog.mp3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soundhive-upload-bench-") as tmp:
        folder = Path(tmp)
        uploads = [silent_flac(folder / "bomb-3h.flac", 3 * 3600),
                   silent_flac(folder / "bomb-3h-undeclared.flac", 3 * 3600, declared=False),
                   silent_flac(folder / "590s-48k-stereo.flac", 590, 48000, channels=2)]
        server = RedisProcess(folder, port=free_port())
        server.start()
        port = free_port()
        api = SERVICES["api"].launch(
            dict(os.environ), {"redis_url": server.url, "port": port, "host": "127.0.0.1",
                               "token": TOKEN},
            cwd=REPO, preexec_fn=die_with_parent, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            while True:
                try:
                    if httpx.get(f"{url}/readyz").is_success:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            process = psutil.Process(api.pid)
            result = {"machine": machine.describe(), "commit": machine.git_commit(),
                      "normal_clip": normal_clip(url, process, args.clip),
                      "uploads": [post(url, process, path) for path in uploads]}
        finally:
            api.terminate()
            api.wait(20)
            server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
