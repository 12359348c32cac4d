"""Serving a head trained with `soundhive train` (Logistic, DBoF or LSTM over recent embeddings).

    head = TrainedHead("farm")               # $SOUNDHIVE_MODELS/heads/farm/, or a folder path
                                             # (shared.models.load_head loads any head)
    head.embedding_model                     # "yamnet" or "vggish": what its inputs must be
    head.window                              # how many recent embeddings it looks at
    head.score_windows(windows, lengths)     # [n, T, D], [n] -> [n, C]
    head.score_clips(frames, lengths)        # whole clips (up to max_frames), as evaluation does
    head.score(embeddings)                   # [n, D] -> [n, C], row i on embeddings[i-window+1:i+1]
    if head.changed_on_disk(): head = TrainedHead(head.folder)   # hot reload

Serving runs one tf.function with a fixed input signature [None, window, D] in inference mode
(no frame sampling, batch normalisation on its moving statistics); `score_clips` runs the same
model on whole clips of any length up to the head's max_frames.

A head's folder (written by shared/training/export.py; installed heads in
`$SOUNDHIVE_MODELS/heads/<name>/`):

    <folder>/head.json          format, name, embedding model, window, model config, metrics
                                (window: how many recent embeddings serving gives the head, the
                                longest clip it was trained on, at most its max_frames)
    <folder>/class_names.txt    one class name per line, line i = output i
    <folder>/model.weights.h5   the Keras weights
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared.models.base import ModelError
from shared.models.catalog import models_dir
from shared.models.frame_models import HeadConfig, build_model

# /2: MoE gates without bias and a choice of DBoF activation (/1 heads cannot be loaded).
FORMAT = "soundhive-head/2"
HEAD_FILE = "head.json"
CLASS_NAMES_FILE = "class_names.txt"
WEIGHTS_FILE = "model.weights.h5"
HEAD_FILES = (HEAD_FILE, CLASS_NAMES_FILE, WEIGHTS_FILE)
HEADS_SUBDIR = "heads"
_SERVING_BATCH = 1024


def heads_dir() -> Path:
    return models_dir() / HEADS_SUBDIR


def resolve(name_or_path: str | Path) -> Path:
    """A head folder: an existing folder with head.json, else `$SOUNDHIVE_MODELS/heads/<name>`."""
    path = Path(name_or_path).expanduser()
    if (path / HEAD_FILE).is_file():
        return path
    installed = heads_dir() / str(name_or_path)
    if (installed / HEAD_FILE).is_file():
        return installed
    raise ModelError(
        f"no trained head {str(name_or_path)!r} (looked for {path}/{HEAD_FILE} and "
        f"{installed}/{HEAD_FILE}; train one with `soundhive train`)"
    )


def disk_stamp(folder: Path) -> tuple:
    """What changes when any of the head's files is rewritten or replaced."""
    stamp = []
    for name in HEAD_FILES:
        try:
            stat = (folder / name).stat()
        except OSError:
            stamp.append(None)
            continue
        stamp.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


