"""The small interface every model sits behind (after youtube-8m's BaseModel).

A model is split in two so that the features service can emit embeddings and the classifier
service can score them later, on another machine:

    waveform patches [n, PATCH_SAMPLES] --Embedder.embed--> embeddings [n, D]
    embeddings [n, D]                   --Head.score-----> per-class scores [n, C] in [0, 1]
"""

from dataclasses import dataclass
from typing import Protocol

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


class Head(Protocol):
    class_names: list[str]

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 embeddings [n, D] -> float32 per-class scores [n, C] in [0, 1]."""
        ...


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
