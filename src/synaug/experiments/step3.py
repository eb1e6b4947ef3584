"""Step 3 of SYNAuG (last-layer fine-tuning): a sweep of its size, epochs and learning rate on
the VALIDATION split.

The paper gives no subset size, epochs or learning rate for the fine-tuning step. This sweep
reuses the trained SYNAuG model of the CIFAR-10-LT runs (run ``synaug``, which shares its
trained model with ``synaug_retrain``), so it costs only head training: for every point of the
grid the head is fine-tuned on a class-balanced subset of the REAL training images (frozen
encoder) and scored on the validation split (mean-class accuracy, the runs' model-selection
metric). The test split is never read. The best point is compared with the defaults the runs
use (``configs/table1-cpu.yaml``'s ``finetune`` section over :class:`FinetuneConfig`).

``per_cell`` = images per class; ``null`` is the smallest class count (a balanced subset);
larger values take every image of the classes that have fewer (the subset is then only
partly balanced).
"""
from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import numpy as np

from .cifar_lt import REUSE, lt_specs, setup  # noqa: F401  (REUSE, setup: read by the driver)
from .common import Context, cached_json, fmt, mean_std

TITLE = "Step 3 — last-layer fine-tuning: subset size, epochs and learning rate (validation sweep)"
GRID = {"small": {"per_cell": [None, 5, 10, 20], "epochs": [10, 30, 120], "lr": [0.001, 0.01, 0.1], "draws": 3},
        "tiny": {"per_cell": [None, 2], "epochs": [2], "lr": [0.01, 0.1], "draws": 1}}
BASE_RUN = "synaug"
METRIC = "mean_class"


def specs(scale: str) -> dict[str, dict]:
    lt = lt_specs(scale)
    return {k: lt[k] for k in ("synaug", "synaug_retrain")}


def runs(scale: str) -> list[str]:
    return ["synaug", "synaug_retrain"]


def grid_points(grid: dict) -> list[tuple]:
    return list(itertools.product(grid["per_cell"], grid["epochs"], grid["lr"]))


def _val_score(model, val, cfg) -> dict:
    """Validation metrics of ``model`` as it is (before any last-layer step)."""
    from ..train.data import ImageSet
    from ..train.evaluate import cell_ids, predict_logits, resolve_device
    from ..train.finetune import _score, with_training_norm

    cfg = with_training_norm(cfg, model)
    images = ImageSet(val, cfg.data, "model selection", resolve_device(cfg.device), cfg.channels_last,
                      cfg.augment.mean, cfg.augment.std)
    pred = predict_logits(model.to(resolve_device(cfg.device)), images, cfg.data.eval_batch_size).argmax(1).numpy()
    y = val.df["label"].to_numpy()
    cells = cell_ids(y, val.df["group"].to_numpy(), val.num_groups)
    return {m: _score(m, y, pred, cells) for m in ("top1", "mean_class", "worst_group")}


def sweep(run_dir: Path, grid: dict, base_ft: dict, seed: int) -> dict:
    """Fine-tune the head of ``run_dir``'s trained model at every grid point, ``grid["draws"]``
    times with different subset draws (seeds ``1000 * seed + k``); mean validation scores."""
    from ..manifest import Manifest
    from ..train import FinetuneConfig, finetune_last_layer, load_checkpoint

    m = Manifest.read(run_dir / "data" / "train.parquet")   # real + synthetic train rows and val rows; no test
    val = m.split("val")
    model = load_checkpoint(run_dir / "train" / "model.safetensors")
    base = FinetuneConfig.model_validate({**base_ft, "seed": seed, "progress": False})
    out = {"before": _val_score(copy.deepcopy(model), val, base), "points": []}
    draws = int(grid.get("draws", 1))
    for per_cell, epochs, lr in grid_points(grid):
        recs = []
        for k in range(draws):
            cfg = base.model_copy(update={"per_cell": per_cell, "epochs": epochs, "lr": lr, "seed": 1000 * seed + k})
            recs.append(finetune_last_layer(copy.deepcopy(model), m, cfg, val_manifest=val).meta["finetune"])
        out["points"].append({"per_cell": per_cell, "epochs": epochs, "lr": lr, "draws": draws,
                              "subset": int(sum(recs[0]["subset"]["cells"].values())),
                              **{k: float(np.mean([r["val"][k] for r in recs]))
                                 for k in ("top1", "mean_class", "worst_group")}})
    return out


def _key(p) -> tuple:
    return (p["per_cell"], p["epochs"], p["lr"])


