"""Group-fairness gaps for a binary classifier with a sensitive attribute (Hardt et al., 2016).

Each metric is a max - min over the groups that occur; 0 means perfectly fair. Groups where
a rate is undefined (no positives for TPR, no negatives for FPR) are left out of that rate.
"""
from __future__ import annotations

import numpy as np


def _binary(y, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    vals = np.unique(a)
    if not np.isin(vals, [0, 1]).all():
        raise ValueError(f"{name} must be binary (0/1), found values {vals[:5].tolist()}")
    return a.astype(np.int64)


def _groups(group, n: int) -> np.ndarray:
    g = np.asarray(group)
    if g.shape != (n,):
        raise ValueError(f"group must have one entry per sample ({n}), got shape {g.shape}")
    return g


def _gap(rates: list[float]) -> float:
    r = [x for x in rates if not np.isnan(x)]
    return float(max(r) - min(r)) if r else float("nan")


def _rate(pred: np.ndarray, mask: np.ndarray) -> float:
    return float(pred[mask].mean()) if mask.any() else float("nan")


def selection_rates(y_pred, group) -> dict:
    """``P(yhat = 1 | group)`` for each group."""
    p = _binary(y_pred, "y_pred")
    g = _groups(group, len(p))
    return {k.item() if hasattr(k, "item") else k: _rate(p, g == k) for k in np.unique(g)}


def true_positive_rates(y_true, y_pred, group) -> dict:
    """``P(yhat = 1 | y = 1, group)`` for each group (nan where a group has no positives)."""
    t, p = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    g = _groups(group, len(t))
    return {k.item() if hasattr(k, "item") else k: _rate(p, (g == k) & (t == 1)) for k in np.unique(g)}


def false_positive_rates(y_true, y_pred, group) -> dict:
    """``P(yhat = 1 | y = 0, group)`` for each group (nan where a group has no negatives)."""
    t, p = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    g = _groups(group, len(t))
    return {k.item() if hasattr(k, "item") else k: _rate(p, (g == k) & (t == 0)) for k in np.unique(g)}


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
    return _gap(list(selection_rates(y_pred, group).values()))


def equal_opportunity(y_true, y_pred, group) -> float:
    """Equal-opportunity gap: max - min over groups of the true-positive rate.

    Parameters
    ----------
    y_true, y_pred : array-like of {0, 1}, shape (n,)
    group : array-like, shape (n,)

    Returns
    -------
    float
        Max minus min of ``P(yhat = 1 | y = 1, group)`` (groups without positives skipped).
    """
    return _gap(list(true_positive_rates(y_true, y_pred, group).values()))


def equalized_odds(y_true, y_pred, group) -> float:
    """Equalized-odds gap: the larger of the TPR gap and the FPR gap over groups.

    Parameters
    ----------
    y_true, y_pred : array-like of {0, 1}, shape (n,)
    group : array-like, shape (n,)

    Returns
    -------
    float
        ``max(TPR gap, FPR gap)``; equals fairlearn's ``equalized_odds_difference``.
    """
    tpr = _gap(list(true_positive_rates(y_true, y_pred, group).values()))
    fpr = _gap(list(false_positive_rates(y_true, y_pred, group).values()))
    return float(np.nanmax([tpr, fpr])) if not (np.isnan(tpr) and np.isnan(fpr)) else float("nan")
