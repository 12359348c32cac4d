"""The YouTube-8M metrics against values worked out by hand."""

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


def test_map_averages_per_class_ap_over_all_classes():
    # top 2 per clip. class 0 gets 0.9 (T, clip 0) and 0.4 (F, clip 2): AP = 1/1 / 1 = 1
    # class 1 gets 0.8 F, 0.7 F (clip 2's 0.35 is not in its top 2): AP = 0 / 1 = 0
    # class 2 gets 0.6 T: AP = 1/1 / 1 = 1
    # class 3 gets 0.5 F (clip 2); clip 1's 0.3 is outside its top 2: AP = 0 / 1 = 0
    assert evaluation.mean_average_precision(PREDICTIONS, LABELS, top_k=2) == pytest.approx(0.5)


def test_map_counts_a_class_without_positives_as_zero():
    predictions = np.array([[0.9, 0.1], [0.8, 0.2]])
    labels = np.array([[1, 0], [1, 0]])
    assert evaluation.mean_average_precision(predictions, labels) == pytest.approx(0.5)


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
