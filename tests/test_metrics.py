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
    assert set(out) == {"worst", "mean", "unweighted_mean"}
    assert out["worst"] == 0.0
    assert out["mean"] == pytest.approx(4 / 8)  # plain accuracy (DFR's mean_accuracy = all_correct / all_total)
    assert out["unweighted_mean"] == pytest.approx((0.75 + 0.5 + 0) / 3)
    w = M.group_accuracy(y, p, g, train_group_counts=[700, 200, 100])
    assert w["weighted_mean"] == pytest.approx(0.75 * 0.7 + 0.5 * 0.2 + 0.0 * 0.1)
    assert M.group_accuracy(y, p, g, {0: 1, 1: 1, 2: 2})["weighted_mean"] == pytest.approx((0.75 + 0.5) / 4)
    with pytest.raises(ValueError, match="group 2"):
        M.group_accuracy(y, p, g, {0: 1, 1: 1})


def _dfr_get_results_mean(y, p, g):
    """Transcription of ``get_results`` + ``update_dict`` (PolinaKirichenko/deep_feature_reweighting,
    utils.py): per-group AverageMeters, then mean_accuracy = all_correct / all_total."""
    sums, counts = {}, {}
    correct = p == y
    for gv in np.unique(g):
        mask = g == gv
        n = int(mask.sum())
        corr = int(correct[mask].sum())
        sums[gv] = sums.get(gv, 0) + (corr / n) * n  # AverageMeter.update(corr / n, n)
        counts[gv] = counts.get(gv, 0) + n
    return sum(sums.values()) / sum(counts.values())


def test_group_mean_is_dfr_mean_accuracy():
    rng = np.random.default_rng(3)
    y, g4 = rng.integers(0, 2, 300), rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.7, y, 1 - y)
    assert M.group_accuracy(y, p, g4)["mean"] == pytest.approx(_dfr_get_results_mean(y, p, g4))


# ---------------------------------------------------------------- more fairness gaps, by hand
# g0: y 1 1 1 1 0 0 0 0, p 1 1 1 0 0 0 0 1 -> TPR 3/4, FPR 1/4, selection 1/2
# g1: y 1 1 0 0 0 0,     p 1 1 0 0 0 1     -> TPR 1,   FPR 1/4, selection 1/2
Y2 = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0])
P2 = np.array([1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1])
G2 = np.array([0] * 8 + [1] * 6)


def test_binary_gaps_by_hand():
    assert M.demographic_parity(P2, G2) == pytest.approx(0.0)
    assert M.equal_opportunity(Y2, P2, G2) == pytest.approx(0.25)       # TPR gap
    assert M.equalized_odds(Y2, P2, G2) == pytest.approx(0.25)          # max(.25, 0)
    assert M.equalized_odds_mean(Y2, P2, G2) == pytest.approx(0.125)    # (.25 + 0) / 2
    # class 0: P(yhat=0|y=0) = .75 in both groups -> gap 0; class 1: .75 vs 1 -> gap .25
    assert M.class_accuracy_gaps(Y2, P2, G2) == pytest.approx({0: 0.0, 1: 0.25})
    assert M.class_accuracy_gap(Y2, P2, G2, "mean") == pytest.approx(0.125)
    assert M.class_accuracy_gap(Y2, P2, G2, "max") == pytest.approx(0.25)
    # DP at other base rates: g0 .5*.25 + .5*.75 = .5; g1 .8*.25 + .2*1 = .4
    assert M.demographic_parity_population(Y2, P2, G2, {0: (1, 1), 1: (0.8, 0.2)}) == pytest.approx(0.1)
    # at the rows' own shares it is the plain DP
    assert M.demographic_parity_population(Y2, P2, G2, {0: (4, 4), 1: (4, 2)}) == pytest.approx(0.0)
    f = M.fairness_metrics(Y2, P2, G2)
    assert f["demographic_parity_population"] == pytest.approx(f["demographic_parity"])
    assert (f["tpr_gap"], f["fpr_gap"]) == pytest.approx((0.25, 0.0))
    assert set(f) == set(M.DEFINITIONS)  # every number has its written definition
    with pytest.raises(ValueError, match="reduce"):
        M.class_accuracy_gap(Y2, P2, G2, "median")


def test_class_accuracy_gap_multiclass_by_hand():
    # group a: class accuracies 1/2, 1, 1/2; group b: 3/4, 0, 1 -> gaps .25, 1, .5
    y = np.array([0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 1, 2])
    p = np.array([0, 1, 1, 1, 2, 0, 0, 0, 0, 1, 0, 2])
    g = np.array(["a"] * 6 + ["b"] * 6)
    assert M.class_accuracy_gap(y, p, g, reduce="mean") == pytest.approx((0.25 + 1 + 0.5) / 3)
    assert M.class_accuracy_gap(y, p, g, reduce="max") == pytest.approx(1.0)
    # a class seen in one group only has gap 0 (no other group to compare with)
    assert M.class_accuracy_gap([0, 0, 1], [0, 1, 1], ["a", "a", "b"], "max") == 0.0


