"""Evaluation: predictions of a model on a manifest and every metric the paper reports.

Outputs (when ``out_dir`` is given): ``metrics.json``, ``per_class.csv``,
``predictions.csv`` and ``confusion.png``; with ``features_out``, the encoder features for a later
evaluation of a model with the same encoder (:mod:`synaug.train.features`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..allocator import keep_freed_memory
from ..errors import SynaugError
from ..io import atomic_path, write_json_atomic
from ..manifest import Manifest
from .. import metrics as M
from .config import AugmentConfig, DataConfig
from . import features as stored_features
from .data import ImageSet
from .precision import autocast, resolve_amp


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SynaugError(f"unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SynaugError("device cuda requested but no CUDA GPU is available")
    return dev


def _forward_all(model: torch.nn.Module, images: ImageSet, batch_size: int, amp: str, fn) -> list:
    """``fn(batch)`` over every row of ``images`` in row order, eval mode, under ``amp``'s autocast."""
    was_training = model.training
    model.eval()
    prec = resolve_amp(amp, images.device)[0]
    out = []
    for batch in images.batches(torch.arange(len(images)), batch_size, None, torch.Generator()):
        with autocast(prec, images.device):
            out.append(fn(batch.x))
    model.train(was_training)
    return out


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, images: ImageSet, batch_size: int = 512,
                   features: bool = False, amp: str = "off") -> torch.Tensor:
    """Logits (or encoder features) of every row of ``images``, in row order, on the CPU (fp32).

    Runs in eval mode under ``torch.inference_mode`` (and autocast for ``amp`` ``auto`` / ``bf16``
    / ``fp16``, see :mod:`synaug.train.precision`); the model's train/eval state is restored.
    """
    fn = model.features if features else model
    return torch.cat([o.float().cpu() for o in _forward_all(model, images, batch_size, amp, fn)])


