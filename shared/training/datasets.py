"""AudioSet-format embedding TFRecords: the reader (tf.data) and the writer.

Each record is a `tf.train.SequenceExample`, exactly as in Google's AudioSet feature release:

    context:       video_id (bytes), start_time_seconds (float), end_time_seconds (float),
                   labels (int64 list: class indices)
    feature_lists: audio_embedding  one bytes feature of 128 uint8 per frame (VGGish, PCA'd,
                                    clipped to [-2, 2] and quantised to 8 bits); read back
                                    with youtube-8m's dequantisation, as the VGGish embedder
                                    serves them

soundhive adds, alongside, a feature list for YAMNet embeddings (the release has none):

                   yamnet_embedding one float-list feature of 1024 float32 per frame

A record may carry either feature list or both; the reader picks one by embedding model name.
The class names of a data set live beside its records in `class_names.txt` (one per line, line
i is class index i).
"""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared import params
from shared.errors import UserError

# The VGGish embedder's AudioSet-format (de)quantisation, re-exported for those who write data.
from shared.models.vggish import dequantize_embeddings as dequantize  # noqa: F401
from shared.models.vggish import quantize_embeddings as quantize  # noqa: F401

CLASS_NAMES_FILE = "class_names.txt"
_QUANTIZE_STEP = (params.QUANTIZE_MAX_VALUE - params.QUANTIZE_MIN_VALUE) / (
    params.QUANTIZE_LEVELS - 1
)
# The reader dequantises in the graph exactly as `dequantize` (youtube-8m's Dequantize) does.
_DEQUANTIZE_BIAS = (params.QUANTIZE_MAX_VALUE - params.QUANTIZE_MIN_VALUE) / (
    2 * params.QUANTIZE_LEVELS
) + params.QUANTIZE_MIN_VALUE


class DatasetError(UserError):
    """Unusable training data (one-line message)."""


@dataclass(frozen=True)
class FeatureSpec:
    embedding_model: str
    feature_list: str
    size: int
    quantized: bool


FEATURES: dict[str, FeatureSpec] = {
    "vggish": FeatureSpec("vggish", "audio_embedding", params.VGGISH_EMBEDDING_SIZE, True),
    "yamnet": FeatureSpec("yamnet", "yamnet_embedding", params.YAMNET_EMBEDDING_SIZE, False),
}


def feature_spec(embedding_model: str) -> FeatureSpec:
    try:
        return FEATURES[embedding_model]
    except KeyError:
        raise DatasetError(
            f"unknown embedding model {embedding_model!r} (known: {', '.join(FEATURES)})"
        ) from None


def no_frames(pattern: str, embedding_model: str) -> DatasetError:
    """The error for records without the chosen feature list, naming the other choices."""
    spec = feature_spec(embedding_model)
    others = "; ".join(
        f"--embedding {s.embedding_model} reads {s.feature_list!r}"
        for s in FEATURES.values() if s != spec
    )
    return DatasetError(f"{pattern}: no clips with {spec.feature_list!r} frames ({others})")


# --- writing ---------------------------------------------------------------------------------


@dataclass
class Clip:
    """One labelled clip's embeddings; `vggish_uint8` [T, 128] and/or `yamnet` [T, 1024]."""

    video_id: str
    labels: list[int]
    start_time_seconds: float = 0.0
    end_time_seconds: float = 0.0
    vggish_uint8: np.ndarray | None = None
    yamnet: np.ndarray | None = None


def _context(clip: Clip) -> tf.train.Features:
    return tf.train.Features(
        feature={
            "video_id": tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[clip.video_id.encode()])
            ),
            "start_time_seconds": tf.train.Feature(
                float_list=tf.train.FloatList(value=[clip.start_time_seconds])
            ),
            "end_time_seconds": tf.train.Feature(
                float_list=tf.train.FloatList(value=[clip.end_time_seconds])
            ),
            "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=clip.labels)),
        }
    )


def serialize(clip: Clip) -> bytes:
    lists: dict[str, tf.train.FeatureList] = {}
    if clip.vggish_uint8 is not None:
        rows = np.asarray(clip.vggish_uint8, np.uint8)
        lists[FEATURES["vggish"].feature_list] = tf.train.FeatureList(
            feature=[tf.train.Feature(bytes_list=tf.train.BytesList(value=[r.tobytes()]))
                     for r in rows]
        )
    if clip.yamnet is not None:
        rows = np.asarray(clip.yamnet, np.float32)
        lists[FEATURES["yamnet"].feature_list] = tf.train.FeatureList(
            feature=[tf.train.Feature(float_list=tf.train.FloatList(value=r)) for r in rows]
        )
    if not lists:
        raise DatasetError(f"clip {clip.video_id!r} has no embeddings")
    example = tf.train.SequenceExample(
        context=_context(clip), feature_lists=tf.train.FeatureLists(feature_list=lists)
    )
    return example.SerializeToString()


def write_records(path: Path, clips: Iterable[Clip]) -> int:
    """Write clips to one TFRecord file; returns how many were written."""
    count = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for clip in clips:
            writer.write(serialize(clip))
            count += 1
    return count


def write_class_names(folder: Path, names: list[str]) -> Path:
    path = Path(folder) / CLASS_NAMES_FILE
    path.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return path


# --- reading ---------------------------------------------------------------------------------


