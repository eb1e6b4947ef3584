"""Training algorithms as plug-ins: each decides sampling, loss and extra phases.

Every algorithm works with or without synthetic rows: class (and cell) counts come from the
*training manifest actually trained on* (real + synthetic), so after uniformization the
re-balancing baselines see balanced counts, as in the paper's "SYNAuG + algorithm" rows.

Register a new one with ``@register_algorithm("name")`` on a subclass of :class:`Algorithm`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SynaugError
from .config import AlgorithmConfig
from .losses import (balanced_softmax_loss, class_balanced_weights, inverse_frequency_weights,
                     ldam_loss, ldam_margins, log_prior)

_ALGORITHMS: dict[str, type["Algorithm"]] = {}


def register_algorithm(name: str):
    def deco(cls):
        cls.name = name
        _ALGORITHMS[name] = cls
        return cls
    return deco


def list_algorithms() -> list[str]:
    return sorted(_ALGORITHMS)


@dataclass
class DataInfo:
    """What algorithms may know about the training rows."""

    labels: np.ndarray        # (N,) class of each training row
    groups: np.ndarray        # (N,) group of each row, -1 when none
    num_classes: int
    num_groups: int           # 0 when the manifest has no groups
    epochs: int               # main-phase epochs

    @property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    @property
    def cell_ids(self) -> np.ndarray:
        G = max(self.num_groups, 1)
        return self.labels * G + np.clip(self.groups, 0, None)

    @property
    def num_cells(self) -> int:
        return self.num_classes * max(self.num_groups, 1)


class Algorithm:
    """Base class = plain cross-entropy. Hooks are called by the training loop.

    ``targets`` passed to :meth:`loss` are long class ids (unmixed batch) or ``(B, C)``
    probabilities (Mixup / CutMix). ``group_mix`` is ``(B, K)`` soft membership of the
    algorithm's groups (only when :attr:`num_loss_groups` > 0).
    """

    name = "base"

    def __init__(self, cfg: AlgorithmConfig, info: DataInfo, device: torch.device):
        self.cfg, self.info, self.device = cfg, info, device

    # sampling ---------------------------------------------------------------
    def sample_weights(self) -> Optional[torch.Tensor]:
        """Per-row sampling weights (draws with replacement), or None for a plain shuffle."""
        return None

    # loss ---------------------------------------------------------------------
    num_loss_groups = 0

    def loss_group_ids(self, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, group_mix: Optional[torch.Tensor],
             epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    # phases ---------------------------------------------------------------------
    def extra_epochs(self) -> int:
        """Epochs after the main phase in which only the head is trained."""
        return 0

    def head_phase_optim(self) -> dict:
        """``lr`` / ``weight_decay`` of the head-only phase."""
        return {}

    def after_step(self, model: torch.nn.Module, epoch: int) -> None:
        pass

    # state (checkpointed) ---------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


@register_algorithm("ce")
class CrossEntropy(Algorithm):
    """Empirical risk minimisation with cross-entropy."""


@register_algorithm("resample")
class ClassResampling(Algorithm):
    """Class-balanced re-sampling: every row drawn with probability ∝ 1 / count(its class)
    (or of its class x group cell), with replacement, N draws per epoch."""

    def sample_weights(self) -> torch.Tensor:
        ids = self.info.labels if self.cfg.resample.by == "class" else self.info.cell_ids
        counts = np.bincount(ids)
        return torch.tensor(1.0 / counts[ids], dtype=torch.float64)


@register_algorithm("reweight")
class ClassReweighting(Algorithm):
    """Loss re-weighting by inverse frequency or class-balanced effective number."""

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        c = info.class_counts
        w = (inverse_frequency_weights(c) if cfg.reweight.kind == "inverse"
             else class_balanced_weights(c, cfg.reweight.beta))
        self.weight = w.to(device)

    def loss(self, logits, targets, group_mix, epoch):
        return F.cross_entropy(logits, targets, weight=self.weight)


@register_algorithm("balanced_softmax")
class BalancedSoftmax(Algorithm):
    """Balanced Softmax (Ren et al., 2020): logits + log prior in the training loss only."""

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        self.log_prior = log_prior(info.class_counts, device)

    def loss(self, logits, targets, group_mix, epoch):
        return balanced_softmax_loss(logits, targets, self.log_prior)


@register_algorithm("ldam_drw")
class LDAMDRW(Algorithm):
    """LDAM loss (margins ∝ n^-1/4, largest ``max_m``, scale ``s``) with deferred
    re-weighting: class-balanced weights (effective number, ``beta``) from ``drw_epoch`` on.
    Use with a cosine head (``model.head: auto`` does), as LDAM-DRW does."""

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        self.margins = ldam_margins(info.class_counts, cfg.ldam.max_m).to(device)
        self.drw_weight = class_balanced_weights(info.class_counts, cfg.ldam.beta).to(device)

    def weight_at(self, epoch: int) -> Optional[torch.Tensor]:
        return self.drw_weight if epoch >= self.cfg.ldam.drw_epoch else None

    def loss(self, logits, targets, group_mix, epoch):
        return ldam_loss(logits, targets, self.margins, self.cfg.ldam.s, weight=self.weight_at(epoch))


@register_algorithm("group_dro")
class GroupDRO(Algorithm):
    """Online Group DRO (Sagawa et al., 2020): minimise the q-weighted group losses and move
    ``q ← q · exp(eta · loss_g)`` (normalised) after every batch. Groups are class x group
    cells by default (Waterbirds' four groups), or classes, or the sensitive groups."""

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        by = cfg.group_dro.by
        if by == "group" and info.num_groups == 0:
            raise SynaugError("group_dro.by: group needs a manifest with groups")
        self.num_loss_groups = {"cell": info.num_cells, "class": info.num_classes,
                                "group": max(info.num_groups, 1)}[by]
        ids = self._ids_np(info.labels, info.groups)
        n = np.bincount(ids, minlength=self.num_loss_groups).astype(np.float64)
        self.adjust = torch.tensor(cfg.group_dro.adjustment / np.sqrt(np.maximum(n, 1)),
                                   dtype=torch.float32, device=device)
        self.q = torch.full((self.num_loss_groups,), 1.0 / self.num_loss_groups, device=device)

    def _ids_np(self, labels, groups):
        by, G = self.cfg.group_dro.by, max(self.info.num_groups, 1)
        if by == "class":
            return labels
        if by == "group":
            return np.clip(groups, 0, None)
        return labels * G + np.clip(groups, 0, None)

    def loss_group_ids(self, labels, groups):
        by, G = self.cfg.group_dro.by, max(self.info.num_groups, 1)
        if by == "class":
            return labels
        if by == "group":
            return groups.clamp(min=0)
        return labels * G + groups.clamp(min=0)

    def loss(self, logits, targets, group_mix, epoch):
        per_sample = F.cross_entropy(logits, targets, reduction="none")
        gm = group_mix.to(per_sample.dtype)                       # (B, K) soft membership
        denom = gm.sum(0)
        group_loss = (gm * per_sample[:, None]).sum(0) / denom.clamp(min=1e-12)
        with torch.no_grad():
            step = self.cfg.group_dro.eta * (group_loss + self.adjust) * (denom > 0)
            self.q = self.q * torch.exp(step)
            self.q = self.q / self.q.sum()
        return (self.q * group_loss).sum()

    def state_dict(self):
        return {"q": self.q.detach().cpu()}

    def load_state_dict(self, state):
        if "q" in state:
            self.q = state["q"].to(self.device)


@register_algorithm("weight_balancing")
class WeightBalancing(Algorithm):
    """Weight Balancing (Alshammari et al., 2022). Stage 1 (the main epochs): CE with the
    configured (high) ``optim.weight_decay``. Stage 2 (``stage2_epochs`` more): encoder
    frozen, head trained with class-balanced CE and weight decay, and MaxNorm — each class
    vector of the head projected back into the ball of radius ``max_norm`` after every step."""

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        self.weight = class_balanced_weights(info.class_counts, cfg.weight_balancing.beta).to(device)

    def extra_epochs(self):
        return self.cfg.weight_balancing.stage2_epochs

    def head_phase_optim(self):
        wb = self.cfg.weight_balancing
        return {"lr": wb.stage2_lr, "weight_decay": wb.stage2_weight_decay}

    def loss(self, logits, targets, group_mix, epoch):
        if epoch < self.info.epochs:
            return F.cross_entropy(logits, targets)
        return F.cross_entropy(logits, targets, weight=self.weight)

    def after_step(self, model, epoch):
        if epoch >= self.info.epochs:
            max_norm_(model.head.weight, self.cfg.weight_balancing.max_norm)


def max_norm_(weight: torch.Tensor, max_norm: float) -> None:
    """Project each row (class vector) onto the L2 ball of radius ``max_norm`` (in place)."""
    with torch.no_grad():
        weight.copy_(torch.renorm(weight, 2, 0, max_norm))


def build_algorithm(cfg: AlgorithmConfig, info: DataInfo, device: torch.device) -> Algorithm:
    if cfg.name not in _ALGORITHMS:
        raise SynaugError(f"unknown algorithm {cfg.name!r} (known: {', '.join(list_algorithms())})")
    return _ALGORITHMS[cfg.name](cfg, info, device)
