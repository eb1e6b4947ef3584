"""Step 3 of SYNAuG: adjust only the last layer g on a class-balanced subset of REAL data.

* ``finetune``: start from the trained head, train it on frozen features;
* ``retrain``: re-initialise the head (seeded), then train it the same way;
* ``dfr``: Deep Feature Reweighting (Kirichenko et al., 2023), a method of its own (never
  called re-train): DFR^Tr_Val as ``deep_feature_reweighting/dfr_evaluate_spurious.py`` —
  L1 logistic regression on standardised frozen features of group-balanced draws of the
  VALIDATION rows, ``C`` tuned on one half of val and scored on the other, the scaler fit on
  all real training features, 20 draws averaged (:func:`dfr_tr_val`).

The finetune / retrain subset always comes from ``split == "train"`` and ``source == "real"``
rows, sampled uniformly per class (or per class x group cell); test rows are refused.
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
from .precision import autocast, resolve_amp
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


def all_grouped(rows: Manifest) -> bool:
    """True when every row has a group (``balance_by: auto`` then balances DFR by cell)."""
    return rows.groups is not None and bool((rows.df["group"] >= 0).all())


def _balance_ids(rows: Manifest, labels: np.ndarray, by: str, what: str, missing_msg: str) -> np.ndarray:
    """The id each row is balanced by (its class, or its class x group cell); every class must be present."""
    if by == "cell":
        if rows.groups is None or (rows.df["group"] < 0).any():
            raise SynaugError(f"balance_by: cell needs every {what} to have a group")
        ids = cell_ids(labels, rows.df["group"].to_numpy(), rows.num_groups)
    else:
        ids = labels
    missing = sorted(set(range(rows.num_classes)) - set(labels.tolist()))
    if missing:
        raise SynaugError(f"class {rows.classes[missing[0]]!r} has {missing_msg}")
    return ids


def _draw(pool: Manifest, by: str, per_cell: Optional[int], seed: int) -> tuple[np.ndarray, dict]:
    """Sorted row positions of a balanced draw from ``pool`` (all real train rows)."""
    if len(pool) == 0:
        raise SynaugError("no real training rows (split == 'train', source == 'real') to fine-tune on")
    labels = pool.df["label"].to_numpy()
    ids = _balance_ids(pool, labels, by, "real training row", "no real training image to fine-tune on")
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


def step3_rows(manifest: Manifest, cfg: FinetuneConfig, by: str) -> tuple[Manifest, dict, Optional[torch.Tensor]]:
    """The real rows step 3 trains on, their record, and per-row draw weights.

    ``cfg.sampling == "subset"``: the paper's balanced subset (:func:`balanced_subset`), weights
    None (each epoch a shuffle of it). ``"class_balanced"``: every real training row, weighted
    ``1 / count`` of its class (or cell), so each epoch's draws (:func:`step3_order`) hold every
    class equally often in expectation while a head class shows all its images over the epochs.
    """
    if cfg.sampling == "subset":
        subset, info = balanced_subset(manifest, by, cfg.per_cell, cfg.seed)
        return subset, info, None
    pool = real_train_rows(manifest)
    if len(pool) == 0:
        raise SynaugError("no real training rows (split == 'train', source == 'real') to fine-tune on")
    ids = _balance_ids(pool, pool.df["label"].to_numpy(), by, "real training row",
                       "no real training image to fine-tune on")
    cells, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    weights = torch.as_tensor(1.0 / counts[inverse], dtype=torch.float64)
    info = {"sampling": "class_balanced", "by": by, "pool_size": len(pool),
            "cells": {str(int(c)): int(n) for c, n in zip(cells, counts)},
            "samples_per_epoch": cfg.samples_per_epoch or len(pool)}
    return pool, info, weights


def step3_order(n: int, weights: Optional[torch.Tensor], k: Optional[int], generator: torch.Generator) -> torch.Tensor:
    """An epoch's rows: a shuffle of ``n`` rows, or ``k`` (default ``n``) draws with replacement by ``weights``."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, k or n, replacement=True, generator=generator)