@torch.inference_mode()
def predict_features_and_logits(model: torch.nn.Module, images: ImageSet, batch_size: int = 512,
                                amp: str = "off") -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder features (in the dtype the encoder made them) and fp32 logits of one pass
    (``model(x)`` is ``model.head(model.features(x))``)."""
    def both(x):
        f = model.features(x)
        return f, model.head(f)

    out = _forward_all(model, images, batch_size, amp, both)
    return torch.cat([f.cpu() for f, _ in out]), torch.cat([g.float().cpu() for _, g in out])


@torch.inference_mode()
def head_logits(model: torch.nn.Module, feats: torch.Tensor, batch_size: int, amp: str,
                device: torch.device) -> torch.Tensor:
    """``model.head`` on stored features, in the batches and under the autocast
    :func:`predict_features_and_logits` ran it: the same logits, without the encoder."""
    was_training = model.training
    model.eval()
    prec = resolve_amp(amp, device)[0]
    out = []
    for chunk in feats.split(batch_size):
        with autocast(prec, device):
            out.append(model.head(chunk.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def real_train_counts(manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """Class counts ``(C,)`` and class x group counts ``(C, G)`` of the REAL training rows
    (``split == "train"``, ``source == "real"``): the counts SYNAuG uses for the
    many/medium/few buckets and for weighting group accuracies (before uniformization)."""
    df = manifest.df
    real = manifest.select(((df["split"] == "train") & (df["source"] == "real")).to_numpy())
    return real.class_counts(), real.cell_counts()


def cell_ids(labels: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """Class x group cell id ``label * G + group`` (e.g. Waterbirds' landbird/water cell)."""
    G = max(num_groups, 1)
    return labels * G + np.clip(groups, 0, None)


GROUP_ACCURACY_DEFINITIONS = {
    "worst": "lowest accuracy over the class x group cells of the test rows",
    "mean": "accuracy over all test rows with a group (plain test accuracy: the Waterbirds 'mean' of the "
            "DFR and group_DRO code)",
    "unweighted_mean": "mean of the class x group cell accuracies (each cell counts once)",
    "weighted_mean": "class x group cell accuracies weighted by the real training cell counts",
}


def fairness_block(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, classes: list[str],
                   group_names: list[str], train_cell_counts=None, counts_source: str = "given") -> dict:
    """Fairness gaps over the sensitive attribute ``group`` only (never over class x group cells),
    each with its definition, the headline DP / EO / ED of :data:`synaug.metrics.HEADLINE_SET`
    (fairlearn's definitions) and, beside them, the paper's reading (:data:`synaug.metrics.PAPER_SET`).

    Two classes: every gap of :func:`synaug.metrics.fairness_metrics` (class 1 = positive);
    ``demographic_parity_population`` takes each group's class shares from
    ``train_cell_counts`` (C x G), or from the evaluated rows for a group without training rows.
    More classes: Jung et al.'s class-wise accuracy gap (mean and max over classes).
    """
    C = len(classes)
    out: dict = {"over": f"group ({', '.join(group_names)})"}
    if C == 2:
        shares = {int(k): (float(((groups == k) & (y_true == 0)).sum()), float(((groups == k) & (y_true == 1)).sum()))
                  for k in np.unique(groups)}
        src = "test rows"
        if train_cell_counts is not None:
            cc = np.asarray(train_cell_counts, dtype=float).reshape(C, -1)
            for k in shares:
                if k < cc.shape[1] and cc[:, k].sum() > 0:
                    shares[k] = (float(cc[0, k]), float(cc[1, k]))
            src = f"training cell counts ({counts_source})"
        vals = M.fairness_metrics(y_true, y_pred, groups, shares)
        out.update(vals)
        out["positive_class"] = classes[1]
        out["population_shares"] = {group_names[k]: [v[0] / max(sum(v), 1e-12), v[1] / max(sum(v), 1e-12)]
                                    for k, v in shares.items()}
        out["population_shares_from"] = src
        for field, name in (("headline", M.HEADLINE_SET), ("paper_reading", M.PAPER_SET)):
            hs = M.DEFINITION_SETS[name]
            out[field] = {"set": name, "label": hs["label"], **{k: vals[hs[k]] for k in ("DP", "EO", "ED")},
                          "keys": {k: hs[k] for k in ("DP", "EO", "ED")}}
        out["sets"] = {name: {k: vals[d[k]] for k in ("DP", "EO", "ED")} for name, d in M.DEFINITION_SETS.items()}
    else:
        vals = {"class_accuracy_gap_mean": M.class_accuracy_gap(y_true, y_pred, groups, "mean"),
                "class_accuracy_gap_max": M.class_accuracy_gap(y_true, y_pred, groups, "max")}
        out.update(vals)
    out["definitions"] = {k: M.DEFINITIONS[k] for k in vals}
    return out


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, classes: list[str],
                    group_names: Optional[list[str]], train_counts=None, train_cell_counts=None,
                    counts_source: str = "given") -> dict:
    """All metrics as one JSON-ready dict (see :func:`evaluate`)."""
    C = len(classes)
    out: dict = {"num_samples": int(len(y_true)), "top1": M.top1_accuracy(y_true, y_pred)}
    pc = M.per_class_accuracy(y_true, y_pred, C)
    out["mean_class_accuracy"] = float(np.nanmean(pc)) if np.isfinite(pc).any() else float("nan")
    out["per_class"] = {classes[c]: (None if np.isnan(pc[c]) else float(pc[c])) for c in range(C)}
    if train_counts is not None:
        tc = np.asarray(train_counts)
        if tc.shape != (C,):
            raise SynaugError(f"train_counts has {tc.size} entries, the model has {C} classes")
        out["shot"] = M.shot_accuracy(y_true, y_pred, tc)
        out["shot_counts"] = {"source": counts_source, "counts": tc.astype(int).tolist(),
                              "buckets": {"many": ">100", "medium": "20-100", "few": "<20"}}
    has_groups = group_names is not None and (groups >= 0).any()
    G = len(group_names) if group_names else 0
    cells = cell_ids(y_true, groups, G)
    if has_groups:
        keep = groups >= 0
        counts_arg = None
        if train_cell_counts is not None:
            counts_arg = np.asarray(train_cell_counts).reshape(-1)
        ga = M.group_accuracy(y_true[keep], y_pred[keep], cells[keep], counts_arg)
        per = M.per_group_accuracy(y_true[keep], y_pred[keep], cells[keep])
        ga["per_group"] = {f"{classes[k // G]}/{group_names[k % G]}": v for k, v in per.items()}
        ga["groups"] = "class x group cells, named <class>/<group>"
        ga["definitions"] = dict(GROUP_ACCURACY_DEFINITIONS)
        if counts_arg is not None:
            ga["weighted_by"] = f"training cell counts ({counts_source})"
        else:
            ga["definitions"].pop("weighted_mean")
        out["group_accuracy"] = ga
        per_attr = M.per_group_accuracy(y_true[keep], y_pred[keep], groups[keep])
        out["attribute_accuracy"] = {group_names[k]: v for k, v in per_attr.items()}
        out["fairness"] = fairness_block(y_true[keep], y_pred[keep], groups[keep], classes, group_names,
                                         train_cell_counts, counts_source)
    return out


