"""A folder of labelled audio -> AudioSet-format TFRecords of embeddings (see datasets.py).

Labels come from sub-folder names (`DIR/<label>/**/file`), from a CSV of `file,labels` rows
(file relative to DIR; several labels separated by ';'), or from the reviews of event clips
(DIR is SOUNDHIVE_CLIPS_DIR: a clip marked correct is an example of its label, one marked wrong
a negative of it: a clip with no label, its label still among the classes). Class index i is the
i-th of the sorted label names, unless a class list is given (to embed an eval set with a train
set's classes).

Framing (`hop_seconds=None`): VGGish as the AudioSet release (one embedding every 0.96 s, the
incomplete tail dropped, so a file shorter than 0.975 s has none and is skipped); YAMNet every
0.48 s with the tail zero-padded, as the features service embeds it.
"""

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import params, reviews
from shared.audio import find_audio_files, frame_patches, load_audio
from shared.models.base import Embedder
from shared.models.vggish import RELEASE_HOP_SECONDS, release_patches
from shared.topology import Topology
from shared.training import datasets
from shared.training.augment import Augmentation


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    labels: tuple[str, ...]
    negatives: tuple[str, ...] = ()  # classes it is known not to be (a wrong detection)


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


def from_reviews(topology: Topology, root: Path) -> list[LabelledFile]:
    """The reviewed events whose clips are still kept under `root` (reviews.kept_clips)."""
    files = [LabelledFile(path, (review.label,) if review.verdict == "correct" else (),
                          () if review.verdict == "correct" else (review.label,))
             for review, path in reviews.kept_clips(topology, root)]
    if not files:
        raise datasets.DatasetError(f"no reviewed clips in {root} (mark events correct or "
                                    "wrong in the event history first)")
    return files


def class_list(files: list[LabelledFile], given: list[str] | None = None) -> list[str]:
    found = sorted({label for f in files for label in (*f.labels, *f.negatives)})
    if given is None:
        return found
    unknown = [label for label in found if label not in given]
    if unknown:
        raise datasets.DatasetError(f"labels not in the class list: {', '.join(unknown)}")
    return given


def patches_for(embedding_model: str, waveform: np.ndarray, hop_seconds: float | None
                ) -> np.ndarray:
    """The waveform patches an embedding model's clips are made of (see the module's doc)."""
    if embedding_model == "vggish":
        return release_patches(waveform, hop_seconds or RELEASE_HOP_SECONDS)
    return frame_patches(waveform, hop_seconds or params.DEFAULT_PATCH_HOP_SECONDS)


def embed_files(
    files: list[LabelledFile],
    class_names: list[str],
    embedder: Embedder,
    augment: int = 0,
    hop_seconds: float | None = None,
    seed: int = 0,
    done: Callable[[LabelledFile], None] = lambda f: None,
    skipped: Callable[[LabelledFile], None] = lambda f: None,
) -> Iterator[datasets.Clip]:
    """Each file's clip, then `augment` augmented variants of it; a file too short for one
    embedding is passed to `skipped` instead."""
    rng = np.random.default_rng(seed)
    augmentation = Augmentation()
    index = {name: i for i, name in enumerate(class_names)}
    for file in files:
        waveform = load_audio(file.path)
        labels = sorted(index[label] for label in file.labels)
        if len(patches_for(embedder.name, waveform, hop_seconds)):
            variants = [waveform] + [augmentation(waveform, rng) for _ in range(augment)]
            for number, variant in enumerate(variants):
                suffix = f"#aug{number}" if number else ""
                patches = patches_for(embedder.name, variant, hop_seconds)
                yield _clip(f"{file.path}{suffix}", labels, variant, patches, embedder)
        else:
            skipped(file)
        done(file)


def _clip(
    video_id: str, labels: list[int], waveform: np.ndarray, patches: np.ndarray,
    embedder: Embedder,
) -> datasets.Clip:
    clip = datasets.Clip(video_id, labels, 0.0, len(waveform) / params.SAMPLE_RATE)
    if embedder.name == "vggish":
        clip.vggish_uint8 = embedder.embed_quantized(patches)
    else:
        clip.yamnet = embedder.embed(patches)
    return clip
