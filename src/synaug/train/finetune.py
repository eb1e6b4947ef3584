"""Step 3 of SYNAuG: adjust only the last layer g on a class-balanced subset of REAL data.

* ``finetune``: start from the trained head, train it on frozen features;
* ``retrain``: re-initialise the head (seeded), then train it the same way;
* ``dfr``: Deep Feature Reweighting (Kirichenko et al., 2023) — logistic regression on
  standardised frozen features of group-balanced draws, regularisation ``C`` chosen on the
  validation split, coefficients averaged over draws.

The subset always comes from ``split == "train"`` and ``source == "real"`` rows, sampled
uniformly per class (or per class x group cell); test rows are refused.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import save_resolved
from ..errors import SynaugError
from ..io import write_json_atomic
from ..manifest import Manifest
from ..models import Classifier, CosineLinear, reset_head
from . import checkpoint as ckpt
from .config import AugmentConfig, FinetuneConfig
from .data import ImageSet, refuse_test_rows
from .evaluate import cell_ids, predict_logits, resolve_device
from .loop import seed_for


def real_train_rows(manifest: Manifest) -> Manifest:
    """The rows a last-layer subset may come from: ``split == "train"`` and ``source == "real"``."""
    df = manifest.df
    return manifest.select(((df["split"] == "train") & (df["source"] == "real")).to_numpy())


def balanced_subset(manifest: Manifest, by: str = "class", per_cell: Optional[int] = None,
                    seed: int = 0) -> tuple[Manifest, dict]:
    """Draw the same number of real training images from every class (or class x group cell).

    Parameters
    ----------
    manifest : Manifest
        Any manifest; only its ``split == "train"`` & ``source == "real"`` rows are used.
    by : {"class", "cell"}
        Balance classes, or class x group cells (fairness / spurious-correlation data).
    per_cell : int, optional
        Images per cell; default the smallest cell count. A cell with fewer images
        contributes all it has (reported in the returned info).
    seed : int
        Seed of the draw (without replacement within each cell).

    Returns
    -------
    (Manifest, dict)
        The subset (rows in manifest order) and ``{"per_cell", "cells", "short_cells"}``.
    """
    pool = real_train_rows(manifest)
    positions, info = _draw(pool, by, per_cell, seed)
    keep = np.zeros(len(pool), dtype=bool)
    keep[positions] = True
    return pool.select(keep), info


def _draw(pool: Manifest, by: str, per_cell: Optional[int], seed: int) -> tuple[np.ndarray, dict]:
    """Sorted row positions of a balanced draw from ``pool`` (all real train rows)."""
    if len(pool) == 0:
        raise SynaugError("no real training rows (split == 'train', source == 'real') to fine-tune on")
    labels = pool.df["label"].to_numpy()
    if by == "cell":
        if pool.groups is None or (pool.df["group"] < 0).any():
            raise SynaugError("balance_by: cell needs every real training row to have a group")
        ids = cell_ids(labels, pool.df["group"].to_numpy(), pool.num_groups)
    else:
        ids = labels
    missing = sorted(set(range(pool.num_classes)) - set(labels.tolist()))
    if missing:
        raise SynaugError(f"class {pool.classes[missing[0]]!r} has no real training image to fine-tune on")
    present = np.unique(ids)
    counts = {int(k): int((ids == k).sum()) for k in present}
    k = int(per_cell) if per_cell is not None else min(counts.values())
    rng = np.random.default_rng(seed)
    chosen, short = [], {}
    for cell in present:
        idx = np.flatnonzero(ids == cell)
        if len(idx) < k:
            short[int(cell)] = len(idx)
        chosen.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    info = {"per_cell": k, "by": by, "cells": {str(c): min(k, n) for c, n in counts.items()},
            "short_cells": {str(c): n for c, n in short.items()}, "pool_size": len(pool)}
    return np.sort(np.concatenate(chosen)), info


# ---------------------------------------------------------------------- features
def extract_features(model: Classifier, manifest: Manifest, cfg: FinetuneConfig, device,
                     views: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder features of every row (plus ``views`` augmented copies), and labels."""
    aug = cfg.augment
    images = ImageSet(manifest, cfg.data, "fine-tuning", device, cfg.channels_last, aug.mean, aug.std)
    feats = [predict_logits(model, images, cfg.data.eval_batch_size, features=True)]
    labels = [images.labels]
    for v in range(views):
        gen = torch.Generator().manual_seed(seed_for(seed, v, 7))
        feats.append(_augmented_features(model, images, aug, gen, cfg.data.eval_batch_size))
        labels.append(images.labels)
    return torch.cat(feats), torch.cat(labels)


