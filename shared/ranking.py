"""Turning per-class scores into ranked labels: plain top-k, or the ontology's specific view."""

import numpy as np

from shared.hierarchy import SPECIFIC_MIN_SCORE, LabelTree, prefers_specific

Label = tuple[str, float]


def top_labels(
    scores: np.ndarray, class_names: list[str], k: int, threshold: float = 0.0
) -> list[Label]:
    order = np.argsort(-scores, kind="stable")
    return [(class_names[i], float(scores[i])) for i in order[:k] if scores[i] >= threshold]


def specific_labels(scores: np.ndarray, tree: LabelTree, k: int, threshold: float = 0.0
                    ) -> list[Label]:
    """Top-k where each class comes after the descendants preferred to it (shared.hierarchy:
    Bark before Dog before Animal, Guitar before Music); other classes keep their score order.
    The events' labels follow the same rule."""
    order = np.argsort(-scores, kind="stable")
    # Only confident classes are ever placed below another: the head of the order.
    confident_order = order[:np.count_nonzero(scores >= SPECIFIC_MIN_SCORE)].tolist()
    position = {i: place for place, i in enumerate(confident_order)}
    ranked: list[int] = []
    placed: set[int] = set()

    def place(i: int) -> None:
        placed.add(i)
        below = tree.more_specific[i].intersection(position)
        for j in sorted(below, key=position.__getitem__):
            if j not in placed and prefers_specific(scores[j], scores[i]):
                place(j)
        ranked.append(i)

    for i in confident_order:
        if len(ranked) >= k:
            break
        if i not in placed:
            place(i)
    # Every confident class is placed by now, or k are ranked; the others follow in score
    # order, each on its own: its confident descendants come before it in the order, placed.
    if len(ranked) < k:
        ranked += order[len(confident_order):len(confident_order) + k - len(ranked)].tolist()
    names = tree.class_names
    return [(names[i], float(scores[i])) for i in ranked[:k] if scores[i] >= threshold]


def hit_rank(labels: list[Label], accept: tuple[str, ...]) -> int | None:
    """1-based rank of the first accepted label, or None when none is ranked."""
    for rank, (name, _) in enumerate(labels, 1):
        if name in accept:
            return rank
    return None
