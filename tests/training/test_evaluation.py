"""The YouTube-8M metrics against values worked out by hand and against a plain restatement of
youtube-8m's eval_util formulas (argpartition top k, AP of a sorted list, mAP over the classes
that have a positive)."""

import itertools

import numpy as np
import pytest

from shared import evaluation

# Three clips, four classes; all scores distinct.
PREDICTIONS = np.array(
    [
        [0.9, 0.8, 0.1, 0.05],  # clip 0: true {0}
        [0.2, 0.7, 0.6, 0.3],  # clip 1: true {2, 3}
        [0.4, 0.35, 0.15, 0.5],  # clip 2: true {1}
    ]
)
LABELS = np.array([[1, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0]])


def test_hit_at_one():
    # top-1: class 0 (true), class 1 (false), class 3 (false)
    assert evaluation.hit_at_one(PREDICTIONS, LABELS) == pytest.approx(1 / 3)


def test_perr():
    # clip 0: top 1 = {0}, 1/1; clip 1: top 2 = {1, 2}, 1/2; clip 2: top 1 = {3}, 0/1
    assert evaluation.precision_at_equal_recall_rate(PREDICTIONS, LABELS) == pytest.approx(
        (1 + 0.5 + 0) / 3
    )


def test_perr_counts_a_clip_without_labels_as_zero_and_ignores_zero_scores():
    predictions = np.array([[0.0, 0.0], [0.3, 0.1]])
    labels = np.array([[1, 0], [0, 0]])
    # clip 0: its top score is 0, which youtube-8m does not count as a hit; clip 1: no labels
    assert evaluation.precision_at_equal_recall_rate(predictions, labels) == 0.0


def test_gap_pools_the_top_k_of_every_clip():
    # top 2 per clip, pooled and sorted: 0.9 T, 0.8 F, 0.7 F, 0.6 T, 0.5 F, 0.4 F
    # positives in all labels: 4. AP = (1/1 + 2/4) / 4
    assert evaluation.global_average_precision(PREDICTIONS, LABELS, top_k=2) == pytest.approx(
        (1.0 + 0.5) / 4
    )


def test_gap_with_every_prediction():
    # all 12 scores sorted: .9T .8F .7F .6T .5F .4F .35T .3T .2F .15F .1F .05F
    expected = (1 / 1 + 2 / 4 + 3 / 7 + 4 / 8) / 4
    assert evaluation.global_average_precision(PREDICTIONS, LABELS, top_k=20) == pytest.approx(
        expected
    )


def test_map_averages_per_class_ap_over_the_classes_with_positives():
    # top 2 per clip. class 0 gets 0.9 (T, clip 0) and 0.4 (F, clip 2): AP = 1/1 / 1 = 1
    # class 1 gets 0.8 F, 0.7 F (clip 2's 0.35 is not in its top 2): AP = 0 / 1 = 0
    # class 2 gets 0.6 T: AP = 1/1 / 1 = 1
    # class 3 gets 0.5 F (clip 2); clip 1's 0.3 is outside its top 2: AP = 0 / 1 = 0
    assert evaluation.mean_average_precision(PREDICTIONS, LABELS, top_k=2) == pytest.approx(0.5)


def test_map_leaves_classes_without_positives_out_unless_asked():
    predictions = np.array([[0.9, 0.1], [0.8, 0.2]])
    labels = np.array([[1, 0], [1, 0]])
    assert evaluation.mean_average_precision(predictions, labels) == pytest.approx(1.0)
    assert evaluation.mean_average_precision(
        predictions, labels, include_empty_classes=True
    ) == pytest.approx(0.5)
    assert evaluation.mean_average_precision(predictions, np.zeros((2, 2))) == 0.0


def test_average_precision_divides_by_all_positives():
    # ranked T F T, 4 positives in total (one never ranked): (1/1 + 2/3) / 4
    ap = evaluation.average_precision(np.array([0.9, 0.5, 0.7]), np.array([1, 1, 0]), 4)
    assert ap == pytest.approx((1 + 2 / 3) / 4)


def test_evaluate_and_perfect_scores():
    metrics = evaluation.evaluate(LABELS * 0.9 + 0.05, LABELS)
    assert metrics.as_dict() == {"hit@1": 1.0, "PERR": 1.0, "GAP@20": 1.0, "mAP": 1.0}
    assert metrics.num_examples == 3


def test_prior_baseline_scores_label_frequencies():
    baseline = evaluation.prior_baseline(np.array([[1, 0], [1, 1]]), 3)
    np.testing.assert_allclose(baseline, [[1.0, 0.5]] * 3)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must both be"):
        evaluation.evaluate(np.zeros((2, 3)), np.zeros((2, 4)))


