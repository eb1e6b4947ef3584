"""Synthetic-aware training (``train.synthetic``): options that treat generated rows apart from
real ones. All are off by default (the paper's step 2); see
:class:`synaug.train.config.SyntheticConfig` for the definitions.

* per-row loss weight and label smoothing of synthetic rows (:class:`SyntheticRows`, used
  inside the training step: every per-row input comes from device tables, no host sync);
* a fixed real:synthetic share per batch, optionally decaying over the epochs
  (:func:`share_order`, :func:`share_at`);
* separate batch-norm statistics for synthetic rows during training
  (:class:`SplitBatchNorm2d`, :func:`split_batchnorm`); the test path uses the real ones;
* colour statistics of synthetic images matched to the real training images (:func:`color_match_`);
* rotating synthetic rows (``generate.select.selector: rotate``): each epoch trains on the real
  rows and one round of the synthetic candidates (:func:`epoch_rows`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ..errors import SynaugError
from .config import SyntheticConfig
from .data import epoch_order as _shuffle


# ---------------------------------------------------------------------------- loss side
class SyntheticRows:
    """The per-row part of the step: which rows are synthetic, their loss weight, their
    smoothed labels and the batch-norm route. Every method is a no-op when its option is off.

    Parameters
    ----------
    cfg : SyntheticConfig
    images : ImageSet
        Its ``synthetic`` flags (one per row) become a device table.
    model : nn.Module
        Its :class:`SplitBatchNorm2d` layers (if any) read the route set here.
    """

    def __init__(self, cfg: SyntheticConfig, images, model: nn.Module):
        self.weight = float(cfg.loss_weight)
        self.eps = float(cfg.label_smoothing)
        self.split_bn = [m for m in model.modules() if isinstance(m, SplitBatchNorm2d)]
        self.weighted = self.weight != 1.0
        self.on = self.weighted or self.eps > 0 or bool(self.split_bn)
        self.images = images
        self._route: dict[int, torch.Tensor] = {}   # batch size -> fixed route buffer

    def rows(self, idx: torch.Tensor) -> Optional[torch.Tensor]:
        """1.0 for synthetic rows, 0.0 for real ones (memory path: from the row numbers)."""
        if not self.on:
            return None
        return self.images.on_device("synthetic").index_select(0, idx)

    def stream_rows(self, batch) -> dict:
        """Streaming path: the flags of a DataLoader batch, as an extra step input."""
        if not self.on:
            return {}
        return {"s": self.images.synthetic[batch.index].to(batch.x.device, non_blocking=True)}

    def labels(self, onehot: torch.Tensor, s: Optional[torch.Tensor]) -> torch.Tensor:
        """One-hot rows, smoothed for synthetic rows: ``(1 - eps s) onehot + eps s / C``."""
        if self.eps == 0 or s is None:
            return onehot
        e = (self.eps * s)[:, None]
        return onehot * (1 - e) + e / onehot.shape[1]

    def targets(self, y: torch.Tensor, s: Optional[torch.Tensor], C: int) -> torch.Tensor:
        """Targets of an unmixed batch: class ids, or smoothed one-hot rows with smoothing on."""
        if self.eps == 0 or s is None:
            return y
        return self.labels((y[:, None] == torch.arange(C, device=y.device)).float(), s)

    def weights(self, s: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Per-row loss weights ``1 + (w - 1) s``; for a mixed row ``s`` is its label's synthetic
        share, so the weight is ``lab_w w_i + (1 - lab_w) w_partner``. None when unweighted."""
        if not self.weighted or s is None:
            return None
        return 1.0 + (self.weight - 1.0) * s

    def bind(self, batch_size: int, device) -> None:
        """Point every split batch-norm layer at the fixed route buffer of this batch size
        (outside the compiled / graphed region: attribute changes only, no kernels)."""
        if not self.split_bn:
            return
        buf = self._route.get(batch_size)
        if buf is None:
            buf = self._route[batch_size] = torch.zeros(batch_size, device=device)
        for m in self.split_bn:
            if m.route is not buf:
                m.route = buf

    def route(self, s: Optional[torch.Tensor]) -> None:
        """Rows whose image is mostly synthetic (``s >= 0.5``) go through the synthetic statistics."""
        if not self.split_bn or s is None:
            return
        self._route[s.shape[0]].copy_((s >= 0.5).to(torch.float32))