@torch.inference_mode()
def _augmented_features(model, images: ImageSet, aug: AugmentConfig, gen, bs) -> torch.Tensor:
    model.eval()
    out = [model.features(b.x).float().cpu()
           for b in images.batches(torch.arange(len(images)), bs, aug, gen)]
    return torch.cat(out)


def _head_logits(head: torch.nn.Module, feats: torch.Tensor, scale: float) -> torch.Tensor:
    logits = head(feats)
    return logits * scale if isinstance(head, CosineLinear) else logits


def train_head(head: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor, cfg: FinetuneConfig,
               cosine_scale: float = 30.0) -> list[dict]:
    """Mini-batch SGD (momentum, weight decay, cosine or constant lr) of ``head`` on features."""
    opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed_for(cfg.seed, 0x4EAD))
    n, history = len(feats), []
    head.train()
    for epoch in range(cfg.epochs):
        lr = cfg.lr if cfg.schedule == "constant" else 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for g in opt.param_groups:
            g["lr"] = lr
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(_head_logits(head, feats[idx], cosine_scale), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch, "lr": lr, "loss": total / n})
    head.eval()
    return history


# ---------------------------------------------------------------------- DFR
def _logreg(C: float, penalty: str, multiclass: bool, seed: int):
    import sklearn
    from sklearn.linear_model import LogisticRegression

    solver = "saga" if multiclass else "liblinear"
    ratio = 1.0 if penalty == "l1" else 0.0
    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        return LogisticRegression(C=C, l1_ratio=ratio, solver=solver, max_iter=2000, random_state=seed)
    return LogisticRegression(C=C, penalty=penalty, solver=solver, max_iter=2000, random_state=seed)


def _dfr(model: Classifier, manifest: Manifest, val: Optional[Manifest], cfg: FinetuneConfig,
         device) -> dict:
    """Fit DFR and write its (de-standardised) solution into a new linear head."""
    from sklearn.preprocessing import StandardScaler

    pool = real_train_rows(manifest)
    X, y = extract_features(model, pool, cfg, device)
    X, y = X.numpy().astype(np.float64), y.numpy()
    C_cls = manifest.num_classes
    by = cfg.balance_by
    draws = []
    for r in range(max(cfg.dfr_repeats, 1)):
        draws.append(_draw(pool, by, cfg.per_cell, seed_for(cfg.seed, r, 0xDF))[0])
    scaler = StandardScaler().fit(X[draws[0]])
    scores = {}
    if val is not None and len(val):
        Xv, _ = extract_features(model, val, cfg, device)
        Xv = scaler.transform(Xv.numpy().astype(np.float64))
        yv = val.df["label"].to_numpy()
        cells_v = cell_ids(yv, val.df["group"].to_numpy(), val.num_groups)
        for Cval in cfg.dfr_Cs:
            clf = _logreg(Cval, cfg.dfr_penalty, C_cls > 2, cfg.seed).fit(scaler.transform(X[draws[0]]), y[draws[0]])
            pred = clf.predict(Xv)
            scores[str(Cval)] = _score(cfg.dfr_select, yv, pred, cells_v)
        best_C = float(max(cfg.dfr_Cs, key=lambda c: scores[str(c)]))
    else:
        best_C = float(cfg.dfr_Cs[0])
    coefs, inters = [], []
    for idx in draws:
        clf = _logreg(best_C, cfg.dfr_penalty, C_cls > 2, cfg.seed).fit(scaler.transform(X[idx]), y[idx])
        if list(clf.classes_) != list(range(C_cls)):
            raise SynaugError("a DFR draw is missing a class; raise per_cell or check the data")
        coefs.append(clf.coef_)
        inters.append(clf.intercept_)
    coef, inter = np.mean(coefs, 0), np.mean(inters, 0)
    if C_cls == 2:  # sklearn's binary model scores class 1; logits (0, z) give the same softmax
        coef = np.vstack([np.zeros_like(coef), coef])
        inter = np.array([0.0, inter[0]])
    # undo the standardisation: w·(x - mu)/sd + b = (w/sd)·x + (b - w·mu/sd)
    W = coef / scaler.scale_
    b = inter - (coef * scaler.mean_ / scaler.scale_).sum(1)
    head = torch.nn.Linear(model.num_features, C_cls)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(W, dtype=torch.float32))
        head.bias.copy_(torch.tensor(b, dtype=torch.float32))
    model.head = head.to(device)
    model.head_kind = "linear"
    model.spec = {**model.spec, "kwargs": {**model.spec.get("kwargs", {}), "head": "linear"}}
    return {"C": best_C, "val_scores": scores, "select": cfg.dfr_select if scores else "none (no val rows)",
            "repeats": len(draws), "subset_size": int(len(draws[0]))}