def record_files(pattern: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise DatasetError(f"no TFRecord files match {pattern!r}")
    return files


def class_names_beside(pattern: str) -> list[str] | None:
    """The class names stored beside the first record file matching `pattern`, if any."""
    path = Path(record_files(pattern)[0]).parent / CLASS_NAMES_FILE
    if not path.is_file():
        return None
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def align_labels(
    labels: np.ndarray, data_names: list[str], head_names: list[str], what: str
) -> np.ndarray:
    """Multi-hot labels [n, len(data_names)] -> [n, len(head_names)], matched by class name
    (the data's classes must all be among the head's; the head's others get no positives)."""
    index = {name: i for i, name in enumerate(head_names)}
    unknown = [name for name in data_names if name not in index]
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise DatasetError(
            f"{what}: {len(unknown)} of its classes are not the head's ({shown}); "
            "embed it with the training set's --class-names"
        )
    aligned = np.zeros((labels.shape[0], len(head_names)), labels.dtype)
    aligned[:, [index[name] for name in data_names]] = labels
    return aligned


def _parse(serialized: tf.Tensor, spec: FeatureSpec) -> dict[str, tf.Tensor]:
    if spec.quantized:
        sequence = {
            spec.feature_list: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
        }
    else:
        sequence = {
            spec.feature_list: tf.io.FixedLenSequenceFeature(
                [spec.size], tf.float32, allow_missing=True
            )
        }
    context, lists = tf.io.parse_single_sequence_example(
        serialized,
        context_features={
            "video_id": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64),
        },
        sequence_features=sequence,
    )
    frames = lists[spec.feature_list]
    if spec.quantized:
        raw = tf.reshape(tf.io.decode_raw(frames, tf.uint8), [-1, spec.size])
        frames = tf.cast(raw, tf.float32) * _QUANTIZE_STEP + _DEQUANTIZE_BIAS
    return {
        "video_id": context["video_id"],
        "labels": tf.sparse.to_dense(context["labels"]),
        "frames": frames,
    }


def _multi_hot(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    checks = [
        tf.debugging.assert_non_negative(labels, message="negative class index in labels"),
        tf.debugging.assert_less(
            labels, tf.constant(num_classes, tf.int64),
            message=f"a class index is >= {num_classes}, the number of class names",
        ),
    ]
    with tf.control_dependencies(checks):
        hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    return tf.reduce_max(tf.concat([hot, tf.zeros([1, num_classes])], axis=0), axis=0)


def _fit_frames(frames: tf.Tensor, max_frames: int, random_crop: bool) -> tf.Tensor:
    """At most max_frames frames: a random contiguous crop in training, else the first ones."""
    extra = tf.maximum(tf.shape(frames)[0] - max_frames, 0)
    start = tf.random.uniform([], 0, extra + 1, tf.int32) if random_crop else 0
    return frames[start : start + max_frames]


def make_dataset(
    pattern: str,
    embedding_model: str,
    num_classes: int,
    max_frames: int,
    batch_size: int,
    training: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """((frames [B, max_frames, D] zero-padded, lengths [B]), labels multi-hot [B, C]).

    Clips without frames of the chosen feature are skipped. In training the files and clips are
    shuffled and long clips are cropped at random; otherwise the order is the files' order.
    """
    spec = feature_spec(embedding_model)
    files = record_files(pattern)
    data = tf.data.Dataset.from_tensor_slices(files)
    if training:
        data = data.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    data = data.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)))
    if training:
        data = data.shuffle(1024, seed=seed, reshuffle_each_iteration=True)

    def prepare(serialized: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.Tensor]:
        parsed = _parse(serialized, spec)
        frames = _fit_frames(parsed["frames"], max_frames, training)
        return (frames, tf.shape(frames)[0]), _multi_hot(parsed["labels"], num_classes)

    data = data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    data = data.filter(lambda inputs, _: inputs[1] > 0)
    return data.padded_batch(
        batch_size,
        padded_shapes=(([max_frames, spec.size], []), [num_classes]),
    ).prefetch(tf.data.AUTOTUNE)


@dataclass
class Arrays:
    frames: np.ndarray  # [n, max_frames, D]
    lengths: np.ndarray  # [n]
    labels: np.ndarray  # [n, C]


def iterate_batches(data: tf.data.Dataset, what: str) -> Iterator[Arrays]:
    """numpy batches of a dataset, with data errors (bad labels, bad records) as DatasetError."""
    iterator = iter(data)
    while True:
        try:
            (frames, lengths), labels = next(iterator)
        except StopIteration:
            return
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as exc:
            raise DatasetError(f"{what}: {_tf_message(exc)}") from None
        yield Arrays(frames.numpy(), lengths.numpy(), labels.numpy())


def _tf_message(exc: tf.errors.OpError) -> str:
    """The useful part of a tf.data error: an assertion's own message, or the first line without
    graph node names, op names or the iterator chain."""
    message = (exc.message or type(exc).__name__).strip()
    assertion = re.search(r"assertion failed: \[(.*?)\]", message)
    if assertion:
        return assertion.group(1)
    message = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", message.splitlines()[0])
    message = re.sub(r"Error in user-defined function.*?Iterator::\S+: ", "", message)
    return message.replace("Name: <unknown>, ", "").split("  Did you mean")[0].strip()


def load_arrays(pattern: str, embedding_model: str, num_classes: int, max_frames: int) -> Arrays:
    """A whole (evaluation-sized) data set in memory, in file order."""
    batches = list(
        iterate_batches(
            make_dataset(pattern, embedding_model, num_classes, max_frames, batch_size=256),
            pattern,
        )
    )
    if not batches:
        raise no_frames(pattern, embedding_model)
    return Arrays(
        np.concatenate([b.frames for b in batches]),
        np.concatenate([b.lengths for b in batches]),
        np.concatenate([b.labels for b in batches]),
    )
