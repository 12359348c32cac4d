"""Which models soundhive knows, the files each needs, and where those files officially live."""

from dataclasses import dataclass
from pathlib import Path

from shared.config import ProcessSettings
from shared.models.base import ModelError


@dataclass(frozen=True)
class ModelFile:
    name: str
    url: str
    sha256: str | None  # None where the publisher gives no checksum we can pin


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    files: tuple[ModelFile, ...]
    has_audioset_head: bool


_TFLITE_SUPPORT_TESTDATA = (
    "https://raw.githubusercontent.com/tensorflow/tflite-support/master/"
    "tensorflow_lite_support/cc/test/testdata/task/audio"
)
_AUDIOSET_LABELS = ModelFile(
    "class_labels_indices.csv",
    "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/class_labels_indices.csv",
    "cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429",
)
ONTOLOGY = ModelFile(
    "ontology.json",
    "https://raw.githubusercontent.com/audioset/ontology/master/ontology.json",
    "9c685f4403eecc3ca9be37fd7285cf212feaaea6ff7229d3e7ca89e0d1f2d15d",
)

MODELS: dict[str, ModelSpec] = {
    "yamnet": ModelSpec(
        name="yamnet",
        description="YAMNet, int8 TFLite: 1024-d embeddings and the 521 AudioSet classes",
        files=(
            ModelFile(
                "yamnet.tflite",
                f"{_TFLITE_SUPPORT_TESTDATA}/yamnet_audio_classifier_with_metadata.tflite",
                "10c95ea3eb9a7bb4cb8bddf6feb023250381008177ac162ce169694d05c317de",
            ),
            ModelFile(
                "yamnet_class_map.csv",
                "https://raw.githubusercontent.com/tensorflow/models/master/"
                "research/audioset/yamnet/yamnet_class_map.csv",
                "cdf24d193e196d9e95912a2667051ae203e92a2ba09449218ccb40ef787c6df2",
            ),
            ONTOLOGY,
        ),
        has_audioset_head=True,
    ),
    "vggish": ModelSpec(
        name="vggish",
        description="VGGish (TensorFlow): 128-d AudioSet-release embeddings; needs a trained head",
        files=(
            ModelFile(
                "vggish_model.ckpt",
                "https://storage.googleapis.com/audioset/vggish_model.ckpt",
                None,
            ),
            ModelFile(
                "vggish_pca_params.npz",
                "https://storage.googleapis.com/audioset/vggish_pca_params.npz",
                None,
            ),
            _AUDIOSET_LABELS,
            ONTOLOGY,
        ),
        has_audioset_head=False,
    ),
}

DEFAULT_MODEL = "yamnet"


def models_dir() -> Path:
    """The model folder: $SOUNDHIVE_MODELS, else the per-user cache."""
    return ProcessSettings().models.expanduser()


def spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise ModelError(f"unknown model {name!r} (known: {known})") from None


def missing_files(model: ModelSpec, folder: Path | None = None) -> list[str]:
    folder = folder or models_dir()
    return [f.name for f in model.files if not (folder / f.name).is_file()]
