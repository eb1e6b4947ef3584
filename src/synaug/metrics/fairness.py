"""Group-fairness gaps over a sensitive attribute (the manifest's ``group``), with their definitions.

Every gap is a max - min over the groups that occur (0 = perfectly fair; with two groups it is
the absolute difference). Groups where a rate is undefined (no positives for TPR, no
negatives for FPR, no rows of a class for a class-wise accuracy) are left out of that rate.

Binary metrics (class 1 is the positive class):

========================================= =================================================================
``demographic_parity`` (DP)               gap of P(ŷ=1 | g) on the evaluated rows (Feldman et al. 2015;
                                          fairlearn ``demographic_parity_difference``)
``demographic_parity_population``         the same with each group's class shares set to given shares
                                          (e.g. its real training shares): gap over g of
                                          sum_y P(y | g) P(ŷ=1 | y, g)
``equal_opportunity`` (EO)                gap of TPR = P(ŷ=1 | y=1, g) (Hardt et al. 2016; fairlearn
                                          ``equal_opportunity_difference``)
``equalized_odds`` (ED)                   max(TPR gap, FPR gap) (Hardt et al. 2016; fairlearn
                                          ``equalized_odds_difference``, ``agg="worst_case"``)
``equalized_odds_mean``                   (TPR gap + FPR gap) / 2 (fairlearn ``agg="mean"``)
========================================= =================================================================

Any number of classes: :func:`class_accuracy_gap` (Jung et al. 2022): for every class y the gap
over groups of P(ŷ=y | y, g), then the mean (``class_accuracy_gap_mean``) or the max
(``class_accuracy_gap_max``) over classes. For two classes the class-0 gap is the FPR gap and
the class-1 gap the TPR gap, so the mean equals ``equalized_odds_mean`` and the max
``equalized_odds``.

Which of them the paper's Table 3 calls DP / EO / ED is not stated; :data:`DEFINITION_SETS`
lists the candidate readings. Run reports lead with :data:`HEADLINE_SET` (fairlearn's standard
definitions, what a practitioner knows) with :data:`PAPER_SET` beside them; the Table 3
reproduction leads with :data:`PAPER_SET` (see ``synaug.experiments.table3`` for the check on
real predictions).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


def _binary(y, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    vals = np.unique(a)
    if not np.isin(vals, [0, 1]).all():
        raise ValueError(f"{name} must be binary (0/1), found values {vals[:5].tolist()}")
    return a.astype(np.int64)


def _ints(y, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and not np.all(np.equal(np.mod(a, 1), 0)):
        raise ValueError(f"{name} must hold integer labels")
    return a.astype(np.int64)


def _groups(group, n: int) -> np.ndarray:
    g = np.asarray(group)
    if g.shape != (n,):
        raise ValueError(f"group must have one entry per sample ({n}), got shape {g.shape}")
    return g


def _gap(rates) -> float:
    r = [x for x in rates if not np.isnan(x)]
    return float(max(r) - min(r)) if r else float("nan")


def _rate(pred: np.ndarray, mask: np.ndarray) -> float:
    return float(pred[mask].mean()) if mask.any() else float("nan")


def _key(k):
    return k.item() if hasattr(k, "item") else k


def selection_rates(y_pred, group) -> dict:
    """``P(yhat = 1 | group)`` for each group."""
    p = _binary(y_pred, "y_pred")
    g = _groups(group, len(p))
    return {_key(k): _rate(p, g == k) for k in np.unique(g)}


def true_positive_rates(y_true, y_pred, group) -> dict:
    """``P(yhat = 1 | y = 1, group)`` for each group (nan where a group has no positives)."""
    t, p = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    g = _groups(group, len(t))
    return {_key(k): _rate(p, (g == k) & (t == 1)) for k in np.unique(g)}


def false_positive_rates(y_true, y_pred, group) -> dict:
    """``P(yhat = 1 | y = 0, group)`` for each group (nan where a group has no negatives)."""
    t, p = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    g = _groups(group, len(t))
    return {_key(k): _rate(p, (g == k) & (t == 0)) for k in np.unique(g)}


def demographic_parity(y_pred, group) -> float:
    """Demographic parity gap: max - min over groups of ``P(yhat = 1 | group)``.

    Parameters
    ----------
    y_pred : array-like of {0, 1}, shape (n,)
    group : array-like, shape (n,)
        Sensitive attribute of each sample.

    Returns
    -------
    float
        Equals fairlearn's ``demographic_parity_difference``.
    """
    return _gap(selection_rates(y_pred, group).values())


def demographic_parity_population(y_true, y_pred, group, class_shares: Mapping) -> float:
    """Demographic parity gap with each group's class shares set to ``class_shares``.

    ``max_g - min_g`` of ``sum_y pi[g][y] * P(yhat = 1 | y, g)``, the selection rate the
    classifier would have on a population whose class shares in group ``g`` are ``pi[g]``
    (e.g. the real training shares), computed from the per-(group, class) rates of the
    evaluated rows. On a test set balanced over (group, class) cells the plain
    :func:`demographic_parity` cannot exceed :func:`equalized_odds_mean`; this version
    measures DP at the population's base rates instead. Passing the evaluated rows' own
    shares gives back :func:`demographic_parity` exactly.

    Parameters
    ----------
    y_true, y_pred : array-like of {0, 1}, shape (n,)
    group : array-like, shape (n,)
    class_shares : mapping
        ``group -> (share of class 0, share of class 1)``; normalised here. Groups missing
        from the mapping, or with a needed class absent from the evaluated rows, are skipped.
    """
    t, p = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    g = _groups(group, len(t))
    rates = []
    for k in np.unique(g):
        w = class_shares.get(_key(k))
        if w is None:
            continue
        w = np.asarray(w, dtype=float)
        if w.shape != (2,) or w.sum() <= 0 or (w < 0).any():
            raise ValueError(f"class_shares[{_key(k)!r}] must be two non-negative shares, got {w.tolist()}")
        w = w / w.sum()
        r = [_rate(p, (g == k) & (t == y)) for y in (0, 1)]
        if any(np.isnan(r[y]) and w[y] > 0 for y in (0, 1)):
            continue
        rates.append(float(sum(w[y] * r[y] for y in (0, 1) if w[y] > 0)))
    return _gap(rates)


def equal_opportunity(y_true, y_pred, group) -> float:
    """Equal-opportunity gap: max - min over groups of the true-positive rate.

    Parameters
    ----------
    y_true, y_pred : array-like of {0, 1}, shape (n,)
    group : array-like, shape (n,)

    Returns
    -------
    float
        Max minus min of ``P(yhat = 1 | y = 1, group)`` (groups without positives skipped);
        equals fairlearn's ``equal_opportunity_difference``.
    """
    return _gap(true_positive_rates(y_true, y_pred, group).values())


def _tpr_fpr_gaps(y_true, y_pred, group) -> tuple[float, float]:
    return (_gap(true_positive_rates(y_true, y_pred, group).values()),
            _gap(false_positive_rates(y_true, y_pred, group).values()))


def equalized_odds(y_true, y_pred, group) -> float:
    """Equalized-odds gap, worst case: the larger of the TPR gap and the FPR gap over groups.

    Parameters
    ----------
    y_true, y_pred : array-like of {0, 1}, shape (n,)
    group : array-like, shape (n,)

    Returns
    -------
    float
        ``max(TPR gap, FPR gap)``, each a max - min over groups; equals fairlearn's
        ``equalized_odds_difference(..., agg="worst_case")``. Never below
        :func:`equal_opportunity`.
    """
    tpr, fpr = _tpr_fpr_gaps(y_true, y_pred, group)
    return float(np.nanmax([tpr, fpr])) if not (np.isnan(tpr) and np.isnan(fpr)) else float("nan")


def equalized_odds_mean(y_true, y_pred, group) -> float:
    """Equalized-odds gap, averaged: ``(TPR gap + FPR gap) / 2``, each a max - min over groups.

    Equals fairlearn's ``equalized_odds_difference(..., agg="mean")`` and, for two classes,
    :func:`class_accuracy_gap` with ``reduce="mean"``. Below :func:`equal_opportunity`
    exactly when the FPR gap is smaller than the TPR gap.
    """
    tpr, fpr = _tpr_fpr_gaps(y_true, y_pred, group)
    return float(np.nanmean([tpr, fpr])) if not (np.isnan(tpr) and np.isnan(fpr)) else float("nan")


def class_accuracy_gaps(y_true, y_pred, groups) -> dict:
    """For every class y in ``y_true``: max - min over groups of ``P(yhat = y | y, group)``.

    Groups without rows of class ``y`` are left out of that class's gap (a class seen in
    one group only has gap 0).
    """
    t, p = _ints(y_true, "y_true"), _ints(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    g = _groups(groups, len(t))
    out = {}
    for y in np.unique(t):
        accs = [_rate((p == y).astype(float), (t == y) & (g == k)) for k in np.unique(g)]
        out[int(y)] = _gap(accs)
    return out


def class_accuracy_gap(y_true, y_pred, groups, reduce: str = "mean") -> float:
    """Class-wise accuracy gap between groups (Jung et al. 2022, "Learning fair classifiers with
    partially annotated group labels", CVPR; their ``eval_avg_eopp`` / ``eval_max_eopp``).

    For every class ``y``: ``max_g P(yhat = y | y, g) - min_g P(yhat = y | y, g)`` over the
    groups ``g`` that have rows of class ``y``; then the mean (``reduce="mean"``) or the max
    (``reduce="max"``) of these gaps over the classes. Works for any number of classes and
    groups; with two classes the per-class gaps are the FPR gap (class 0) and the TPR gap
    (class 1).

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
    groups : array-like, shape (n,)
        Sensitive attribute of each sample.
    reduce : {"mean", "max"}
        How the per-class gaps are combined.

    Returns
    -------
    float
        nan when there are no samples.
    """
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    gaps = [v for v in class_accuracy_gaps(y_true, y_pred, groups).values() if not np.isnan(v)]
    if not gaps:
        return float("nan")
    return float(np.mean(gaps) if reduce == "mean" else np.max(gaps))


# ---------------------------------------------------------------------------- definitions
#: metric key -> its definition, as written next to every number in metrics.json and reports
DEFINITIONS = {
    "demographic_parity": "max-min over groups of P(ŷ=1|g) on the test rows (Feldman et al. 2015; "
                          "fairlearn demographic_parity_difference)",
    "demographic_parity_population": "max-min over groups of Σ_y P(y|g)·P(ŷ=1|y,g): the test rows' per-(group, "
                                     "class) rates weighted by each group's class shares in the real training "
                                     "data (DP at the population's base rates; equals the plain DP when the test "
                                     "rows have those shares)",
    "equal_opportunity": "max-min over groups of TPR = P(ŷ=1|y=1,g) (Hardt et al. 2016; fairlearn "
                         "equal_opportunity_difference)",
    "equalized_odds": "max(TPR gap, FPR gap), each max-min over groups (Hardt et al. 2016; fairlearn "
                      "equalized_odds_difference, agg='worst_case')",
    "equalized_odds_mean": "(TPR gap + FPR gap) / 2, each max-min over groups (fairlearn equalized_odds_difference, "
                           "agg='mean'); for 2 classes equal to Jung et al. 2022's class-wise gap averaged over "
                           "classes",
    "class_accuracy_gap_mean": "mean over classes y of max-min over groups of P(ŷ=y|y,g) (Jung et al. 2022, "
                               "eval_avg_eopp)",
    "class_accuracy_gap_max": "max over classes y of max-min over groups of P(ŷ=y|y,g) (Jung et al. 2022, "
                              "eval_max_eopp)",
    "tpr_gap": "max-min over groups of P(ŷ=1|y=1,g)",
    "fpr_gap": "max-min over groups of P(ŷ=1|y=0,g)",
}

#: readings of the paper's "DP / EO / ED" (Table 3), each a metric key per name
DEFINITION_SETS = {
    "paper": {"DP": "demographic_parity_population", "EO": "equal_opportunity", "ED": "equalized_odds_mean",
              "label": "DP at the training population's base rates; EO = TPR gap (Hardt et al.); ED = mean of "
                       "the TPR and FPR gaps (= Jung et al.'s class-wise gap, mean over classes). The only set "
                       "below under which every pairwise order in the paper's Table 3 can occur"},
    "fairlearn": {"DP": "demographic_parity", "EO": "equal_opportunity", "ED": "equalized_odds",
                  "label": "fairlearn / Hardt et al.: DP on the test rows, EO = TPR gap, ED = max(TPR gap, "
                           "FPR gap); ED >= EO always"},
    "jung2022": {"DP": "demographic_parity", "EO": "class_accuracy_gap_mean", "ED": "class_accuracy_gap_max",
                 "label": "Jung et al. 2022's two reductions of the class-wise gap: EO = mean over classes, "
                          "ED = max over classes; ED >= EO always"},
    "test-dp": {"DP": "demographic_parity", "EO": "equal_opportunity", "ED": "equalized_odds_mean",
                "label": "as 'paper' but DP on the test rows; on a (group, class)-balanced test set "
                         "DP <= ED always"},
    "max-mean": {"DP": "demographic_parity", "EO": "class_accuracy_gap_max", "ED": "equalized_odds_mean",
                 "label": "EO = class-wise gap, max over classes (Jung et al.'s eval_max_eopp); ED = mean of "
                          "the TPR and FPR gaps; ED <= EO always"},
}
#: the set run reports lead with: fairlearn's demographic_parity_difference,
#: equal_opportunity_difference, equalized_odds_difference (the others are listed beneath it)
HEADLINE_SET = "fairlearn"
#: the reading of the paper's Table 3: beside the headline in run reports, the headline of the
#: Table 3 reproduction (``synaug.experiments.table3``)
PAPER_SET = "paper"


def fairness_metrics(y_true, y_pred, group, class_shares: Mapping | None = None) -> dict[str, float]:
    """Every binary fairness gap of this module (keys of :data:`DEFINITIONS`) as floats.

    ``class_shares`` (``group -> (share of class 0, share of class 1)``) sets the base rates of
    ``demographic_parity_population``; without it the evaluated rows' own shares are used
    (then it equals ``demographic_parity``).
    """
    t, p = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    g = _groups(group, len(t))
    if class_shares is None:
        class_shares = {_key(k): (float(((g == k) & (t == 0)).sum()), float(((g == k) & (t == 1)).sum()))
                        for k in np.unique(g)}
    tpr, fpr = _tpr_fpr_gaps(t, p, g)
    return {
        "demographic_parity": demographic_parity(p, g),
        "demographic_parity_population": demographic_parity_population(t, p, g, class_shares),
        "equal_opportunity": tpr,
        "equalized_odds": equalized_odds(t, p, g),
        "equalized_odds_mean": equalized_odds_mean(t, p, g),
        "class_accuracy_gap_mean": class_accuracy_gap(t, p, g, "mean"),
        "class_accuracy_gap_max": class_accuracy_gap(t, p, g, "max"),
        "tpr_gap": tpr,
        "fpr_gap": fpr,
    }


def definition_set_values(metrics: Mapping, name: str = HEADLINE_SET) -> dict[str, float]:
    """``{"DP", "EO", "ED"}`` of one definition set, read from a :func:`fairness_metrics` dict."""
    s = DEFINITION_SETS[name]
    return {k: metrics.get(s[k]) for k in ("DP", "EO", "ED")}
