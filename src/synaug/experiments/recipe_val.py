"""Recipe validation: a larger validation set that ranks finished recipes (issue 17).

A run's own validation split (``data.val_per_class``: 20 per class at the demo's configuration,
200 images) picks its epoch. As a judge between recipes it is too small: one run's accuracy on it
carries a binomial standard error of about 3.5 points, more than most differences between the gap
options, so a choice made on it is close to a coin toss.

This set is drawn after the fact from the run's held-out real images (``data/heldout.parquet``:
training images of the dataset the long-tail draw left out, disjoint from the run's train, val and
test rows), :data:`PER_CLASS` per class (2,000 images for CIFAR-10: about 1.1 points), seeded by the
run's seed, so every row of one seed is judged on the same images (:func:`score` returns the set's
digest to check that). It never reaches training, fine-tuning or epoch selection: it is read only
to rank finished runs. A run that trained or fine-tuned on any of its images (the held-out-real
reference draws its "synthetic" images from the same pool) gets no score instead of a flattering one.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import SynaugError
from ..manifest import Manifest
from .common import cached_json

PER_CLASS = 200
FOLDER = "eval/recipe-val"


def draw(heldout: Manifest, per_class: int, seed: int) -> Manifest:
    """``per_class`` rows of every class of ``heldout`` (a seeded permutation per class), as split "val"."""
    if per_class < 1:
        raise SynaugError(f"recipe validation: per_class must be >= 1, got {per_class}")
    labels = heldout.df["label"].to_numpy()
    keep = np.zeros(len(heldout), bool)
    for c in range(heldout.num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise SynaugError(f"recipe validation: class {heldout.classes[c]!r} has {len(idx)} held-out images, "
                              f"{per_class} needed")
        rng = np.random.default_rng([seed, c, 0x5E1])
        keep[rng.choice(idx, per_class, replace=False)] = True
    out = heldout.select(keep)
    out.df["split"] = "val"
    return out


def digest(m: Manifest) -> str:
    """Which images a set holds (path and label, order-free)."""
    rows = sorted(f"{p}\t{y}" for p, y in zip(m.df["path"], m.df["label"]))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def used_paths(run_dir: Path) -> set[str]:
    """Every real image a run trained, selected epochs or fine-tuned on: the paths of its training
    manifest (train and val rows) and of its fine-tuning subset, and the pool image behind each
    synthetic row (``source_file``)."""
    out: set[str] = set()
    for f in (run_dir / "data" / "train.parquet", run_dir / "finetune" / "finetune_subset.parquet"):
        if f.is_file():
            df = Manifest.read(f).df
            out |= set(df.loc[df["source"] == "real", "path"])
            if "source_file" in df:
                out |= set(df["source_file"].dropna()) - {""}
    return out


def final_model(run_dir: Path) -> Path:
    """The run's final model: after the last-layer step when there is one, else the trained one."""
    for f in (run_dir / "finetune" / "model.safetensors", run_dir / "train" / "model.safetensors"):
        if f.is_file():
            return f
    raise SynaugError(f"{run_dir}: no trained model (finetune/ or train/model.safetensors)")


def score(run_dir: str | Path, per_class: int = PER_CLASS) -> dict:
    """Mean-class accuracy (%) of the run's final model on its seed's recipe-validation set.

    Cached in ``eval/recipe-val/result.json`` per (model file, set). Returns ``{"mean_class",
    "top1", "n", "set"}``, or ``{"overlap": k, "n", "set"}`` (no accuracy) when the run trained on
    ``k`` of the set's images.
    """
    import yaml

    from ..stages import file_digest

    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    held = run_dir / "data" / "heldout.parquet"
    if not held.is_file():
        raise SynaugError(f"{run_dir}: no held-out real images (data/heldout.parquet) to draw recipe validation from")
    model = final_model(run_dir)
    want = {"model": file_digest(model), "heldout": file_digest(held), "per_class": per_class, "seed": cfg["seed"]}

    def compute() -> dict:
        rows = draw(Manifest.read(held), per_class, int(cfg["seed"]))
        overlap = len(set(rows.df["path"]) & used_paths(run_dir))
        base = {"n": len(rows), "set": digest(rows)}
        if overlap:
            return {"overlap": overlap, **base}
        from ..train import evaluate, load_checkpoint

        r = evaluate(load_checkpoint(model), rows, purpose="model selection")
        return {"mean_class": round(100.0 * r["mean_class_accuracy"], 4), "top1": round(100.0 * r["top1"], 4), **base}

    return cached_json(run_dir / FOLDER / "result.json", want, compute)["result"]


def fields(run_dir: str | Path) -> dict:
    """:func:`score` as the experiment tables read it: ``rval`` (mean-class %, NaN for a run that
    trained on the set's images), ``n_rval`` (the set's size) and ``rval_set`` (its digest)."""
    r = score(run_dir)
    return {"rval": r.get("mean_class", float("nan")), "n_rval": r["n"], "rval_set": r["set"]}


__all__ = ["PER_CLASS", "draw", "digest", "used_paths", "final_model", "score", "fields"]