def evaluate(model: torch.nn.Module, manifest: Manifest, train_counts=None, out_dir=None,
             train_group_counts=None, *, counts_source: str = "given", data: Optional[DataConfig] = None,
             augment: Optional[AugmentConfig] = None, device="auto", channels_last: bool = True,
             purpose: str = "evaluation", amp: str = "auto", features_out: Optional[Path] = None,
             features_from: Sequence[Path] = ()) -> dict:
    """Evaluate ``model`` on every row of ``manifest``.

    Parameters
    ----------
    model : Classifier
    manifest : Manifest
        Rows to evaluate (typically the test split; this is the one place it may be used).
    train_counts : array-like of int, shape (C,), optional
        Training images per class for the many/medium/few buckets. SYNAuG reports them by
        the *real* training counts before uniformization; say which in ``counts_source``.
    out_dir : path, optional
        Write ``metrics.json``, ``per_class.csv``, ``predictions.csv``, ``confusion.png``.
    train_group_counts : array-like, shape (C, G), optional
        Training counts per class x group cell; adds ``group_accuracy.weighted_mean``.
    counts_source : str
        Label recorded with the counts (e.g. "real train rows before uniformization").
    data, augment : configs, optional
        How images are decoded (size, cache) and normalised (mean/std of training).
    purpose : str
        "evaluation" (any split) or "model selection" (test rows refused).
    amp : {"auto", "off", "bf16", "fp16"}
        Precision of the forward passes (:func:`synaug.train.precision.resolve_amp`).
    features_out : path, optional
        Store the encoder features of these rows there (:mod:`synaug.train.features`).
    features_from : paths
        Stored features to reuse when their key matches this model's encoder and these rows
        (then only the head runs; ``encoder_features.reused_from`` in the result says so).

    Returns
    -------
    dict
        ``top1``, ``mean_class_accuracy``, ``per_class``, ``shot`` (with counts),
        ``group_accuracy`` / ``attribute_accuracy`` / ``fairness`` when groups exist.
    """
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()
    meta = getattr(model, "meta", {}) or {}
    # default to the training run's image size and normalisation (stored in the checkpoint)
    data = data or DataConfig(image_size=meta.get("image_size"), eval_resize=meta.get("eval_resize"))
    if augment is None:
        augment = (AugmentConfig(mean=tuple(meta["mean"]), std=tuple(meta["std"])) if "mean" in meta
                   else AugmentConfig())
    images = ImageSet(manifest, data, purpose, dev, channels_last, augment.mean, augment.std)
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    sharing = features_out is not None or bool(features_from)
    if not sharing:
        logits, reused = predict_logits(model, images, data.eval_batch_size, amp=amp), None
    else:
        logits, reused = _logits_sharing_features(model, manifest, images, data, augment, channels_last, amp,
                                                  features_out, features_from)
    y_pred = logits.argmax(1).numpy()
    y_true = manifest.df["label"].to_numpy()
    groups = manifest.df["group"].to_numpy()
    res = compute_metrics(y_true, y_pred, groups, manifest.classes, manifest.groups, train_counts,
                          train_group_counts, counts_source)
    if sharing:
        res["encoder_features"] = {"reused_from": None if reused is None else str(reused),
                                   "note": "the head applied to the stored features of the same encoder"
                                   if reused is not None else "computed"}
    if out_dir is not None:
        write_outputs(Path(out_dir), res, manifest, y_pred, train_counts)
    return res


def _logits_sharing_features(model, manifest: Manifest, images: ImageSet, data: DataConfig, augment: AugmentConfig,
                             channels_last: bool, amp: str, out: Optional[Path], src: Sequence[Path]):
    """Logits from stored features of the same encoder when ``src`` has them, else one pass that
    also stores the features at ``out``. Returns ``(logits, path reused or None)``."""
    dev = images.device
    key = stored_features.features_key(model, manifest, data, augment, channels_last, resolve_amp(amp, dev)[0], dev)
    feats, reused = stored_features.load(src, key)
    if feats is not None:   # the key covers the rows, so the count matches
        return head_logits(model, feats, data.eval_batch_size, amp, dev), reused
    if key is None:
        return predict_logits(model, images, data.eval_batch_size, amp=amp), None
    feats, logits = predict_features_and_logits(model, images, data.eval_batch_size, amp)
    if out is not None:
        stored_features.save(Path(out), feats, key)
    return logits, None


def write_outputs(out_dir: Path, res: dict, manifest: Manifest, y_pred: np.ndarray, train_counts=None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = manifest.df["label"].to_numpy()
    C = manifest.num_classes
    cm = M.confusion_matrix(y_true, y_pred, C)
    rows = []
    buckets = M.shot_buckets(train_counts) if train_counts is not None else None
    for c, name in enumerate(manifest.classes):
        n = int(cm[c].sum())
        rows.append({"label": c, "class_name": name, "n_eval": n, "correct": int(cm[c, c]),
                     "accuracy": (cm[c, c] / n) if n else float("nan"),
                     "train_count": int(train_counts[c]) if train_counts is not None else None,
                     "bucket": buckets[c] if buckets is not None else None})
    _write_csv(out_dir / "per_class.csv", pd.DataFrame(rows))
    pred = manifest.df[["path", "source", "split", "label", "group"]].copy()
    pred["pred"] = y_pred
    _write_csv(out_dir / "predictions.csv", pred)
    plot_confusion(cm, manifest.classes, out_dir / "confusion.png")
    write_json_atomic(out_dir / "metrics.json", json_safe(res))


def json_safe(obj):
    """NaN / inf -> None, so the file is strict JSON (an empty bucket has no accuracy)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrix as a PNG (matplotlib, Agg backend)."""
    # Figure + Agg canvas directly: no pyplot, no global backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    C = len(classes)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, np.maximum(rows, 1))
    size = min(4 + 0.35 * C, 24)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if C <= 30:
        ax.set_xticks(range(C), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(C), classes, fontsize=8)
    if C <= 15:
        for i in range(C):
            for j in range(C):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
