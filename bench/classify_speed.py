"""Benchmark: the numpy front end (x real time) and `classify` end to end (clips per second).

    SOUNDHIVE_MODELS=../shared/models .venv/bin/python bench/classify_speed.py [CLIPS_DIR]
"""

import sys
import time
from pathlib import Path

import numpy as np
from machine import CLIPS

from shared import params
from shared.audio import find_audio_files, frame_patches, load_audio
from shared.frontend import log_mel_spectrogram
from shared.inference import classify_file
from shared.models import load_model


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main(clips_dir: Path) -> None:
    minute = np.random.default_rng(0).uniform(-1, 1, 60 * params.SAMPLE_RATE).astype(np.float32)
    seconds = best_of(5, lambda: log_mel_spectrogram(minute, params.YAMNET_LOG_OFFSET))
    print(f"front end: 60 s of audio in {seconds * 1000:.1f} ms = {60 / seconds:,.0f}x real time")

    model = load_model()
    clips = find_audio_files(clips_dir)
    patches = np.concatenate([frame_patches(load_audio(c)) for c in clips])
    seconds = best_of(3, lambda: model.embedder.embed(patches))
    print(f"yamnet embedder: {len(patches) / seconds:,.0f} patches/s ({len(patches)} patches)")
    seconds = best_of(3, lambda: model.head.score(model.embedder.embed(patches)))
    print(f"yamnet embedder + head: {len(patches) / seconds:,.0f} patches/s")

    seconds = best_of(3, lambda: [classify_file(model, clip) for clip in clips])
    audio_seconds = sum(len(load_audio(c)) for c in clips) / params.SAMPLE_RATE
    print(
        f"classify (decode + resample + model): {len(clips) / seconds:.1f} clips/s, "
        f"{audio_seconds / seconds:.0f}x real time ({len(clips)} clips, {audio_seconds:.0f} s)"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else CLIPS)
