"""Turning per-class scores into ranked labels: plain top-k, or the ontology's specific view."""

import numpy as np

from shared.labels import Ontology

Label = tuple[str, float]

# A more specific class (Dog) goes before its ancestor (Animal) when it is confident on its own
# (this score) and next to its ancestor (this fraction of the ancestor's score): Bark at 0.6
# goes before Dog at 0.9, Yip at 0.15 does not.
DEFAULT_SPECIFIC_MIN_SCORE = 0.1
DEFAULT_SPECIFIC_MIN_RATIO = 0.5


def top_labels(
    scores: np.ndarray, class_names: list[str], k: int, threshold: float = 0.0
) -> list[Label]:
    order = np.argsort(-scores, kind="stable")
    return [(class_names[i], float(scores[i])) for i in order[:k] if scores[i] >= threshold]


def specific_labels(
    scores: np.ndarray,
    class_names: list[str],
    ontology: Ontology,
    k: int,
    threshold: float = 0.0,
    min_score: float = DEFAULT_SPECIFIC_MIN_SCORE,
    min_ratio: float = DEFAULT_SPECIFIC_MIN_RATIO,
) -> list[Label]:
    """Top-k where each class comes after its confident descendants (Bark before Dog before
    Animal, Guitar before Music); other classes keep their score order."""
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    rank = {class_names[i]: position for position, i in enumerate(order)}
    confident = {class_names[i] for i in order if scores[i] >= min_score}
    index_of = {name: i for i, name in enumerate(class_names)}
    ranked: list[int] = []
    placed: set[int] = set()

    def place(i: int) -> None:
        if i in placed:
            return
        placed.add(i)
        below = confident & ontology.more_specific_names(class_names[i])
        for name in sorted(below, key=rank.__getitem__):
            if scores[index_of[name]] >= scores[i] * min_ratio:
                place(index_of[name])
        ranked.append(i)

    for i in order:
        if len(ranked) >= k:
            break
        place(i)
    return [(class_names[i], float(scores[i])) for i in ranked[:k] if scores[i] >= threshold]


def hit_rank(labels: list[Label], accept: tuple[str, ...]) -> int | None:
    """1-based rank of the first accepted label, or None when none is ranked."""
    for rank, (name, _) in enumerate(labels, 1):
        if name in accept:
            return rank
    return None
