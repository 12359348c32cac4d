"""The YouTube-8M evaluation metrics, as youtube-8m's eval_util.py defines them.

All functions take `predictions` and `labels`, both [videos, classes]; labels are 0/1.

- hit@1: fraction of videos whose highest-scored class is a true label.
- PERR (precision at equal recall rate): per video, the precision of its top k predictions where
  k is its number of true labels (a prediction only counts when its score is > 0); a video
  without labels counts as 0; averaged over videos.
- GAP@k: every video contributes its top k (class, score) predictions to one pooled list; GAP is
  the non-interpolated average precision of that list sorted by score, with recall measured
  against all true labels of all videos (not only those in the top k).
- mAP: per class, the non-interpolated AP of the predictions that made their video's top k,
  with recall measured against all of that class's true labels; averaged over the classes that
  have at least one true label, as youtube-8m's eval (MeanAveragePrecisionCalculator with
  filter_empty_classes=True). `include_empty_classes=True` averages over every class instead,
  a class without positives counting AP 0. With no positive at all, mAP (like GAP) is 0.

Equal scores (youtube-8m leaves them to argpartition, and to a seeded shuffle of its heap's
internal order, so its result depends on its batch size):
- hit@1 takes the lowest class index among the top scores (numpy's argmax, as youtube-8m);
- a top-k selection (PERR's top k, GAP's and mAP's top 20) keeps, among scores tied at the k-th
  place, the lower class indices;
- an AP scores a run of tied scores by its mean over every order of the run: the expectation of
  youtube-8m's shuffle, which is there "to avoid overestimating the AP".
With distinct scores every metric equals youtube-8m's.
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
    divided by `num_positives` (which may exceed the positives present in the list).

    A run of t tied scores holding p positives is scored by its mean over all orders: its item
    at place j (0-based) of the run is a positive with probability p/t, and then has on average
    j (p - 1) / (t - 1) positives before it within the run.
    """
    scores = np.asarray(scores, np.float64)
    if num_positives <= 0 or scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    return float(_tie_averaged_precisions(scores[order], np.asarray(truth)[order] > 0).sum()
                 / num_positives)


def _tie_averaged_precisions(scores: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Per place of a list sorted by descending score: E[hit * precision@place] over the orders
    of each run of equal scores."""
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    sizes = np.diff(np.r_[starts, len(scores)])
    run_positives = np.add.reduceat(hits.astype(np.float64), starts)
    run = np.repeat(np.arange(len(starts)), sizes)
    t, p = sizes[run].astype(np.float64), run_positives[run]
    before = (np.cumsum(run_positives) - run_positives)[run]
    place = np.arange(len(scores)) - starts[run]
    share = np.where(t > 1, (p - 1) / np.maximum(t - 1, 1), 0.0)
    return (p / t) * (before + 1 + place * share) / (np.arange(len(scores)) + 1)


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
    predictions: np.ndarray,
    labels: np.ndarray,
    top_k: int = DEFAULT_TOP_K,
    include_empty_classes: bool = False,
) -> float:
    """Mean of the per-class APs over the classes with a positive (youtube-8m), or over every
    class when `include_empty_classes` (a class without positives then counts 0)."""
    predictions, labels = _checked(predictions, labels)
    mask = _top_k_mask(predictions, top_k)
    positives = labels.sum(axis=0)
    classes = range(labels.shape[1]) if include_empty_classes else np.flatnonzero(positives > 0)
    aps = [
        average_precision(predictions[mask[:, c], c], labels[mask[:, c], c], positives[c])
        for c in classes
    ]
    return float(np.mean(aps)) if aps else 0.0


def evaluate(
    predictions: np.ndarray,
    labels: np.ndarray,
    top_k: int = DEFAULT_TOP_K,
    include_empty_classes: bool = False,
) -> Metrics:
    return Metrics(
        hit_at_one=hit_at_one(predictions, labels),
        perr=precision_at_equal_recall_rate(predictions, labels),
        gap=global_average_precision(predictions, labels, top_k),
        mean_ap=mean_average_precision(predictions, labels, top_k, include_empty_classes),
        num_examples=int(np.asarray(labels).shape[0]),
    )


def prior_baseline(train_labels: np.ndarray, num_examples: int) -> np.ndarray:
    """The trivial baseline: every clip gets the training label frequencies as its scores."""
    prior = np.asarray(train_labels, np.float64).mean(axis=0)
    return np.tile(prior, (num_examples, 1)).astype(np.float32)