def _jung_eopp(y, p, g, num_groups, num_classes, batch=7):
    """Transcription of ``GenericTrainer.evaluate`` (naver-ai/cgl_fairness, trainer/trainer_factory.py;
    ``dcaA`` / ``dcaM`` in sangwon-jung94/FairDRO's trainer/trainer_factory.py): per-(group, class)
    correct counts over batches, divided by the counts, max - min over groups (dim 0) per class,
    then ``eval_avg_eopp`` = mean and ``eval_max_eopp`` = max over classes."""
    eopp = np.zeros((num_groups, num_classes))
    count = np.zeros((num_groups, num_classes))
    for s in range(0, len(y), batch):
        labels, groups, preds = y[s:s + batch], g[s:s + batch], p[s:s + batch]
        acc = (preds == labels).astype(float)
        for gg in range(num_groups):
            for ll in range(num_classes):
                eopp[gg, ll] += acc[(groups == gg) * (labels == ll)].sum()
                count[gg, ll] += np.sum((groups == gg) * (labels == ll))
    eopp = eopp / count
    max_eopp = np.max(eopp, axis=0) - np.min(eopp, axis=0)
    return float(np.mean(max_eopp)), float(np.max(max_eopp))


@pytest.mark.parametrize("seed,G,C", [(0, 4, 2), (1, 4, 2), (2, 3, 5), (3, 2, 3)])
def test_class_accuracy_gap_matches_jung_et_al(seed, G, C):
    rng = np.random.default_rng(seed)
    n = 600
    g = rng.integers(0, G, n)
    y = rng.integers(0, C, n)
    p = np.where(rng.random(n) < 0.5 + 0.1 * g, y, rng.integers(0, C, n))
    avg, mx = _jung_eopp(y, p, g, G, C)
    assert M.class_accuracy_gap(y, p, g, reduce="mean") == pytest.approx(avg)
    assert M.class_accuracy_gap(y, p, g, reduce="max") == pytest.approx(mx)
    if C == 2:  # two classes: the class-wise gaps are the FPR and TPR gaps
        assert avg == pytest.approx(M.equalized_odds_mean(y, p, g))
        assert mx == pytest.approx(M.equalized_odds(y, p, g))


@pytest.mark.parametrize("seed", range(4))
def test_new_gaps_match_fairlearn(seed):
    from fairlearn.metrics import equal_opportunity_difference, equalized_odds_difference

    rng = np.random.default_rng(seed)
    n = 500
    g = rng.integers(0, 4, n)
    y = rng.integers(0, 2, n)
    p = (rng.random(n) < 0.2 + 0.1 * g + 0.4 * y).astype(int)
    assert M.equal_opportunity(y, p, g) == pytest.approx(equal_opportunity_difference(y, p, sensitive_features=g))
    assert M.equalized_odds_mean(y, p, g) == pytest.approx(
        equalized_odds_difference(y, p, sensitive_features=g, agg="mean"))
    assert M.equalized_odds(y, p, g) == pytest.approx(
        equalized_odds_difference(y, p, sensitive_features=g, agg="worst_case"))


def test_definition_sets_orderings():
    """What each reading of DP / EO / ED allows: ED >= EO under fairlearn / Jung's reductions,
    ED <= EO under max-mean, either under 'paper'; on a (group, class)-balanced test set the
    plain DP never exceeds the averaged ED, the DP at other base rates can."""
    assert M.HEADLINE_SET in M.DEFINITION_SETS
    for d in M.DEFINITION_SETS.values():
        assert {d["DP"], d["EO"], d["ED"]} <= set(M.DEFINITIONS) and d["label"]
    rng = np.random.default_rng(0)
    seen = {name: set() for name in M.DEFINITION_SETS}
    for _ in range(200):
        g = np.repeat(np.arange(4), 40)
        y = np.tile(np.repeat([0, 1], 20), 4)  # balanced cells
        acc = rng.uniform(0.6, 1.0, size=(4, 2))
        p = np.where(rng.random(160) < acc[g, y], y, 1 - y)
        f = M.fairness_metrics(y, p, g, {k: (0.3 + 0.1 * k, 0.7 - 0.1 * k) for k in range(4)})
        assert f["demographic_parity"] <= f["equalized_odds_mean"] + 1e-12
        for name in M.DEFINITION_SETS:
            v = M.definition_set_values(f, name)
            eps = 1e-12  # ties are ties, not orders
            seen[name].add((bool(v["ED"] < v["EO"] - eps), bool(v["ED"] > v["EO"] + eps),
                            bool(v["DP"] > v["ED"] + eps)))
    assert not any(lt for lt, _, _ in seen["fairlearn"]) and not any(lt for lt, _, _ in seen["jung2022"])
    assert not any(gt for _, gt, _ in seen["max-mean"])
    assert not any(dp for _, _, dp in seen["test-dp"])
    # the paper's Table 3 has rows with DP > ED > EO and with DP > EO > ED
    assert seen["paper"] >= {(True, False, True), (False, True, True)}


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        M.top1_accuracy(np.array([0, 1]), np.array([0]))
