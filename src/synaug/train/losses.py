"""Losses and class weights of the long-tail / fairness baselines.

Every loss accepts hard targets (``(B,)`` long) or soft targets (``(B, C)`` float, from
Mixup / CutMix); with hard targets each one equals its reference implementation.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _counts(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or (c < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative numbers")
    return c


def _normalise(w: np.ndarray) -> torch.Tensor:
    # LDAM-DRW / Cui et al.: weights sum to the number of classes (here: classes with data)
    present = w > 0
    w = w / w[present].sum() * present.sum()
    return torch.tensor(w, dtype=torch.float32)


def inverse_frequency_weights(counts) -> torch.Tensor:
    """``w_c ∝ 1 / n_c``, normalised to sum to the number of classes (0 for empty classes)."""
    n = _counts(counts)
    w = np.where(n > 0, 1.0 / np.maximum(n, 1), 0.0)
    return _normalise(w)


def class_balanced_weights(counts, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights by effective number (Cui et al., 2019).

    ``w_c ∝ (1 - beta) / (1 - beta ** n_c)``, normalised to sum to the number of classes
    (0 for empty classes). ``beta = 0`` gives equal weights; ``beta -> 1`` approaches 1/n.
    """
    n = _counts(counts)
    eff = 1.0 - np.power(beta, n)
    w = np.where(n > 0, (1.0 - beta) / np.where(eff > 0, eff, 1.0), 0.0)
    return _normalise(w)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  reduction: str = "mean") -> torch.Tensor:
    """``F.cross_entropy`` for hard or soft targets (weighted mean for hard, batch mean for soft)."""
    return F.cross_entropy(logits, target, weight=weight, reduction=reduction)


def log_prior(counts, device=None) -> torch.Tensor:
    """``log(n_c / sum n)``; empty classes count as 1 so the log stays finite."""
    n = np.maximum(_counts(counts), 1.0)
    return torch.tensor(np.log(n / n.sum()), dtype=torch.float32, device=device)


def balanced_softmax_loss(logits: torch.Tensor, target: torch.Tensor, counts,
                          reduction: str = "mean") -> torch.Tensor:
    """Balanced Softmax (Ren et al., 2020): cross-entropy of ``logits + log prior``.

    ``-log( n_y exp(z_y) / sum_j n_j exp(z_j) )`` per sample.
    """
    prior = counts if isinstance(counts, torch.Tensor) else log_prior(counts, logits.device)
    return F.cross_entropy(logits + prior.to(logits.dtype), target, reduction=reduction)


def ldam_margins(counts, max_m: float = 0.5) -> torch.Tensor:
    """LDAM margins ``m_c = C / n_c^(1/4)`` with ``C`` set so the largest margin is ``max_m``."""
    n = np.maximum(_counts(counts), 1.0)
    m = 1.0 / np.sqrt(np.sqrt(n))
    return torch.tensor(m * (max_m / m.max()), dtype=torch.float32)


def ldam_loss(logits: torch.Tensor, target: torch.Tensor, margins: torch.Tensor, s: float = 30.0,
              weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """LDAM loss (Cao et al., 2019): subtract the class margin from the true-class logit, scale by s.

    For soft targets ``t`` the margin is subtracted in proportion, ``z - t * m`` (the hard
    case is the one-hot special case).
    """
    m = margins.to(logits.device, logits.dtype)
    if target.dim() == 1:
        shifted = logits - F.one_hot(target, logits.shape[1]).to(logits.dtype) * m
    else:
        shifted = logits - target.to(logits.dtype) * m
    return F.cross_entropy(s * shifted, target, weight=weight, reduction=reduction)
