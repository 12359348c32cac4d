"""The small interface every model sits behind (after youtube-8m's BaseModel).

A model is split in two so that the features service can emit embeddings and the classifier
service can score them later, on another machine:

    waveform patches [n, PATCH_SAMPLES] --Embedder.embed--> embeddings [n, D]
    embeddings [n, D]                   --Head.score-----> per-class scores [n, C] in [0, 1]

The classifier scores with a WindowHead: a head over each patch's window of recent embeddings
(a trained head), or a per-embedding Head seen as one of window 1 (AudioSetHead).
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from shared.errors import UserError


class ModelError(UserError):
    """A model that is missing, unusable or asked for something it cannot do (one-line message)."""


class Embedder(Protocol):
    name: str
    embedding_size: int
    patch_hop_seconds: float  # how often the streaming pipeline embeds a patch
    def embed(self, patches: np.ndarray) -> np.ndarray:
        """float32 waveform patches [n, PATCH_SAMPLES] in [-1, 1] -> float32 embeddings [n, D]."""
        ...


@runtime_checkable
class QuantizedEmbedder(Embedder, Protocol):
    """An embedder whose embeddings are int8 to begin with (YAMNet's TFLite graph): the
    pipeline carries them so, a quarter of the bytes of float32 and the same values."""

    def embed_int8(self, waveforms: np.ndarray, hop_seconds: float | None = None
                   ) -> tuple[np.ndarray, tuple[float, int]]:
        """Waveform rows [n, samples], float32 in [-1, 1] or int16 PCM (the pipeline's chunks,
        read without a float copy), cut into patches every `hop_seconds` (rows of one patch
        when None) -> int8 embeddings [n * patches per row, D] and their (scale, zero_point)."""
        ...


class Head(Protocol):
    class_names: list[str]

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 embeddings [n, D] -> float32 per-class scores [n, C] in [0, 1]."""
        ...


class WindowHead(Protocol):
    """A head over each patch's window of recent embeddings (oldest first, `lengths[i]` valid
    rows, the newest at `lengths[i] - 1`). Trained heads (shared.models.trained.TrainedHead)
    are window heads as they are."""

    name: str
    embedding_model: str  # the embedding model it expects
    class_names: list[str]
    window: int  # number of embeddings a window holds (1: the patch alone)

    def score_windows(self, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """float32 [n, window, D], int [n] -> float32 scores [n, C] in [0, 1]."""
        ...

    def changed_on_disk(self) -> bool:
        """Whether its files were replaced since it was loaded (for hot reload)."""
        ...


AUDIOSET_HEAD = "audioset"


class AudioSetHead:
    """A per-embedding AudioSet head seen as a window head of window 1."""

    name = AUDIOSET_HEAD
    window = 1

    def __init__(self, head: Head, embedding_model: str):
        self.embedding_model = embedding_model
        self.class_names = head.class_names
        self._head = head

    def score_windows(self, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self._head.score(windows[np.arange(len(windows)), lengths - 1])

    def changed_on_disk(self) -> bool:
        return False


@dataclass
class AudioModel:
    """An embedder with the head that scores its embeddings."""

    name: str
    embedder: Embedder
    head: Head

    @property
    def class_names(self) -> list[str]:
        return self.head.class_names

    def score_patches(self, patches: np.ndarray) -> np.ndarray:
        return self.head.score(self.embedder.embed(patches))
