"""Make "VGGish-format" features without the VGGish checkpoint (unavailable on these machines).

A fixed random projection of YAMNet embeddings to 128 dimensions, centred and scaled on the
training set like the AudioSet release's PCA whitening, then clipped to [-2, 2] and quantised to
uint8 in the `audio_embedding` feature list. Used by the tests' helpers and the proof run:

    .venv/bin/python -m tests.training.vggish_format TRAIN.tfrecord EVAL.tfrecord OUT_DIR
"""

import shutil
import sys
from pathlib import Path

import numpy as np

from shared import params
from shared.training import datasets

MAX_FRAMES = 1000


def projection() -> np.ndarray:
    rng = np.random.default_rng(128)
    return rng.normal(size=(params.YAMNET_EMBEDDING_SIZE, params.VGGISH_EMBEDDING_SIZE))


def convert(train: str, eval_: str, out: Path) -> None:
    sets = {name: datasets.load_arrays(pattern, "yamnet", _num_classes(pattern), MAX_FRAMES)
            for name, pattern in (("train", train), ("eval", eval_))}
    train_frames = np.concatenate(
        [f[:n] for f, n in zip(sets["train"].frames, sets["train"].lengths, strict=True)]
    ) @ projection()
    mean, std = train_frames.mean(axis=0), train_frames.std(axis=0) + 1e-6
    for name, arrays in sets.items():
        clips = [
            datasets.Clip(f"{name}-{i}", np.flatnonzero(labels).tolist(),
                          vggish_uint8=datasets.quantize((frames[:n] @ projection() - mean) / std))
            for i, (frames, n, labels) in enumerate(
                zip(arrays.frames, arrays.lengths, arrays.labels, strict=True))
        ]
        datasets.write_records(out / name / "clips.tfrecord", clips)
        source = Path(datasets.record_files(train)[0]).parent / datasets.CLASS_NAMES_FILE
        shutil.copy(source, out / name / datasets.CLASS_NAMES_FILE)


def _num_classes(pattern: str) -> int:
    names = datasets.class_names_beside(pattern)
    if names is None:
        raise datasets.DatasetError(f"no {datasets.CLASS_NAMES_FILE} beside {pattern}")
    return len(names)


if __name__ == "__main__":
    convert(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
