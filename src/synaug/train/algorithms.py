"""Training algorithms as plug-ins: each decides sampling, loss and extra phases.

Every algorithm works with or without synthetic rows: class (and cell) counts come from the
*training manifest actually trained on* (real + synthetic), so after uniformization the
re-balancing baselines see balanced counts, as in the paper's "SYNAuG + algorithm" rows.

Register a new one with ``@register_algorithm("name")`` on a subclass of :class:`Algorithm`.
"""
from __future__ import annotations

import math
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

    def row_loss(self, logits: torch.Tensor, targets: torch.Tensor, group_mix: Optional[torch.Tensor],
                 epoch: int) -> torch.Tensor:
        """Per-row losses ``(B,)`` whose mean is :meth:`loss` (``train.synthetic.loss_weight``
        weighs them); only algorithms that keep the plain cross-entropy have them."""
        if type(self).loss is not Algorithm.loss:
            raise SynaugError(f"algorithm {self.name} has no per-row losses (train.synthetic.loss_weight)")
        return F.cross_entropy(logits, targets, reduction="none")

    # phases ---------------------------------------------------------------------
    def extra_epochs(self) -> int:
        """Epochs after the main phase in which only the head is trained."""
        return 0

    def head_phase_optim(self) -> dict:
        """``lr`` / ``weight_decay`` of the head-only phase."""
        return {}

    def head_lr(self, head_epoch: int, base: float) -> float:
        """Learning rate of the (0-based) ``head_epoch``-th head-only epoch."""
        return self.head_phase_optim().get("lr", base)

    def start_phase(self, model: torch.nn.Module, phase: str) -> None:
        """Called when a phase ("main" / "head") starts or is resumed, before its first step."""

    def after_step(self, model: torch.nn.Module, epoch: int) -> None:
        pass

    def after_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """Called after the last step of every epoch (before validation and the checkpoint)."""

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
    """Online Group DRO (Sagawa et al., 2020) as ``kohpangwei/group_DRO`` trains it with
    ``--robust --reweight_groups``: batches drawn with replacement, every row with weight
    ``N / count(its group)`` (``data/dro_dataset.py:get_loader``), and after every batch
    ``q <- q * exp(eta * (loss_g + C / sqrt(n_g)))``, normalised, loss ``sum_g q_g loss_g``
    (``loss.py:LossComputer.compute_robust_loss``). Groups are class x group cells by default
    (Waterbirds' four groups), or classes, or the sensitive groups. ``reweight_groups: false``
    trains on a plain shuffle instead."""

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        by = cfg.group_dro.by
        if by == "group" and info.num_groups == 0:
            raise SynaugError("group_dro.by: group needs a manifest with groups")
        self.num_loss_groups = {"cell": info.num_cells, "class": info.num_classes,
                                "group": max(info.num_groups, 1)}[by]
        ids = self._ids_np(info.labels, info.groups)
        self._ids = ids
        n = np.bincount(ids, minlength=self.num_loss_groups).astype(np.float64)
        # the reference adds C / sqrt(n_g) only when every adjustment is positive
        self.adjust = (torch.tensor(cfg.group_dro.adjustment / np.sqrt(np.maximum(n, 1)),
                                    dtype=torch.float32, device=device)
                       if cfg.group_dro.adjustment > 0 else None)
        self.q = torch.full((self.num_loss_groups,), 1.0 / self.num_loss_groups, device=device)

    def _ids_np(self, labels, groups):
        by, G = self.cfg.group_dro.by, max(self.info.num_groups, 1)
        if by == "class":
            return labels
        if by == "group":
            return np.clip(groups, 0, None)
        return labels * G + np.clip(groups, 0, None)

    def sample_weights(self) -> Optional[torch.Tensor]:
        if not self.cfg.group_dro.reweight_groups:
            return None
        return group_balanced_weights(self._ids, self.num_loss_groups)

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
        count = gm.sum(0)
        group_loss = (gm.t() @ per_sample) / (count + (count == 0).to(count.dtype))  # absent groups: 0
        if self.adjust is not None:
            # the reference adds the adjustment in place, so its returned loss carries it too
            group_loss = group_loss + self.adjust
        with torch.no_grad():
            self.q = self.q * torch.exp(self.cfg.group_dro.eta * group_loss.detach())
            self.q = self.q / self.q.sum()
        return group_loss @ self.q

    def state_dict(self):
        return {"q": self.q.detach().cpu()}

    def load_state_dict(self, state):
        if "q" in state:
            self.q = state["q"].to(self.device)


def group_balanced_weights(ids: np.ndarray, num_groups: int) -> torch.Tensor:
    """Per-row sampling weights ``N / count(group of the row)`` in float32, exactly as
    ``group_DRO/data/dro_dataset.py:DRODataset.get_loader`` (``reweight_groups``) builds them
    for its ``WeightedRandomSampler(weights, N, replacement=True)``."""
    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    counts = (torch.arange(num_groups).unsqueeze(1) == ids_t).sum(1).float()
    return (len(ids_t) / counts)[ids_t]