def _score(metric: str, y: np.ndarray, pred: np.ndarray, cells: np.ndarray) -> float:
    if metric == "top1":
        return float((pred == y).mean())
    ids = y if metric == "mean_class" else cells
    accs = [float((pred[ids == k] == y[ids == k]).mean()) for k in np.unique(ids)]
    return float(np.mean(accs)) if metric == "mean_class" else float(np.min(accs))


# ---------------------------------------------------------------------- entry point
def with_training_norm(cfg: FinetuneConfig, model) -> FinetuneConfig:
    """A copy of ``cfg`` using the training run's image size and normalisation (from
    ``model.meta``) unless ``cfg`` sets them itself."""
    meta = getattr(model, "meta", {}) or {}
    cfg = cfg.model_copy(deep=True)
    if cfg.data.image_size is None and meta.get("image_size"):
        cfg.data.image_size = meta["image_size"]
    if "mean" in meta and "augment" not in cfg.model_fields_set:
        cfg.augment = cfg.augment.model_copy(update={"mean": tuple(meta["mean"]), "std": tuple(meta["std"])})
    return cfg


def finetune_last_layer(model: Classifier, manifest: Manifest, cfg: Optional[FinetuneConfig] = None,
                        out_dir: str | Path | None = None, val_manifest: Optional[Manifest] = None,
                        cosine_scale: float = 30.0) -> Classifier:
    """Freeze the encoder f and fine-tune / re-train / DFR the head g on balanced real data.

    Parameters
    ----------
    model : Classifier
        The trained model (e.g. ``TrainResult.model`` or :func:`load_checkpoint`).
    manifest : Manifest
        Source of the subset: only ``split == "train"`` & ``source == "real"`` rows are
        drawn. Test rows are refused.
    cfg : FinetuneConfig, optional
        ``mode`` finetune / retrain / dfr, ``balance_by`` class / cell, ``per_cell``, ...
    out_dir : path, optional
        Writes ``model.safetensors``, ``finetune.json``, ``finetune_subset.parquet``, ``config.yaml``.
    val_manifest : Manifest, optional
        Validation rows (DFR's C sweep, reported metrics). Default: ``val`` rows of ``manifest``.
    cosine_scale : float
        Logit scale used when the head is a cosine head (LDAM-DRW's ``s``).

    Returns
    -------
    Classifier
        The same model object with only its head changed, in eval mode; ``model.meta`` holds
        the fine-tuning record.
    """
    cfg = with_training_norm(cfg or FinetuneConfig(), model)
    device = resolve_device(cfg.device)
    refuse_test_rows(manifest, "fine-tuning")
    val = val_manifest if val_manifest is not None else manifest.split("val")
    if val_manifest is not None:
        refuse_test_rows(val_manifest, "model selection")
    val = val if len(val) else None
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    model.encoder.requires_grad_(False)  # f stays bit-identical
    torch.manual_seed(seed_for(cfg.seed, 0xF1))
    record: dict = {"mode": cfg.mode, "seed": cfg.seed}
    subset = None
    if cfg.mode == "dfr":
        record["dfr"] = _dfr(model, manifest, val, cfg, device)
    else:
        subset, info = balanced_subset(manifest, cfg.balance_by, cfg.per_cell, cfg.seed)
        record["subset"] = info
        feats, labels = extract_features(model, subset, cfg, device, cfg.augment_views, cfg.seed)
        head = copy.deepcopy(model.head).cpu()
        if cfg.mode == "retrain":
            reset_head(head, seed_for(cfg.seed, 0x1A17))
        head.requires_grad_(True)
        record["history"] = train_head(head, feats, labels, cfg, cosine_scale)
        model.head = head.to(device)
    model.head.requires_grad_(False)
    if val is not None:
        images = ImageSet(val, cfg.data, "model selection", device, cfg.channels_last,
                          cfg.augment.mean, cfg.augment.std)
        logits = predict_logits(model, images, cfg.data.eval_batch_size)
        pred = logits.argmax(1).numpy()
        yv = val.df["label"].to_numpy()
        cells = cell_ids(yv, val.df["group"].to_numpy(), val.num_groups)
        record["val"] = {m: _score(m, yv, pred, cells) for m in ("top1", "mean_class", "worst_group")}
    model.meta = {**getattr(model, "meta", {}), "stage": "finetune", "finetune": record}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out / "config.yaml")
        if subset is not None:
            subset.write(out / "finetune_subset.parquet")
        write_json_atomic(out / "finetune.json", record)
        ckpt.save_model(model, out / "model.safetensors", {k: v for k, v in model.meta.items() if k != "spec"})
    return model.eval()