def weighted_mean(per_row: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i l_i / sum_i w_i``: the batch loss with per-row weights."""
    w = w.to(per_row.dtype)
    return (per_row * w).sum() / w.sum()


def check(cfg, algo_name: str) -> None:
    """One-line errors for ``train.synthetic`` settings the rest of the config cannot serve."""
    from .algorithms import _ALGORITHMS, Algorithm

    s = cfg.synthetic
    if s.loss_weight != 1.0:
        cls = _ALGORITHMS.get(algo_name)
        if cls is not None and cls.loss is not Algorithm.loss:
            raise SynaugError(f"train.synthetic.loss_weight needs per-row losses: algorithm {algo_name!r} computes "
                              "its own batch loss (use algorithm ce or resample)")
    if s.batch_share is not None and cfg.algorithm.name in ("resample", "group_dro"):
        raise SynaugError(f"train.synthetic.batch_share sets the batch order; algorithm {cfg.algorithm.name!r} "
                          "draws its own (re-sampling): use one of them")
    if s.color_match != "off" and cfg.data.mode == "stream":
        raise SynaugError("train.synthetic.color_match works on the in-memory data path (train.data.mode: memory "
                          "or auto)")


# ---------------------------------------------------------------------------- batch order
def share_at(cfg: SyntheticConfig, epoch: int, epochs: int) -> Optional[float]:
    """The synthetic share of the batches of ``epoch`` (None: a plain shuffle)."""
    if cfg.batch_share is None:
        return None
    if cfg.batch_share_end is None or epochs <= 1:
        return cfg.batch_share
    t = min(epoch, epochs - 1) / (epochs - 1)
    return cfg.batch_share + (cfg.batch_share_end - cfg.batch_share) * t


def share_order(is_syn: np.ndarray, share: float, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """An epoch's row order (N rows) whose every batch of ``batch_size`` holds
    ``round(share x size)`` synthetic rows; real and synthetic rows each come from their own
    shuffled stream, reshuffled whenever it runs out (so each is seen evenly)."""
    is_syn = np.asarray(is_syn, bool)
    syn, real = np.flatnonzero(is_syn), np.flatnonzero(~is_syn)
    n = len(is_syn)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    k_syn = [int(round(share * b)) for b in sizes]
    if sum(k_syn) and not len(syn):
        raise SynaugError("train.synthetic.batch_share needs synthetic training rows; there are none")
    if sum(sizes) - sum(k_syn) and not len(real):
        raise SynaugError("train.synthetic.batch_share below 1 needs real training rows; there are none")
    s_stream = _stream(syn, sum(k_syn), generator)
    r_stream = _stream(real, n - sum(k_syn), generator)
    out, i_s, i_r = [], 0, 0
    for b, ks in zip(sizes, k_syn):
        batch = torch.cat([s_stream[i_s:i_s + ks], r_stream[i_r:i_r + b - ks]])
        out.append(batch[torch.randperm(b, generator=generator)])   # synthetic rows anywhere in the batch
        i_s, i_r = i_s + ks, i_r + b - ks
    return torch.cat(out)


def _stream(rows: np.ndarray, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` rows from back-to-back shuffles of ``rows``."""
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    t = torch.as_tensor(rows, dtype=torch.long)
    reps = -(-k // len(t))
    return torch.cat([t[torch.randperm(len(t), generator=generator)] for _ in range(reps)])[:k]


# ---------------------------------------------------------------------------- rotation
def rounds_of(manifest) -> Optional[np.ndarray]:
    """Per row, its round of a rotating selection (``select_round``; -1 for rows outside the
    rotation: the real ones); None when the rows do not rotate (no column, or one round)."""
    df = manifest.df
    if "select_round" not in df:
        return None
    r = df["select_round"].fillna(-1).to_numpy(np.int64)
    return r if len(r) and r.max() > 0 else None


def epoch_rows(manifest, epoch: int) -> Optional[np.ndarray]:
    """Row positions an epoch trains on: every row outside the rotation and the rows of round
    ``epoch mod rounds`` (each candidate once every ``rounds`` epochs); None: every row."""
    r = rounds_of(manifest)
    if r is None:
        return None
    return np.flatnonzero((r < 0) | (r == epoch % (int(r.max()) + 1)))


def epoch_manifest(manifest, epoch: int = 0):
    """The rows ``epoch`` trains on, as a manifest (``manifest`` itself when nothing rotates)."""
    rows = epoch_rows(manifest, epoch)
    return manifest if rows is None else manifest.select(np.isin(np.arange(len(manifest)), rows))


def rows_per_epoch(manifest) -> int:
    """How many rows one epoch trains on (:func:`epoch_rows`; the rounds are equal in size)."""
    rows = epoch_rows(manifest, 0)
    return len(manifest) if rows is None else len(rows)


def epoch_order(images, cfg, epoch: int, epochs: int, batch_size: int, generator: torch.Generator,
                weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """An epoch's row order over ``images`` (an ImageSet): a shuffle (or draws by ``weights``), or
    the batch-share order; over the epoch's rows only when the synthetic rows rotate."""
    rows = epoch_rows(images.manifest, epoch)
    is_syn = images.synthetic.numpy() > 0
    if rows is not None:
        if weights is not None:
            raise SynaugError("generate.select.selector rotate changes the rows of every epoch; this algorithm "
                              "re-samples all rows by its own weights (use algorithm ce)")
        is_syn = is_syn[rows]
    share = share_at(cfg, epoch, epochs)
    order = (_shuffle(len(is_syn), generator, weights) if share is None else
             share_order(is_syn, share, batch_size, generator))
    return order if rows is None else torch.as_tensor(rows, dtype=torch.long)[order]


# ---------------------------------------------------------------------------- batch norm
class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises the rows of ``route`` (1 = synthetic) with the
    batch statistics of those rows and the other rows with theirs. Only real rows update
    ``running_mean`` / ``running_var`` (the statistics every evaluation uses); the synthetic
    rows' running statistics are kept apart in ``syn_running_mean`` / ``syn_running_var``
    (not saved: checkpoints hold a plain model). Affine parameters are shared. Without a route,
    or in eval mode, it is a plain BatchNorm2d. Masked sums only: static shapes, no host sync.
    """

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.register_buffer("syn_running_mean", torch.zeros(self.num_features), persistent=False)
        self.register_buffer("syn_running_var", torch.ones(self.num_features), persistent=False)
        self.route: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.route is None:
            return super().forward(x)
        xf = x.float()
        s = self.route.to(xf.dtype).view(-1, 1, 1, 1)
        m_r, v_r = self._masked(xf, 1 - s, self.running_mean, self.running_var)
        m_s, v_s = self._masked(xf, s, self.syn_running_mean, self.syn_running_var)
        mean = m_r.view(1, -1, 1, 1) * (1 - s) + m_s.view(1, -1, 1, 1) * s
        var = v_r.view(1, -1, 1, 1) * (1 - s) + v_s.view(1, -1, 1, 1) * s
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.num_batches_tracked is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
        return y.to(x.dtype)

    def _masked(self, x: torch.Tensor, w: torch.Tensor, run_mean, run_var) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (biased) variance over the rows weighted 1 by ``w``; the running statistics
        move (unbiased variance, ``momentum``) only when there is such a row."""
        n = w.sum() * x.shape[2] * x.shape[3]
        denom = n.clamp(min=1)
        mean = (x * w).sum((0, 2, 3)) / denom
        var = (((x - mean.view(1, -1, 1, 1)) ** 2) * w).sum((0, 2, 3)) / denom
        if self.track_running_stats:
            with torch.no_grad():
                mom = 0.1 if self.momentum is None else self.momentum
                has = n > 0
                unbiased = var * n / (n - 1).clamp(min=1)
                run_mean.copy_(torch.where(has, (1 - mom) * run_mean + mom * mean.detach(), run_mean))
                run_var.copy_(torch.where(has, (1 - mom) * run_var + mom * unbiased.detach(), run_var))
        return mean, var


def split_batchnorm(model: nn.Module) -> int:
    """Replace every ``BatchNorm2d`` of ``model`` by a :class:`SplitBatchNorm2d` holding the same
    parameters and statistics (same state-dict keys); returns how many were replaced."""
    n = 0
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = SplitBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(device=child.running_mean.device if child.running_mean is not None else None)
            setattr(model, name, new)
            n += 1
        else:
            n += split_batchnorm(child)
    return n


# ---------------------------------------------------------------------------- colour statistics
def color_match_(images: torch.Tensor, is_syn: np.ndarray, labels: np.ndarray, mode: str,
                 min_real: int = 10) -> dict:
    """Match the per-channel mean / std of the synthetic images to the real images, in place.

    ``images`` is the decoded uint8 ``(N, 3, H, W)`` training set. ``global``: one affine map per
    channel, ``x' = (x - mu_syn) / sd_syn * sd_real + mu_real``, with the statistics of all
    synthetic / all real pixels; ``class``: the same per class (a class with fewer than
    ``min_real`` real images, or without synthetic images, uses the global map). Results are
    rounded and clipped to 0..255. Returns the statistics before and after, per class.
    """
    is_syn, labels = np.asarray(is_syn, bool), np.asarray(labels)
    if not is_syn.any():
        return {"mode": mode, "classes": {}}
    glob = _stats(images, ~is_syn), _stats(images, is_syn)
    report = {"mode": mode, "real": glob[0][0].tolist(), "synthetic_before": glob[1][0].tolist(), "classes": {}}
    for c in np.unique(labels[is_syn]):
        rows = is_syn & (labels == c)
        real_c = ~is_syn & (labels == c)
        if mode == "class" and real_c.sum() >= min_real:
            (mr, sr), (ms, ss), used = _stats(images, real_c), _stats(images, rows), "class"
        else:
            (mr, sr), (ms, ss), used = glob[0], glob[1], "global"
        idx = torch.as_tensor(np.flatnonzero(rows), device=images.device)
        x = images.index_select(0, idx).float()
        scale = (sr / ss.clamp(min=1e-6)).to(x.device).view(1, 3, 1, 1)
        x = (x - ms.to(x.device).view(1, 3, 1, 1)) * scale + mr.to(x.device).view(1, 3, 1, 1)
        images.index_copy_(0, idx, x.round().clamp(0, 255).to(torch.uint8))
        report["classes"][int(c)] = {"stats": used, "target_mean": mr.tolist(), "target_std": sr.tolist()}
    report["synthetic_after"] = _stats(images, is_syn)[0].tolist()
    return report


def _stats(images: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (float64, CPU) of the pixels of ``rows``, chunked (uint8 in memory)."""
    idx = np.flatnonzero(rows)
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    n = 0
    for i in range(0, len(idx), 1024):
        x = images[torch.as_tensor(idx[i:i + 1024], device=images.device)].to(torch.float64).cpu()
        s += x.sum((0, 2, 3))
        s2 += (x ** 2).sum((0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / max(n, 1)
    return mean, (s2 / max(n, 1) - mean ** 2).clamp(min=0).sqrt()


__all__ = ["SyntheticRows", "SplitBatchNorm2d", "split_batchnorm", "share_order", "share_at", "color_match_",
           "weighted_mean", "check", "epoch_rows", "epoch_order", "epoch_manifest", "rounds_of", "rows_per_epoch"]