class TrainedHead:
    def __init__(self, name_or_path: str | Path):
        """The head named `name_or_path` (see resolve)."""
        self.folder = resolve(name_or_path)
        self.version = disk_stamp(self.folder)
        description = _read_description(self.folder)
        self.name: str = description["name"]
        self.embedding_model: str = description["embedding_model"]
        self.window: int = int(description["window"])
        self.metrics: dict[str, float] = description.get("metrics", {})
        self.config = HeadConfig(**description["config"])
        self.class_names = _read_class_names(self.folder, self.config.num_classes)
        self.embedding_size = self.config.feature_size
        model = build_model(self.config)
        try:
            model.load_weights(self.folder / WEIGHTS_FILE)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{self.folder}: unusable weights ({exc})") from None

        def predict(frames: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
            return model((frames, lengths), training=False)

        lengths = tf.TensorSpec([None], tf.int32)
        # No Python control flow to convert: autograph off (it cannot read this closure).
        self._predict = tf.function(predict, autograph=False, input_signature=[
            tf.TensorSpec([None, self.window, self.embedding_size], tf.float32), lengths
        ])
        self._predict_clips = tf.function(predict, autograph=False, input_signature=[
            tf.TensorSpec([None, None, self.embedding_size], tf.float32), lengths
        ])
        self._model = model

    def changed_on_disk(self) -> bool:
        return disk_stamp(self.folder) != self.version

    def score_windows(self, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """windows [n, T, D] whose first lengths[i] rows are valid -> scores [n, C].
        A window longer than the head's keeps its last `window` valid embeddings."""
        windows, lengths = self._checked(windows, lengths)
        return self._run(self._predict, *self._fit(windows, lengths))

    def score_clips(self, frames: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Whole clips [n, T, D], T at most max_frames, whose first lengths[i] rows are valid ->
        scores [n, C]: how training's evaluation and youtube-8m's eval score a clip."""
        frames, lengths = self._checked(frames, lengths)
        if frames.shape[1] > self.config.max_frames:
            raise ModelError(
                f"head {self.name!r} scores clips of at most {self.config.max_frames} frames, "
                f"got {frames.shape[1]}"
            )
        return self._run(self._predict_clips, frames, lengths.astype(np.int32))

    def _checked(self, frames: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = np.asarray(frames, np.float32)
        lengths = np.asarray(lengths, np.int64).reshape(-1)
        if frames.ndim != 3 or frames.shape[2] != self.embedding_size:
            raise ModelError(
                f"head {self.name!r} scores windows [n, T, {self.embedding_size}] of "
                f"{self.embedding_model} embeddings, got {frames.shape}"
            )
        if lengths.shape[0] != frames.shape[0] or np.any(lengths < 1) or np.any(
            lengths > frames.shape[1]
        ):
            raise ModelError(f"lengths must be in 1..{frames.shape[1]}, one per window")
        return frames, lengths

    def _run(self, predict, frames: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = [
            predict(frames[i : i + _SERVING_BATCH], lengths[i : i + _SERVING_BATCH]).numpy()
            for i in range(0, len(frames), _SERVING_BATCH)
        ]
        if not out:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def _fit(self, windows: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pad or cut every window to exactly `self.window` frames, keeping the trailing ones."""
        starts = np.maximum(lengths - self.window, 0)
        index = np.minimum(starts[:, None] + np.arange(self.window), windows.shape[1] - 1)
        fitted = np.take_along_axis(windows, index[:, :, None], axis=1)
        fitted_lengths = np.minimum(lengths, self.window)
        fitted[np.arange(self.window)[None, :] >= fitted_lengths[:, None]] = 0.0
        return fitted, fitted_lengths.astype(np.int32)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """embeddings [n, D] in time order -> [n, C]: row i scored on the trailing window of up
        to `window` embeddings ending at row i."""
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2:
            raise ModelError(f"embeddings must be [n, D], got {embeddings.shape}")
        n = embeddings.shape[0]
        padded = np.concatenate(
            [embeddings, np.zeros((self.window - 1, embeddings.shape[1]), np.float32)]
        )
        starts = np.maximum(np.arange(n) - self.window + 1, 0)
        windows = padded[starts[:, None] + np.arange(self.window)]
        lengths = np.arange(n) - starts + 1
        return self.score_windows(windows, lengths)


def _read_description(folder: Path) -> dict:
    try:
        description = json.loads((folder / HEAD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: unreadable {HEAD_FILE} ({exc})") from None
    found = description.get("format")
    if found != FORMAT:
        older = isinstance(found, str) and found.startswith("soundhive-head/")
        raise ModelError(
            f"{folder}: a {found} head from an older soundhive: train it again"
            if older else f"{folder}: not a {FORMAT} head"
        )
    return description


def _read_class_names(folder: Path, num_classes: int) -> list[str]:
    path = folder / CLASS_NAMES_FILE
    try:
        names = [n for n in path.read_text(encoding="utf-8").splitlines() if n]
    except OSError as exc:
        raise ModelError(f"{path}: unreadable ({exc.strerror})") from None
    if len(names) != num_classes:
        raise ModelError(f"{path}: {len(names)} names for {num_classes} classes")
    return names

