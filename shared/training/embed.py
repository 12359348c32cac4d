"""A folder of labelled audio -> AudioSet-format TFRecords of embeddings (see datasets.py).

Labels come from sub-folder names (`DIR/<label>/**/file`) or from a CSV of `file,labels` rows
(file relative to DIR; several labels separated by ';'). Class index i is the i-th of the sorted
label names, unless a class list is given (to embed an eval set with a train set's classes).
"""

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import params
from shared.audio import find_audio_files, frame_patches, load_audio
from shared.models.base import Embedder
from shared.training import datasets
from shared.training.augment import Augmentation


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    labels: tuple[str, ...]


def from_folders(root: Path) -> list[LabelledFile]:
    files = [
        LabelledFile(path, (path.relative_to(root).parts[0],))
        for path in find_audio_files(root)
        if len(path.relative_to(root).parts) > 1
    ]
    if not files:
        raise datasets.DatasetError(f"{root}: no audio files in label sub-folders")
    return files


def from_csv(csv_path: Path, root: Path) -> list[LabelledFile]:
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row and not row[0].startswith("#")]
    except OSError as exc:
        raise datasets.DatasetError(f"{csv_path}: {exc.strerror}") from None
    if rows and rows[0][0].strip().lower() == "file":
        rows = rows[1:]
    files = []
    for number, row in enumerate(rows, start=1):
        labels = tuple(
            label.strip() for cell in row[1:] for label in cell.split(";") if label.strip()
        )
        if not labels:
            raise datasets.DatasetError(f"{csv_path}: row {number} has no labels")
        files.append(LabelledFile(root / row[0].strip(), labels))
    if not files:
        raise datasets.DatasetError(f"{csv_path}: no rows")
    return files


def class_list(files: list[LabelledFile], given: list[str] | None = None) -> list[str]:
    found = sorted({label for f in files for label in f.labels})
    if given is None:
        return found
    unknown = [label for label in found if label not in given]
    if unknown:
        raise datasets.DatasetError(f"labels not in the class list: {', '.join(unknown)}")
    return given


def embed_files(
    files: list[LabelledFile],
    class_names: list[str],
    embedder: Embedder,
    augment: int = 0,
    hop_seconds: float = params.DEFAULT_PATCH_HOP_SECONDS,
    seed: int = 0,
    done: Callable[[LabelledFile], None] = lambda f: None,
) -> Iterator[datasets.Clip]:
    """Each file's clip, then `augment` augmented variants of it."""
    rng = np.random.default_rng(seed)
    augmentation = Augmentation()
    index = {name: i for i, name in enumerate(class_names)}
    for file in files:
        waveform = load_audio(file.path)
        labels = sorted(index[label] for label in file.labels)
        variants = [waveform] + [augmentation(waveform, rng) for _ in range(augment)]
        for number, variant in enumerate(variants):
            suffix = f"#aug{number}" if number else ""
            yield _clip(f"{file.path}{suffix}", labels, variant, embedder, hop_seconds)
        done(file)


def _clip(
    video_id: str, labels: list[int], waveform: np.ndarray, embedder: Embedder, hop: float
) -> datasets.Clip:
    clip = datasets.Clip(video_id, labels, 0.0, len(waveform) / params.SAMPLE_RATE)
    patches = frame_patches(waveform, hop)
    if embedder.name == "vggish":
        clip.vggish_uint8 = embedder.embed_quantized(patches)
    else:
        clip.yamnet = embedder.embed(patches)
    return clip