def analyse(runners, ctx: Context) -> tuple[list[str], float]:
    from ..train import FinetuneConfig

    grid = GRID[ctx.scale]
    base_ft = {k: v for k, v in (specs(ctx.scale)[BASE_RUN].get("finetune") or {}).items()
               if k not in ("seed", "progress")}
    default = FinetuneConfig.model_validate(base_ft)
    default_key = (default.per_cell, default.epochs, default.lr)
    results, secs = _sweeps(runners, grid, base_ft)
    keys = [_key(p) for p in results[0]["points"]]
    score = {k: [100.0 * {_key(p): p for p in res["points"]}[k][METRIC] for res in results] for k in keys}
    before = [100.0 * res["before"][METRIC] for res in results]
    best = max(keys, key=lambda k: mean_std(score[k])[0])   # first in grid order on ties
    md = [f"The paper gives no size, epochs or learning rate for SYNAuG's last-layer step. This sweep fine-tunes the "
          f"head of the trained SYNAuG model of the CIFAR-10-LT runs (run `{BASE_RUN}`: SD 1.4 images + Mixup) on "
          "class-balanced subsets of the REAL training images and scores each point by **validation** mean-class "
          f"accuracy (%; averaged over {grid.get('draws', 1)} subset draws per trained model; {len(results)} seed(s), "
          "mean ± std over seeds). The test split is never read. Other settings as in the "
          f"runs: momentum {default.momentum}, weight decay {default.weight_decay}, batch {default.batch_size}, "
          f"{default.schedule} schedule. Before the last-layer step: {fmt(before)}.", ""]
    md += _grid_table(grid, score, best, default_key)
    md += ["", f"- Best point: per class {_pc_label(best[0])}, {best[1]} epochs, lr {best[2]:g} "
           f"({fmt(score[best])})."]
    md += _default_lines(score, keys, best, default_key)
    n_val = _val_rows(runners[0].dir / BASE_RUN)
    if n_val:
        acc = mean_std(score[best])[0] / 100.0
        se = 100.0 * math.sqrt(acc * (1.0 - acc) / n_val)
        md.append(f"- Resolution: the validation split has {n_val} images, one standard error of one accuracy "
                  f"measurement is about {se:.1f} points, and the best of {len(keys)} grid points is biased upwards "
                  "by the choice itself.")
    gain = [b - a for a, b in zip(before, score[best])]
    md.append(f"- Fine-tuning at the best point vs no last-layer step: {np.mean(gain):+.2f} points validation "
              "mean-class accuracy.")
    return md, secs


def _sweeps(runners, grid: dict, base_ft: dict) -> tuple[list[dict], float]:
    """Each seed's sweep (cached beside its runs, keyed by the trained model's digest)."""
    from ..stages import file_digest

    results, secs = [], 0.0
    for r in runners:
        r.run(BASE_RUN)
        d = r.dir / BASE_RUN
        want = {"grid": grid, "base": base_ft, "seed": r.seed, "model": file_digest(d / "train" / "model.safetensors"),
                "metric": METRIC}
        got = cached_json(r.dir / "step3_sweep.json", want, lambda: sweep(d, grid, base_ft, r.seed))
        results.append(got["result"])
        secs += got["seconds"]
    return results, secs


def _pc_label(pc) -> str:
    return "min (= smallest class)" if pc is None else str(pc)


def _grid_table(grid: dict, score: dict, best: tuple, default_key: tuple) -> list[str]:
    md = ["| images per class | epochs | " + " | ".join(f"lr {lr:g}" for lr in grid["lr"]) + " |",
          "|---|---|" + "---|" * len(grid["lr"])]
    for pc in grid["per_cell"]:
        for ep in grid["epochs"]:
            cells = []
            for lr in grid["lr"]:
                txt = fmt(score[(pc, ep, lr)])
                if (pc, ep, lr) == best:
                    txt = f"**{txt}**"
                if (pc, ep, lr) == default_key:
                    txt += " (default)"
                cells.append(txt)
            md.append(f"| {_pc_label(pc)} | {ep} | " + " | ".join(cells) + " |")
    return md


def _default_lines(score: dict, keys: list, best: tuple, default_key: tuple) -> list[str]:
    """The runs' default against the best point, and the span of the balanced points."""
    if default_key not in score:
        return [f"- The runs' default ({default_key}) is not a grid point."]
    dm, ds = mean_std([b - a for a, b in zip(score[default_key], score[best])])
    md = [f"- The runs' default (per class {_pc_label(default_key[0])}, {default_key[1]} epochs, lr "
          f"{default_key[2]:g}; configs/table1-cpu.yaml over FinetuneConfig): {fmt(score[default_key])} — "
          + ("**the sweep's best point**." if default_key == best else
             f"best − default = {dm:+.2f}" + ("" if math.isnan(ds) else f" ± {ds:.2f}") + " points; "
             + ("**within one seed-to-seed std of the best**." if not math.isnan(ds) and dm <= ds
                else "**not the best point: consider the best point as the default**."))]
    if default_key[0] is None:
        balanced = [k for k in keys if k[0] is None]
        bb = max(balanced, key=lambda k: mean_std(score[k])[0])
        low_lr = [mean_std(score[k])[0] for k in balanced if k[2] <= default_key[2]]
        md.append(f"- Only the 'min' rows are class-balanced subsets (the paper's step 3): with a larger per-class "
                  "count, classes with fewer real images give all they have, so the subset is imbalanced again. "
                  f"Best balanced point: {bb[1]} epochs, lr {bb[2]:g} ({fmt(score[bb])}); balanced points with lr "
                  f"<= {default_key[2]:g} span {min(low_lr):.2f}–{max(low_lr):.2f}.")
    return md


def _val_rows(run_dir: Path) -> int:
    """Validation rows of a finished run's real manifest (0 if it cannot be read)."""
    import pandas as pd

    try:
        return int((pd.read_parquet(run_dir / "data" / "real.parquet", columns=["split"])["split"] == "val").sum())
    except (OSError, ValueError, KeyError):
        return 0
