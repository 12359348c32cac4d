"""Training test data: AudioSet-format TFRecords made here, learnable but not trivially.

Each class has a random direction in embedding space; a clip of a class has frames near that
direction (plus noise and a shared background), and some frames are pure background, so pooling
over frames matters. A projection to 128-d quantised uint8 gives "VGGish-format" features.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from shared.training import datasets

NUM_CLASSES = 4
MAX_FRAMES = 8


@dataclass
class Synthetic:
    train: str
    eval: str
    folder: Path
    class_names: list[str]


def make_clips(count: int, seed: int, size: int, quantized: bool) -> list[datasets.Clip]:
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(1234).normal(size=(NUM_CLASSES, size))
    clips = []
    for i in range(count):
        label = int(rng.integers(NUM_CLASSES))
        labels = [label] if rng.random() > 0.2 else sorted({label, (label + 1) % NUM_CLASSES})
        frames_count = int(rng.integers(2, MAX_FRAMES + 4))
        frames = rng.normal(scale=1.2, size=(frames_count, size))
        active = rng.random(frames_count) < 0.6
        active[0] = True
        for lab in labels:
            frames[active] += prototypes[lab] * 0.8
        clip = datasets.Clip(f"clip{seed}-{i}", labels, 0.0, float(frames_count))
        if quantized:
            clip.vggish_uint8 = datasets.quantize(frames * 0.5)
        else:
            clip.yamnet = frames.astype(np.float32)
        clips.append(clip)
    return clips


def _write(folder: Path, size: int, quantized: bool) -> Synthetic:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"class {i}" for i in range(NUM_CLASSES)]
    for shard in range(2):
        datasets.write_records(
            folder / f"train-{shard}.tfrecord", make_clips(96, seed=shard, size=size,
                                                           quantized=quantized)
        )
    datasets.write_records(folder / "eval.tfrecord", make_clips(64, 99, size, quantized))
    datasets.write_class_names(folder, names)
    return Synthetic(str(folder / "train-*.tfrecord"), str(folder / "eval.tfrecord"), folder,
                     names)


@pytest.fixture(scope="session")
def vggish_data(tmp_path_factory) -> Synthetic:
    return _write(tmp_path_factory.mktemp("vggish-data"), 128, quantized=True)


@pytest.fixture(scope="session")
def yamnet_data(tmp_path_factory) -> Synthetic:
    return _write(tmp_path_factory.mktemp("yamnet-data"), 64 * 16, quantized=False)


@pytest.fixture
def yamnet_eval_clips() -> list[datasets.Clip]:
    """A fresh copy of the clips of yamnet_data's eval set."""
    return make_clips(64, 99, 64 * 16, quantized=False)
