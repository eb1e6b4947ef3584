"""Accuracy metrics: top-1, per class, confusion matrix, many/medium/few-shot, per group."""
from __future__ import annotations

from typing import Mapping

import numpy as np

#: shot buckets by *training* count, as in the CIFAR-LT / ImageNet-LT literature
MANY_MIN = 100  # many: count > 100
FEW_MAX = 20    # few: count < 20; medium: 20 <= count <= 100


def _labels(y, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"{name} must hold integer labels")
    return a.astype(np.int64)


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    return t, p


def top1_accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted label equals the true label (nan when empty)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else float("nan")


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts ``M[i, j]`` of samples with true label ``i`` predicted as ``j``.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
    num_classes : int, optional
        Size of the matrix; default ``max(label) + 1``.

    Returns
    -------
    numpy.ndarray of int64, shape (num_classes, num_classes)
    """
    t, p = _pair(y_true, y_pred)
    C = int(num_classes) if num_classes is not None else int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= C or p.max() >= C):
        raise ValueError(f"labels out of range [0, {C})")
    return np.bincount(t * C + p, minlength=C * C).reshape(C, C).astype(np.int64)


def per_class_accuracy(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Recall of each class: ``M[c, c] / sum_j M[c, j]``; nan for classes absent from ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def shot_buckets(train_counts) -> np.ndarray:
    """Bucket name of each class by its training count: "many" (>100), "medium" (20-100), "few" (<20)."""
    n = np.asarray(train_counts)
    return np.where(n > MANY_MIN, "many", np.where(n < FEW_MAX, "few", "medium"))


def shot_accuracy(y_true, y_pred, train_counts) -> dict[str, float]:
    """Many/medium/few-shot accuracy by *training* count of each class.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
        Evaluation labels and predictions, labels in ``[0, len(train_counts))``.
    train_counts : array-like of int, shape (C,)
        Training images per class. Which counts to pass is the caller's choice and must be
        stated with the result (SYNAuG reports the *real* long-tailed counts, before
        uniformization).

    Returns
    -------
    dict
        ``many`` (count > 100), ``medium`` (20 <= count <= 100), ``few`` (count < 20): the mean
        of the per-class accuracies of the classes in that bucket that occur in ``y_true``
        (nan when a bucket has none); ``all``: overall top-1 accuracy over samples.
    """
    counts = np.asarray(train_counts)
    if counts.ndim != 1:
        raise ValueError("train_counts must be 1-D (one count per class)")
    acc = per_class_accuracy(y_true, y_pred, len(counts))
    buckets = shot_buckets(counts)
    out = {}
    for b in ("many", "medium", "few"):
        sel = (buckets == b) & ~np.isnan(acc)
        out[b] = float(acc[sel].mean()) if sel.any() else float("nan")
    out["all"] = top1_accuracy(y_true, y_pred)
    return out


def per_group_accuracy(y_true, y_pred, group) -> dict[int, float]:
    """Accuracy of each group id occurring in ``group`` (sorted by id)."""
    t, p = _pair(y_true, y_pred)
    g = _labels(group, "group")
    if g.shape != t.shape:
        raise ValueError("group must have one entry per sample")
    return {int(k): float(np.mean(t[g == k] == p[g == k])) for k in np.unique(g)}


def group_accuracy(y_true, y_pred, group, train_group_counts=None) -> dict[str, float]:
    """Worst-group and mean accuracy over the groups that occur in ``group``.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
    group : array-like of int, shape (n,)
        Group id of each sample (e.g. Waterbirds: the class x place cell ``2 * label + place``).
    train_group_counts : array-like or mapping, optional
        Training size of each group (indexed by group id). When given, ``weighted_mean``
        weights each group's accuracy by its share of the *training* set.

    Returns
    -------
    dict
        ``worst``: minimum group accuracy; ``mean``: accuracy over all samples (what the
        Waterbirds papers report as "mean accuracy": ``mean_accuracy = all_correct /
        all_total`` in ``get_results`` of the DFR code, PolinaKirichenko/deep_feature_reweighting
        ``utils.py``, and of group_DRO); ``unweighted_mean``: mean of the group accuracies;
        ``weighted_mean`` (only with counts): group accuracies weighted by training share.
    """
    per = per_group_accuracy(y_true, y_pred, group)
    if not per:
        raise ValueError("no samples")
    accs = np.array(list(per.values()))
    out = {"worst": float(accs.min()), "mean": top1_accuracy(y_true, y_pred),
           "unweighted_mean": float(accs.mean())}
    if train_group_counts is not None:
        if isinstance(train_group_counts, Mapping):
            lookup = {int(k): float(v) for k, v in train_group_counts.items()}
        else:
            arr = np.asarray(train_group_counts, dtype=float).ravel()
            lookup = {i: float(v) for i, v in enumerate(arr)}
        missing = [k for k in per if k not in lookup]
        if missing:
            raise ValueError(f"train_group_counts has no count for group {missing[0]}")
        w = np.array([lookup[k] for k in per])
        if w.sum() <= 0:
            raise ValueError("train_group_counts of the evaluated groups sum to zero")
        out["weighted_mean"] = float((accs * w).sum() / w.sum())
    return out