# ---------------------------------------------------------------------- features
def extract_features(model: Classifier, manifest: Manifest, cfg: FinetuneConfig, device,
                     views: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder features of every row (plus ``views`` augmented copies), and labels."""
    aug = cfg.augment
    images = ImageSet(manifest, cfg.data, "fine-tuning", device, cfg.channels_last, aug.mean, aug.std)
    feats = [predict_logits(model, images, cfg.data.eval_batch_size, features=True, amp=cfg.amp)]
    labels = [images.labels]
    for v in range(views):
        gen = torch.Generator().manual_seed(seed_for(seed, v, 7))
        feats.append(_augmented_features(model, images, aug, gen, cfg.data.eval_batch_size, cfg.amp))
        labels.append(images.labels)
    return torch.cat(feats), torch.cat(labels)


@torch.inference_mode()
def _augmented_features(model, images: ImageSet, aug: AugmentConfig, gen, bs, amp: str = "off") -> torch.Tensor:
    model.eval()
    prec = resolve_amp(amp, images.device)[0]
    out = []
    for b in images.batches(torch.arange(len(images)), bs, aug, gen):
        with autocast(prec, images.device):
            out.append(model.features(b.x).float().cpu())
    return torch.cat(out)


def _head_logits(head: torch.nn.Module, feats: torch.Tensor, scale: float) -> torch.Tensor:
    logits = head(feats)
    return logits * scale if isinstance(head, CosineLinear) else logits


def train_head(head: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor, cfg: FinetuneConfig,
               cosine_scale: float = 30.0, weights: Optional[torch.Tensor] = None) -> list[dict]:
    """Mini-batch SGD (momentum, weight decay, cosine or constant lr) of ``head`` on features
    (each epoch a shuffle, or draws by ``weights``: :func:`step3_order`)."""
    opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed_for(cfg.seed, 0x4EAD))
    n, history = len(feats), []
    head.train()
    for epoch in range(cfg.epochs):
        lr = cfg.lr if cfg.schedule == "constant" else 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for g in opt.param_groups:
            g["lr"] = lr
        perm = step3_order(n, weights, cfg.samples_per_epoch, gen)
        total = 0.0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(_head_logits(head, feats[idx], cosine_scale), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch, "lr": lr, "loss": total / len(perm)})
    head.eval()
    return history


# ---------------------------------------------------------------------- beyond the head
def last_blocks(encoder: torch.nn.Module, k: int) -> list[torch.nn.Module]:
    """The last ``k`` residual blocks of the encoder, in forward order (CIFAR ResNets:
    ``layer1..3``; torchvision ResNets: ``layer1..4``)."""
    names = [n for n in ("layer1", "layer2", "layer3", "layer4") if isinstance(getattr(encoder, n, None),
                                                                            torch.nn.Sequential)]
    if not names:
        raise SynaugError(f"finetune.train_blocks: synaug does not know the blocks of a {type(encoder).__name__} "
                          "encoder (CIFAR and torchvision ResNets only); use train_blocks: 0")
    blocks = [b for n in names for b in getattr(encoder, n)]
    if k > len(blocks):
        raise SynaugError(f"finetune.train_blocks {k}: the encoder has only {len(blocks)} blocks")
    return blocks[len(blocks) - k:]


def train_blocks_and_head(model: Classifier, subset: Manifest, cfg: FinetuneConfig, device,
                          cosine_scale: float = 30.0, weights: Optional[torch.Tensor] = None) -> list[dict]:
    """Step 3 beyond the head: SGD on the last ``cfg.train_blocks`` blocks and the head, on the
    images of ``subset`` (crop / flip as ``cfg.augment``), everything before them frozen. The
    encoder stays in eval mode, so every BatchNorm keeps its statistics; earlier blocks are
    bit-identical afterwards. Same schedule, momentum and weight decay as :func:`train_head`;
    the blocks' learning rate is ``cfg.blocks_lr`` (default ``cfg.lr``); each epoch a shuffle of
    ``subset``, or draws by ``weights`` (:func:`step3_order`)."""
    blocks = last_blocks(model.encoder, cfg.train_blocks)
    model.requires_grad_(False)
    for b in blocks:
        b.requires_grad_(True)
    model.head.requires_grad_(True)
    base = {"blocks": cfg.blocks_lr or cfg.lr, "head": cfg.lr}
    opt = torch.optim.SGD([{"params": [p for b in blocks for p in b.parameters()], "name": "blocks"},
                           {"params": list(model.head.parameters()), "name": "head"}],
                          lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    images = ImageSet(subset, cfg.data, "fine-tuning", device, cfg.channels_last, cfg.augment.mean, cfg.augment.std)
    gen = torch.Generator().manual_seed(seed_for(cfg.seed, 0x4EAD))
    model.eval()  # frozen statistics: only weights of the last blocks and the head move
    history = []
    for epoch in range(cfg.epochs):
        f = 1.0 if cfg.schedule == "constant" else 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for g in opt.param_groups:
            g["lr"] = base[g["name"]] * f
        total = 0.0
        order = step3_order(len(images), weights, cfg.samples_per_epoch, gen)
        for batch in images.batches(order, cfg.batch_size, cfg.augment, gen):
            loss = F.cross_entropy(_head_logits(model.head, model.features(batch.x), cosine_scale), batch.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch.y)
        history.append({"epoch": epoch, "lr": cfg.lr * f, "loss": total / len(order)})
    model.requires_grad_(False)
    return history


# ---------------------------------------------------------------------- DFR
def _logreg(C: float, penalty: str, multiclass: bool, random_state, max_iter: int = 2000):
    """Binary: liblinear (DFR's solver); multi-class: saga (liblinear is one-vs-rest only)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    solver = "saga" if multiclass else "liblinear"
    if multiclass:
        max_iter = max(max_iter, 2000)
    ratio = 1.0 if penalty == "l1" else 0.0
    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        return LogisticRegression(C=C, l1_ratio=ratio, solver=solver, max_iter=max_iter, random_state=random_state)
    return LogisticRegression(C=C, penalty=penalty, solver=solver, max_iter=max_iter, random_state=random_state)


def _fit(clf, X, y):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(X, y)


def _balanced_draw(g: np.ndarray, n_groups: int, rng: np.random.RandomState, where: str) -> np.ndarray:
    """Row positions of a group-balanced draw: every group shuffled (in group order), the first
    ``min_g`` rows of each kept, groups concatenated in order (DFR's balancing)."""
    g_idx = [np.where(g == k)[0] for k in range(n_groups)]
    min_g = min(len(ix) for ix in g_idx)
    if min_g == 0:
        k = next(k for k, ix in enumerate(g_idx) if len(ix) == 0)
        raise SynaugError(f"DFR: {where} has no row of group {k}; add validation rows "
                          f"(data.val_per_class) or use finetune.dfr_data: train")
    for ix in g_idx:
        rng.shuffle(ix)
    return np.concatenate([ix[:min_g] for ix in g_idx])


def dfr_tr_val(x_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, g_val: np.ndarray,
               Cs, *, penalty: str = "l1", repeats: int = 20, tune_repeats: int = 1,
               select: str = "worst_group", num_classes: Optional[int] = None, seed: int = 0) -> dict:
    """DFR^Tr_Val on features, as ``dfr_evaluate_spurious.py`` runs it for Waterbirds
    (``dfr_on_validation_tune`` then ``dfr_on_validation_eval`` with ``balance_val=True``,
    ``add_train=False``).

    Tune (``tune_repeats`` times, scores summed): shuffle the validation rows, fit on a
    group-balanced draw of the second half (scaler fit on that draw), score every ``C`` by
    worst-group accuracy on the first half; the best ``C`` (first in ``Cs`` order on ties).
    Fit: scaler on ALL training features; ``repeats`` group-balanced draws of the whole
    validation split, one L1 logistic regression (liblinear) each; coefficients and
    intercepts averaged. All randomness comes from one ``RandomState(seed)`` consumed in the
    reference's order (its ``np.random`` calls, and liblinear's seed draw through
    ``random_state``), so the result equals the reference run after ``np.random.seed(seed)``.

    Parameters
    ----------
    x_train : (N, d) features of every real training row (the scaler's data only).
    x_val, y_val, g_val : validation features, labels and groups (class x group cells).
    Cs : the C grid (reference: 1, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01).

    Returns
    -------
    dict
        ``coef`` (K, d) and ``intercept`` (K,) on standardised features (K = 1 when binary),
        ``mean`` / ``scale`` of the scaler, ``C``, ``scores`` ({C: summed tuning score}),
        ``per_group`` (rows per group in each final draw).
    """
    from sklearn.preprocessing import StandardScaler

    Cs = [float(c) for c in Cs]
    if not Cs:
        raise SynaugError("DFR needs at least one C (finetune.dfr_Cs)")
    rng = np.random.RandomState(seed)
    _, g = np.unique(np.asarray(g_val), return_inverse=True)  # dense group ids
    g = g.reshape(-1)
    n_groups = int(g.max()) + 1
    y_val = np.asarray(y_val)
    K = int(num_classes) if num_classes is not None else int(y_val.max()) + 1
    multiclass = K > 2
    scores: dict[float, float] = {}
    for _ in range(tune_repeats):
        n_half = len(x_val) // 2
        idx = np.arange(len(x_val))
        rng.shuffle(idx)
        fit, hold = idx[n_half:], idx[:n_half]
        sel = _balanced_draw(g[fit], n_groups, rng, "the fitting half of the validation split")
        x_fit, y_fit = x_val[fit][sel], y_val[fit][sel]
        scaler = StandardScaler()
        x_fit = scaler.fit_transform(x_fit)
        x_hold = scaler.transform(x_val[hold])
        for c in Cs:
            clf = _fit(_logreg(c, penalty, multiclass, rng, max_iter=100), x_fit, y_fit)
            scores[c] = scores.get(c, 0.0) + _score(select, y_val[hold], clf.predict(x_hold), g[hold])
    best = Cs[int(np.argmax([scores[c] for c in Cs]))]
    scaler = StandardScaler().fit(x_train)
    coefs, inters, per_group = [], [], 0
    for _ in range(repeats):
        sel = _balanced_draw(g, n_groups, rng, "the validation split")
        rng.shuffle(np.arange(len(x_train)))  # the reference shuffles a training index it then does not use
        per_group = len(sel) // n_groups
        clf = _fit(_logreg(best, penalty, multiclass, rng, max_iter=100), scaler.transform(x_val[sel]), y_val[sel])
        if len(clf.classes_) != K:
            raise SynaugError("a DFR draw is missing a class; add validation rows")
        coefs.append(clf.coef_)
        inters.append(clf.intercept_)
    return {"coef": np.mean(coefs, axis=0), "intercept": np.mean(inters, axis=0), "mean": scaler.mean_,
            "scale": scaler.scale_, "C": best, "scores": scores, "per_group": per_group,
            "groups": n_groups}


def _set_linear_head(model: Classifier, coef: np.ndarray, inter: np.ndarray, mean: np.ndarray,
                     scale: np.ndarray, device) -> None:
    """Write a logistic regression fit on standardised features into a new linear head."""
    coef, inter = np.asarray(coef, np.float64), np.asarray(inter, np.float64)
    if coef.shape[0] == 1:  # sklearn's binary model scores class 1; logits (0, z) give the same softmax
        coef = np.vstack([np.zeros_like(coef), coef])
        inter = np.array([0.0, inter[0]])
    # undo the standardisation: w·(x - mu)/sd + b = (w/sd)·x + (b - w·mu/sd)
    W = coef / scale
    b = inter - (coef * mean / scale).sum(1)
    head = torch.nn.Linear(model.num_features, coef.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.tensor(W, dtype=torch.float32))
        head.bias.copy_(torch.tensor(b, dtype=torch.float32))
    model.head = head.to(device)
    model.head_kind = "linear"
    model.spec = {**model.spec, "kwargs": {**model.spec.get("kwargs", {}), "head": "linear"}}


def _dfr(model: Classifier, manifest: Manifest, val: Optional[Manifest], cfg: FinetuneConfig,
         device) -> dict:
    """DFR^Tr_Val (``dfr_data: val``, default) or the earlier training-draw variant."""
    if cfg.dfr_data == "train":
        return _dfr_train(model, manifest, val, cfg, device)
    if val is None or len(val) == 0:
        raise SynaugError("finetune.mode dfr fits the last layer on the validation split, and there is none: "
                          "set data.val_per_class (or use finetune.dfr_data: train)")
    pool = real_train_rows(manifest)
    if len(pool) == 0:
        raise SynaugError("no real training rows (split == 'train', source == 'real') for the DFR scaler")
    X, _ = extract_features(model, pool, cfg, device)
    Xv, yv = extract_features(model, val, cfg, device)
    yv = yv.numpy()
    by = cfg.balance_for(all_grouped(val))
    gv = _balance_ids(val, yv, by, "validation row", "no validation row for DFR to fit on")
    seed = seed_for(cfg.seed, 0xDF) % 2**32
    res = dfr_tr_val(X.numpy(), Xv.numpy(), yv, gv, cfg.dfr_Cs, penalty=cfg.dfr_penalty, repeats=cfg.dfr_draws,
                     tune_repeats=cfg.dfr_tune_repeats, select=cfg.dfr_select, num_classes=val.num_classes,
                     seed=seed)
    _set_linear_head(model, res["coef"], res["intercept"], res["mean"], res["scale"], device)
    return {"variant": "DFR^Tr_Val (dfr_evaluate_spurious.py)", "fit_on": "validation rows",
            "C": res["C"], "val_scores": {str(c): v for c, v in res["scores"].items()},
            "select": f"{cfg.dfr_select} on the held-out half of val", "repeats": cfg.dfr_draws,
            "tune_repeats": cfg.dfr_tune_repeats, "per_group": res["per_group"], "groups": res["groups"],
            "balance_by": by, "subset_size": int(res["per_group"] * res["groups"]),
            "scaler_rows": int(len(X)), "seed": int(seed)}


def _dfr_train(model: Classifier, manifest: Manifest, val: Optional[Manifest], cfg: FinetuneConfig,
               device) -> dict:
    """The earlier synaug variant (``dfr_data: train``): group-balanced draws of the real
    TRAINING rows, scaler fit on the first draw, C scored on all of val, coefficients of
    the draws averaged."""
    from sklearn.preprocessing import StandardScaler

    pool = real_train_rows(manifest)
    X, y = extract_features(model, pool, cfg, device)
    X, y = X.numpy().astype(np.float64), y.numpy()
    C_cls = manifest.num_classes
    by = cfg.balance_for(all_grouped(pool))
    draws = []
    for r in range(cfg.dfr_draws):
        draws.append(_draw(pool, by, cfg.per_cell, seed_for(cfg.seed, r, 0xDF))[0])
    scaler = StandardScaler().fit(X[draws[0]])
    scores = {}
    if val is not None and len(val):
        Xv, _ = extract_features(model, val, cfg, device)
        Xv = scaler.transform(Xv.numpy().astype(np.float64))
        yv = val.df["label"].to_numpy()
        cells_v = cell_ids(yv, val.df["group"].to_numpy(), val.num_groups)
        for Cval in cfg.dfr_Cs:
            clf = _fit(_logreg(Cval, cfg.dfr_penalty, C_cls > 2, cfg.seed), scaler.transform(X[draws[0]]), y[draws[0]])
            pred = clf.predict(Xv)
            scores[str(Cval)] = _score(cfg.dfr_select, yv, pred, cells_v)
        best_C = float(max(cfg.dfr_Cs, key=lambda c: scores[str(c)]))
    else:
        best_C = float(cfg.dfr_Cs[0])
    coefs, inters = [], []
    for idx in draws:
        clf = _fit(_logreg(best_C, cfg.dfr_penalty, C_cls > 2, cfg.seed), scaler.transform(X[idx]), y[idx])
        if list(clf.classes_) != list(range(C_cls)):
            raise SynaugError("a DFR draw is missing a class; raise per_cell or check the data")
        coefs.append(clf.coef_)
        inters.append(clf.intercept_)
    _set_linear_head(model, np.mean(coefs, 0), np.mean(inters, 0), scaler.mean_, scaler.scale_, device)
    return {"variant": "train draws (earlier synaug variant)", "fit_on": "real training rows",
            "C": best_C, "val_scores": scores, "select": cfg.dfr_select if scores else "none (no val rows)",
            "repeats": len(draws), "balance_by": by, "subset_size": int(len(draws[0]))}


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
        if cfg.data.eval_resize is None and meta.get("eval_resize"):
            cfg.data.eval_resize = meta["eval_resize"]
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
        Validation rows (DFR^Tr_Val fits and tunes on them; reported metrics). Default: the
        ``val`` rows of ``manifest``. Test rows are refused.
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
    record: dict = {"mode": cfg.mode, "seed": cfg.seed,
                    "start": {"model": cfg.start, "epoch": getattr(model, "meta", {}).get("epoch")}}
    subset = _fit_last_layer(model, manifest, val, cfg, device, cosine_scale, record)
    model.head.requires_grad_(False)
    if val is not None:
        record["val"] = _val_scores(model, val, cfg, device)
    model.meta = {**getattr(model, "meta", {}), "stage": "finetune", "finetune": record}
    if out_dir is not None:
        _write(Path(out_dir), model, cfg, subset, record)
    return model.eval()


def _fit_last_layer(model: Classifier, manifest: Manifest, val, cfg: FinetuneConfig, device,
                    cosine_scale: float, record: dict) -> Optional[Manifest]:
    """Fit the head (and ``train_blocks`` last blocks) in place; returns the balanced subset (None for DFR)."""
    if cfg.mode == "dfr":
        record["dfr"] = _dfr(model, manifest, val, cfg, device)
        return None
    subset, record["subset"], weights = step3_rows(manifest, cfg, cfg.balance_for(False))
    if cfg.train_blocks:
        record["train_blocks"] = cfg.train_blocks
        if cfg.mode == "retrain":
            reset_head(model.head, seed_for(cfg.seed, 0x1A17))
        record["history"] = train_blocks_and_head(model, subset, cfg, device, cosine_scale, weights)
        return subset
    feats, labels = extract_features(model, subset, cfg, device, cfg.augment_views, cfg.seed)
    if weights is not None and cfg.augment_views:
        weights = weights.repeat(cfg.augment_views + 1)   # every feature copy of a row weighs as the row
    head = copy.deepcopy(model.head).cpu()
    if cfg.mode == "retrain":
        reset_head(head, seed_for(cfg.seed, 0x1A17))
    head.requires_grad_(True)
    record["history"] = train_head(head, feats, labels, cfg, cosine_scale, weights)
    model.head = head.to(device)
    return subset


def _val_scores(model: Classifier, val: Manifest, cfg: FinetuneConfig, device) -> dict:
    images = ImageSet(val, cfg.data, "model selection", device, cfg.channels_last, cfg.augment.mean, cfg.augment.std)
    pred = predict_logits(model, images, cfg.data.eval_batch_size).argmax(1).numpy()
    yv = val.df["label"].to_numpy()
    cells = cell_ids(yv, val.df["group"].to_numpy(), val.num_groups)
    scores = {m: _score(m, yv, pred, cells) for m in ("top1", "mean_class", "worst_group")}
    if cfg.mode == "dfr" and cfg.dfr_data == "val":
        scores["note"] = "DFR^Tr_Val was fit on these validation rows (optimistic)"
    return scores


def _write(out: Path, model: Classifier, cfg: FinetuneConfig, subset: Optional[Manifest], record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out / "config.yaml")
    if subset is not None:
        subset.write(out / "finetune_subset.parquet")
    write_json_atomic(out / "finetune.json", record)
    ckpt.save_model(model, out / "model.safetensors", {k: v for k, v in model.meta.items() if k != "spec"})
