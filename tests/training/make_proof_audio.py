"""The proof data set: every public clip split in time, the first 60% for training and the last
40% for evaluation, as `<split>/<label>/<clip>.wav`. The ten animal clips are one class each;
the other sounds (speech, bells, alarm, camera, phone, trash) are one class, `other`.

    .venv/bin/python tests/training/make_proof_audio.py ../shared/data/clips /tmp/proof/audio
"""

import sys
from pathlib import Path

import soundfile

from shared import params
from shared.audio import find_audio_files, load_audio

ANIMALS = frozenset(
    ["cat", "cow", "dog", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep"]
)
TRAIN_FRACTION = 0.6


def split_clips(clips: Path, out: Path) -> None:
    for path in find_audio_files(clips):
        label = path.stem if path.stem in ANIMALS else "other"
        waveform = load_audio(path)
        cut = int(len(waveform) * TRAIN_FRACTION)
        for split, part in (("train", waveform[:cut]), ("eval", waveform[cut:])):
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            soundfile.write(folder / f"{path.stem}.wav", part, params.SAMPLE_RATE)


if __name__ == "__main__":
    split_clips(Path(sys.argv[1]), Path(sys.argv[2]))