# --- a plain restatement of youtube-8m's eval_util, for scores without ties ------------------


def y8m_ap(scores: list[float], truth: list[float], num_positives: float) -> float:
    """AveragePrecisionCalculator.ap_at_n(n=None, total_num_positives=num_positives)."""
    if num_positives == 0:
        return 0.0
    ranked = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    hits, ap = 0, 0.0
    for rank, i in enumerate(ranked, start=1):
        if truth[i] > 0:
            hits += 1
            ap += hits / rank / num_positives
    return ap


def y8m_metrics(predictions: np.ndarray, labels: np.ndarray, top_k: int = 20) -> dict:
    videos, classes = predictions.shape
    hit = np.mean(labels[np.arange(videos), np.argmax(predictions, 1)])
    perr = 0.0
    for p, y in zip(predictions, labels, strict=True):
        n = int(y.sum())
        top = np.argpartition(p, -n)[-n:]
        perr += sum(y[i] for i in top if p[i] > 0) / top.size
    by_class = [([], []) for _ in range(classes)]
    k = min(top_k, classes)
    for p, y in zip(predictions, labels, strict=True):
        for i in np.argpartition(p, -k)[-k:]:
            by_class[i][0].append(p[i])
            by_class[i][1].append(y[i])
    positives = labels.sum(axis=0)
    aps = [y8m_ap(s, t, positives[c]) if s else 0.0
           for c, (s, t) in enumerate(by_class) if positives[c] > 0]
    pooled = [x for s, _ in by_class for x in s], [x for _, t in by_class for x in t]
    return {"hit@1": hit, "PERR": perr / videos, "GAP@20": y8m_ap(*pooled, positives.sum()),
            "mAP": np.mean(aps)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_metrics_equal_youtube_8m_on_distinct_scores(seed):
    rng = np.random.default_rng(seed)
    predictions = rng.random((60, 30))
    labels = (rng.random((60, 30)) < 0.08).astype(float)
    labels[np.arange(60), rng.integers(0, 30, 60)] = 1
    labels[:, [4, 17]] = 0  # two classes without any positive
    expected = y8m_metrics(predictions, labels)
    assert evaluation.evaluate(predictions, labels).as_dict() == pytest.approx(expected)


def test_map_with_two_empty_classes_left_out_and_counted():
    # six classes, two of them without a positive in this set; a perfect ranking
    labels = np.array([[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0]], float)
    predictions = labels * 0.5 + np.linspace(0.01, 0.3, 18).reshape(3, 6)
    assert evaluation.mean_average_precision(predictions, labels) == pytest.approx(1.0)
    assert evaluation.mean_average_precision(
        predictions, labels, include_empty_classes=True
    ) == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    ("scores", "truth", "num_positives"),
    [
        ([0.5, 0.5, 0.5, 0.5], [1, 0, 0, 1], 2),
        ([0.9, 0.5, 0.5, 0.5, 0.2, 0.2], [0, 1, 0, 1, 1, 0], 4),
        ([0.7, 0.7, 0.3, 0.3, 0.3], [1, 1, 0, 1, 0], 3),
    ],
)
def test_tied_scores_give_the_mean_ap_over_every_order_of_the_ties(scores, truth, num_positives):
    # youtube-8m shuffles before a stable sort: every input order gives one tie order
    orders = list(itertools.permutations(range(len(scores))))
    expected = np.mean([
        y8m_ap([scores[i] for i in order], [truth[i] for i in order], num_positives)
        for order in orders
    ])
    assert evaluation.average_precision(np.array(scores), np.array(truth), num_positives) == (
        pytest.approx(expected)
    )


def test_ties_in_top_k_and_perr_keep_the_lower_class_index():
    predictions = np.array([[0.5, 0.5, 0.5, 0.1]])
    # PERR: one true label, the top 1 among three tied is class 0
    assert evaluation.precision_at_equal_recall_rate(predictions, np.array([[1, 0, 0, 0]])) == 1
    assert evaluation.precision_at_equal_recall_rate(predictions, np.array([[0, 0, 1, 0]])) == 0
    # GAP@2 keeps classes 0 and 1 of the tie: class 2's positive is not in the list
    assert evaluation.global_average_precision(
        predictions, np.array([[0, 0, 1, 0]]), top_k=2
    ) == 0.0
    # hit@1: numpy's argmax, the lowest index among the top scores (as youtube-8m)
    assert evaluation.hit_at_one(predictions, np.array([[1, 0, 0, 0]])) == 1.0
