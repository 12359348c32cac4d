"""The YouTube-8M evaluation metrics, with the exact definitions of youtube-8m's eval_util.py.

All functions take `predictions` and `labels`, both [videos, classes]; labels are 0/1.

- hit@1: fraction of videos whose highest-scored class is a true label.
- PERR (precision at equal recall rate): per video, the precision of its top k predictions where
  k is its number of true labels (a prediction only counts when its score is > 0); a video
  without labels counts as 0; averaged over videos.
- GAP@k: every video contributes its top k (class, score) predictions to one pooled list; GAP is
  the non-interpolated average precision of that list sorted by score, with recall measured
  against all true labels of all videos (not only those in the top k).
- mAP: per class, the non-interpolated AP of the predictions that made their video's top k,
  with recall measured against all of that class's true labels; averaged over *all* classes (a
  class without positives has AP 0, as in youtube-8m's MeanAveragePrecisionCalculator).

youtube-8m shuffles equal scores with a fixed seed before sorting; here equal scores keep a
stable order (video order, then class order). The two agree whenever scores are distinct.
"""

from dataclasses import dataclass

import numpy as np

DEFAULT_TOP_K = 20


@dataclass(frozen=True)
class Metrics:
    hit_at_one: float
    perr: float
    gap: float
    mean_ap: float
    num_examples: int

    def as_dict(self) -> dict[str, float]:
        return {"hit@1": self.hit_at_one, "PERR": self.perr, "GAP@20": self.gap,
                "mAP": self.mean_ap}


def _checked(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions, np.float64)
    labels = np.asarray(labels, np.float64)
    if predictions.ndim != 2 or predictions.shape != labels.shape:
        raise ValueError(
            f"predictions {predictions.shape} and labels {labels.shape} must both be "
            "[videos, classes]"
        )
    if predictions.shape[0] == 0:
        raise ValueError("no examples to evaluate")
    return predictions, labels


def hit_at_one(predictions: np.ndarray, labels: np.ndarray) -> float:
    predictions, labels = _checked(predictions, labels)
    top = np.argmax(predictions, axis=1)
    return float(np.mean(labels[np.arange(len(labels)), top]))


def precision_at_equal_recall_rate(predictions: np.ndarray, labels: np.ndarray) -> float:
    predictions, labels = _checked(predictions, labels)
    total = 0.0
    for scores, truth in zip(predictions, labels, strict=True):
        k = int(truth.sum())
        if k == 0:
            continue
        top = np.argsort(-scores, kind="stable")[:k]
        total += float(np.sum(truth[top] * (scores[top] > 0))) / k
    return total / len(labels)


def average_precision(scores: np.ndarray, truth: np.ndarray, num_positives: float) -> float:
    """Non-interpolated AP of a ranked list: sum over positives at rank i of precision@i,
    divided by `num_positives` (which may exceed the positives present in the list)."""
    if num_positives <= 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = np.asarray(truth, np.float64)[order] > 0
    precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hits.sum() / num_positives)


def _top_k_mask(predictions: np.ndarray, k: int) -> np.ndarray:
    """True where a prediction is among its video's top k (k capped at the class count)."""
    k = min(k, predictions.shape[1])
    top = np.argsort(-predictions, axis=1, kind="stable")[:, :k]
    mask = np.zeros(predictions.shape, bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask


def global_average_precision(
    predictions: np.ndarray, labels: np.ndarray, top_k: int = DEFAULT_TOP_K
) -> float:
    predictions, labels = _checked(predictions, labels)
    if top_k <= 0:
        raise ValueError("top_k must be a positive integer")
    mask = _top_k_mask(predictions, top_k)
    return average_precision(predictions[mask], labels[mask], labels.sum())


def mean_average_precision(
    predictions: np.ndarray, labels: np.ndarray, top_k: int = DEFAULT_TOP_K
) -> float:
    predictions, labels = _checked(predictions, labels)
    mask = _top_k_mask(predictions, top_k)
    aps = [
        average_precision(predictions[mask[:, c], c], labels[mask[:, c], c], labels[:, c].sum())
        for c in range(labels.shape[1])
    ]
    return float(np.mean(aps))


def evaluate(predictions: np.ndarray, labels: np.ndarray, top_k: int = DEFAULT_TOP_K) -> Metrics:
    return Metrics(
        hit_at_one=hit_at_one(predictions, labels),
        perr=precision_at_equal_recall_rate(predictions, labels),
        gap=global_average_precision(predictions, labels, top_k),
        mean_ap=mean_average_precision(predictions, labels, top_k),
        num_examples=int(np.asarray(labels).shape[0]),
    )


def prior_baseline(train_labels: np.ndarray, num_examples: int) -> np.ndarray:
    """The trivial baseline: every clip gets the training label frequencies as its scores."""
    prior = np.asarray(train_labels, np.float64).mean(axis=0)
    return np.tile(prior, (num_examples, 1)).astype(np.float32)
