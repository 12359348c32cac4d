"""Load models by name from the model folder ($SOUNDHIVE_MODELS)."""

import importlib
from pathlib import Path
from types import ModuleType

from shared.models.base import (
    AUDIOSET_HEAD,
    AudioModel,
    AudioSetHead,
    Embedder,
    Head,
    ModelError,
    QuantizedEmbedder,
    WindowHead,
)
from shared.models.catalog import DEFAULT_MODEL, MODELS, missing_files, models_dir, spec

__all__ = [
    "AUDIOSET_HEAD",
    "DEFAULT_MODEL",
    "MODELS",
    "AudioModel",
    "Embedder",
    "Head",
    "ModelError",
    "QuantizedEmbedder",
    "WindowHead",
    "import_tensorflow_module",
    "load_embedder",
    "load_head",
    "load_model",
]


def _checked_folder(name: str, folder: Path | None) -> Path:
    folder = folder or models_dir()
    missing = missing_files(spec(name), folder)
    if missing:
        raise ModelError(
            f"model {name!r} is missing {', '.join(missing)} in {folder} "
            f"(run `soundhive models pull {name}` or set SOUNDHIVE_MODELS)"
        )
    return folder


def load_embedder(name: str = DEFAULT_MODEL, folder: Path | None = None,
                  threads: int = 1) -> Embedder:
    """`threads`: YAMNet's inference threads (one LiteRT interpreter each)."""
    folder = _checked_folder(name, folder)
    if name == "yamnet":
        from shared.models import yamnet

        return yamnet.YamnetTFLite(folder / "yamnet.tflite", threads)
    vggish = import_tensorflow_module("shared.models.vggish", "VGGish")
    return vggish.load_embedder(folder)


def tensorflow_missing(what: str) -> str:
    """The one line saying that `what` needs the TensorFlow extra, and how to get it."""
    return (f"{what} need TensorFlow, which this installation lacks: pip install "
            "'soundhive[tensorflow]' (./scripts/install.sh installs it)")


def import_tensorflow_module(module: str, what: str) -> ModuleType:
    """A module that needs TensorFlow (VGGish, trained heads), imported only when used; without
    TensorFlow a one-line ModelError says how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("tensorflow", "keras"):
            raise
        raise ModelError(tensorflow_missing(what)) from None


def load_model(name: str = DEFAULT_MODEL, folder: Path | None = None,
               threads: int = 1) -> AudioModel:
    """An embedder with its AudioSet head; VGGish has none until a head is trained."""
    folder = _checked_folder(name, folder)
    if name == "yamnet":
        from shared.models import yamnet

        return yamnet.load(folder, threads)[1]
    raise ModelError(
        f"model {name!r} has no AudioSet scoring head; train one with `soundhive train` "
        "or use --model yamnet"
    )


def load_head(name: str, embedding_model: str | None = None) -> WindowHead:
    """`audioset` (the AudioSet head of `embedding_model`, DEFAULT_MODEL when None), or a head
    trained with `soundhive train`, by name ($SOUNDHIVE_MODELS/heads/NAME) or folder, which
    must score `embedding_model` embeddings when one is given."""
    if name == AUDIOSET_HEAD:
        model = embedding_model or DEFAULT_MODEL
        return AudioSetHead(load_model(model).head, model)
    trained = import_tensorflow_module("shared.models.trained", "trained heads")
    head = trained.TrainedHead(name)
    if embedding_model is not None and head.embedding_model != embedding_model:
        raise ModelError(
            f"head {head.name!r} scores {head.embedding_model} embeddings, but the features "
            f"service makes {embedding_model} ones (set SOUNDHIVE_MODEL={head.embedding_model})"
        )
    return head
