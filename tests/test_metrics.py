"""Metrics: hand-computed cases and a cross-check against fairlearn."""
from __future__ import annotations

import numpy as np
import pytest

from synaug import metrics as M


# ---------------------------------------------------------------- fairness, by hand
# group a: y_true 1 1 0 0, y_pred 1 0 1 0 -> sel 2/4, TPR 1/2, FPR 1/2
# group b: y_true 1 1 1 0, y_pred 1 1 1 1 -> sel 4/4, TPR 1,   FPR 1
# group c: y_true 1 0 0 0, y_pred 0 0 0 0 -> sel 0,   TPR 0,   FPR 0
Y = np.array([1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0])
P = np.array([1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0])
G = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 4)


def test_demographic_parity_by_hand():
    assert M.demographic_parity(P, G) == pytest.approx(1.0 - 0.0)
    assert M.demographic_parity(P[:8], G[:8]) == pytest.approx(1.0 - 0.5)


def test_equal_opportunity_by_hand():
    assert M.equal_opportunity(Y, P, G) == pytest.approx(1.0)
    assert M.equal_opportunity(Y[:8], P[:8], G[:8]) == pytest.approx(0.5)


def test_equalized_odds_takes_larger_gap():
    # a vs b: TPR gap 0.5, FPR gap 0.5; change b so FPR gap dominates
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    p = np.array([1, 1, 0, 0, 1, 0, 1, 1])  # a: TPR 1 FPR 0; b: TPR .5 FPR 1
    g = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert M.equal_opportunity(y, p, g) == pytest.approx(0.5)
    assert M.equalized_odds(y, p, g) == pytest.approx(1.0)


def test_fair_predictor_has_zero_gaps():
    y = np.array([1, 0, 1, 0])
    g = np.array([0, 0, 1, 1])
    assert M.demographic_parity(y, g) == 0.0
    assert M.equal_opportunity(y, y, g) == 0.0
    assert M.equalized_odds(y, y, g) == 0.0


def test_fairness_rejects_non_binary():
    with pytest.raises(ValueError, match="binary"):
        M.demographic_parity(np.array([0, 2]), np.array([0, 1]))


@pytest.mark.parametrize("seed", range(5))
def test_fairness_matches_fairlearn(seed):
    from fairlearn.metrics import (MetricFrame, demographic_parity_difference,
                                   equalized_odds_difference, true_positive_rate)

    rng = np.random.default_rng(seed)
    n = 400
    g = rng.integers(0, 4, n)
    y = rng.integers(0, 2, n)
    # group-dependent bias so the gaps are not trivially zero
    p = (rng.random(n) < 0.3 + 0.1 * g + 0.3 * y).astype(int)
    assert M.demographic_parity(p, g) == pytest.approx(demographic_parity_difference(y, p, sensitive_features=g))
    assert M.equalized_odds(y, p, g) == pytest.approx(equalized_odds_difference(y, p, sensitive_features=g))
    tpr = MetricFrame(metrics=true_positive_rate, y_true=y, y_pred=p, sensitive_features=g)
    assert M.equal_opportunity(y, p, g) == pytest.approx(float(tpr.difference(method="between_groups")))
    assert M.true_positive_rates(y, p, g) == pytest.approx(tpr.by_group.to_dict())


# ---------------------------------------------------------------- accuracy
def test_confusion_and_per_class():
    y = np.array([0, 0, 1, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0, 0])
    cm = M.confusion_matrix(y, p, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    pc = M.per_class_accuracy(y, p, 4)
    assert pc[:3] == pytest.approx([0.5, 2 / 3, 0.0])
    assert np.isnan(pc[3])
    assert M.top1_accuracy(y, p) == pytest.approx(3 / 6)


def test_confusion_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    assert (M.confusion_matrix(y, p, 7) == confusion_matrix(y, p, labels=range(7))).all()


def test_shot_buckets_boundaries():
    assert M.shot_buckets([500, 101, 100, 20, 19, 1]).tolist() == ["many", "many", "medium", "medium", "few", "few"]


def test_shot_accuracy_by_hand():
    counts = np.array([500, 150, 60, 20, 10, 5])  # many: 0,1  medium: 2,3  few: 4,5
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 5, 5])
    p = np.array([0, 0, 1, 0, 2, 0, 0, 0, 3, 0, 5, 0])
    # per class: 1, .5, .25, 1, 0, .5
    out = M.shot_accuracy(y, p, counts)
    assert set(out) == {"many", "medium", "few", "all"}
    assert out["many"] == pytest.approx((1 + 0.5) / 2)
    assert out["medium"] == pytest.approx((0.25 + 1) / 2)
    assert out["few"] == pytest.approx((0 + 0.5) / 2)
    assert out["all"] == pytest.approx(6 / 12)


def test_shot_accuracy_empty_bucket_is_nan_and_absent_classes_skipped():
    out = M.shot_accuracy(np.array([0, 1]), np.array([0, 0]), np.array([200, 300, 50]))
    assert out["many"] == pytest.approx(0.5)
    assert np.isnan(out["medium"]) and np.isnan(out["few"])


def test_group_accuracy_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    g = np.array([0, 0, 0, 0, 1, 1, 2, 2])   # accs: .75, .5, 0
    out = M.group_accuracy(y, p, g)
    assert set(out) == {"worst", "mean"}
    assert out["worst"] == 0.0
    assert out["mean"] == pytest.approx((0.75 + 0.5 + 0) / 3)
    w = M.group_accuracy(y, p, g, train_group_counts=[700, 200, 100])
    assert w["weighted_mean"] == pytest.approx(0.75 * 0.7 + 0.5 * 0.2 + 0.0 * 0.1)
    assert M.group_accuracy(y, p, g, {0: 1, 1: 1, 2: 2})["weighted_mean"] == pytest.approx((0.75 + 0.5) / 4)
    with pytest.raises(ValueError, match="group 2"):
        M.group_accuracy(y, p, g, {0: 1, 1: 1})


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        M.top1_accuracy(np.array([0, 1]), np.array([0]))