@register_algorithm("weight_balancing")
class WeightBalancing(Algorithm):
    """Weight Balancing (Alshammari et al., 2022), as ``ShadeAlsha/LTR-weight-balancing``.

    Stage 1 (the main epochs): CE with the configured (high) ``optim.weight_decay``. Stage 2
    (``stage2_epochs`` more, ``demo2_second-stage-training.py``): encoder frozen, head trained
    with the class-balanced softmax loss of ``utils/class_balanced_loss.py:CB_loss``, SGD
    lr ``stage2_lr`` (cosine annealed, ``CosineAnnealingLR`` stepped at the start of each
    epoch), weight decay ``stage2_weight_decay``, and MaxNorm (``utils/regularizers.py:
    MaxNorm_via_PGD``): after every epoch each class vector of the head is scaled back onto
    the threshold when its norm exceeds it; the threshold is fixed when stage 2 starts as
    :func:`maxnorm_threshold` of the head's per-class norms (``max_norm: absolute``: a fixed
    radius instead). The bias is not constrained (its threshold is infinite in the reference).

    Known difference: the reference keeps the network in ``train()`` mode in stage 2, so its
    frozen encoder's BatchNorm layers still normalise with batch statistics and update their
    running means; here the frozen encoder is in eval mode (features fixed).
    """

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        self.wb = cfg.weight_balancing
        self.weight = class_balanced_weights(info.class_counts, self.wb.beta).to(device)
        self.threshold: Optional[float] = None

    def extra_epochs(self):
        return self.wb.stage2_epochs

    def head_phase_optim(self):
        return {"lr": self.wb.stage2_lr, "weight_decay": self.wb.stage2_weight_decay}

    def head_lr(self, head_epoch: int, base: float) -> float:
        if self.wb.stage2_schedule == "constant":
            return self.wb.stage2_lr
        return cosine_stepped_first(self.wb.stage2_lr, head_epoch, self.wb.stage2_epochs)

    def start_phase(self, model, phase):
        if phase == "head" and self.threshold is None:
            if self.wb.max_norm == "absolute":
                self.threshold = float(self.wb.max_norm_radius)
            else:
                norms = model.head.weight.detach().float().reshape(model.head.weight.shape[0], -1).norm(dim=1)
                self.threshold = maxnorm_threshold(norms, self.wb.max_norm_ratio)

    def loss(self, logits, targets, group_mix, epoch):
        if epoch < self.info.epochs:
            return F.cross_entropy(logits, targets)
        if self.wb.stage2_loss == "weighted_ce":
            return F.cross_entropy(logits, targets, weight=self.weight)
        return cb_softmax_loss(logits, targets, self.weight)

    def _project(self, model):
        if self.threshold is None:
            self.start_phase(model, "head")
        max_norm_(model.head.weight, self.threshold)

    def after_step(self, model, epoch):
        if epoch >= self.info.epochs and self.wb.project_every == "step":
            self._project(model)

    def after_epoch(self, model, epoch):
        if epoch >= self.info.epochs and self.wb.project_every == "epoch":
            self._project(model)

    def state_dict(self):
        return {} if self.threshold is None else {"maxnorm_threshold": torch.tensor([self.threshold],
                                                                                   dtype=torch.float64)}

    def load_state_dict(self, state):
        if "maxnorm_threshold" in state:
            self.threshold = float(state["maxnorm_threshold"].reshape(-1)[0])


def maxnorm_threshold(norms, ratio: float = 0.1) -> float:
    """The relative MaxNorm threshold ``min + ratio * (max - min)`` of the per-class weight
    norms (``LTR-weight-balancing/utils/regularizers.py:MaxNorm_via_PGD.setPerLayerThresh``)."""
    n = torch.as_tensor(norms, dtype=torch.float64).reshape(-1)
    if n.numel() == 0:
        raise SynaugError("maxnorm_threshold needs at least one norm")
    lo, hi = float(n.min()), float(n.max())
    return lo + float(ratio) * (hi - lo)


def max_norm_(weight: torch.Tensor, max_norm: float) -> None:
    """Scale every row (class vector) whose L2 norm exceeds ``max_norm`` back to ``max_norm``
    (in place), as ``MaxNorm_via_PGD.PGD`` does: ``w <- w * max_norm / ||w||``."""
    with torch.no_grad():
        flat = weight.reshape(weight.shape[0], -1)
        norms = torch.linalg.norm(flat, ord=2, dim=1)
        over = norms > max_norm
        if over.any():
            flat[over] = flat[over] * (max_norm / norms[over]).unsqueeze(1).to(flat.dtype)


def cb_softmax_loss(logits: torch.Tensor, targets: torch.Tensor, class_weight: torch.Tensor) -> torch.Tensor:
    """Class-balanced "softmax" loss of ``LTR-weight-balancing/utils/class_balanced_loss.py:CB_loss``:
    binary cross-entropy between ``softmax(logits)`` and the one-hot target over every class,
    each sample weighted by its class's weight, averaged over batch x classes. Soft targets
    (``(B, C)``) take the target-weighted mix of class weights."""
    C = logits.shape[1]
    onehot = F.one_hot(targets, C).to(logits.dtype) if targets.dim() == 1 else targets.to(logits.dtype)
    w = (onehot @ class_weight.to(logits.dtype)).unsqueeze(1).expand(-1, C)
    return F.binary_cross_entropy(logits.softmax(dim=1), onehot, weight=w)


def cosine_stepped_first(base_lr: float, epoch: int, total: int, eta_min: float = 0.0) -> float:
    """``CosineAnnealingLR(T_max=total)`` when ``scheduler.step()`` is called at the *start* of
    every epoch (as ``LTR-weight-balancing/utils/trainval.py:train_model`` does): epoch ``e``
    trains at the annealed value of step ``e + 1`` (the last epoch at ``eta_min``)."""
    t = min(epoch + 1, total)
    return eta_min + (base_lr - eta_min) * 0.5 * (1 + math.cos(math.pi * t / max(total, 1)))


def build_algorithm(cfg: AlgorithmConfig, info: DataInfo, device: torch.device) -> Algorithm:
    if cfg.name not in _ALGORITHMS:
        raise SynaugError(f"unknown algorithm {cfg.name!r} (known: {', '.join(list_algorithms())})")
    return _ALGORITHMS[cfg.name](cfg, info, device)
