#!/usr/bin/env python
"""Reproduce the paper's findings at CPU scale, with several seeds, and write docs/results.md.

Every run is ``synaug.run.run(load_run_config(None, base=...), run_dir)`` built from the
``configs/*-cpu.yaml`` files (the ``small`` scale is exactly those files; ``tiny`` shrinks them
to a smoke test), so each run is cached, resumable after a kill, and writes its own report
under ``--out``. The "synthetic" images are held-out real CIFAR-10 training images (optionally
passed through the pool backend's fixed synthetic-domain shift), NOT Stable Diffusion output:
no diffusion weights exist offline.

Experiments (``--only``): table1, table2, table5, fig2, fig3 (alias probe), fig5 (alias toy).

    .venv/bin/python benchmarks/reproduce_cpu.py --scale small --seeds 0 1 2
    .venv/bin/python benchmarks/reproduce_cpu.py --scale tiny --seeds 0 --only fig5 probe \\
        --out /tmp/rep --results /tmp/rep/results.md

The findings in the results file are computed from the measured numbers; nothing is hard-coded
except the paper's own values (copied from the paper text, ``PAPER`` below).
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EXPERIMENTS = ("table1", "table2", "table5", "fig2", "fig3", "fig5")
ALIASES = {"probe": "fig3", "toy": "fig5", "replacement": "fig2"}

# ------------------------------------------------------------------------------ paper values
# Copied from the paper text (CIFAR-100-LT, IF 100 column; Fig. 2 / 3 values quoted in Sec. 4.2).
PAPER = {
    "table1": {"nomix": 53.54, "nomix_no_modifier": 52.41, "mixup": 55.45, "retrain": 57.31, "finetune": 58.59},
    "table2": {"ce": (68.31, 36.88, 4.87, 37.96), "weight_balancing": (72.60, 51.86, 32.63, 53.35),
               "synaug": (74.06, 56.63, 42.83, 58.59), "balanced_softmax": None, "ldam_drw": None},
    "table5": {"ce": 37.96, "mixup_lt": 36.21, "cutmix_lt": 37.91, "web": 54.06, "synaug": 58.59},
    "fig2": {"class_half_real": 43.96, "ratio_1pct_real": 41.11},
    "fig3": 74.16,
}

# ------------------------------------------------------------------------------ scales
# small = the configs/*-cpu.yaml files as they are; tiny = a smoke test of the whole pipeline.
_TINY_TRAIN = {"epochs": 1, "model": {"width": 4}, "progress": False,
               "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}}
SCALES = {
    "small": {"lt": {}, "balanced": {}, "fig2_k": [2, 5, 8], "fig2_r": [0.5, 0.9, 0.98],
              "probe_n": 2500, "wb_stage2": 5},
    "tiny": {"lt": {"data": {"img_max": 40, "imbalance_factor": 10, "val_per_class": 2, "test_per_class": 10},
                    "train": _TINY_TRAIN, "finetune": {"epochs": 2, "progress": False}},
             "balanced": {"data": {"img_max": 10, "val_per_class": 2, "test_per_class": 10},
                          "train": _TINY_TRAIN},
             "fig2_k": [5], "fig2_r": [0.9], "probe_n": 100, "wb_stage2": 1},
}


STAGES = ("plan", "generate", "finetune")


def _merge(base: dict, over: dict) -> dict:
    """Deep merge; a stage section that is off in ``base`` (null or absent) stays off."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict):
            if k in STAGES and out.get(k) is None:
                continue
            out[k] = _merge(out.get(k) or {}, v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def run_specs(scale: str) -> dict[str, dict]:
    """Every run the experiments use: name -> raw run config (before the seed is set)."""
    sc = SCALES[scale]
    lt = lambda f: _merge(_load(f), sc["lt"])  # noqa: E731
    bal = lambda f: _merge(_load(f), sc["balanced"])  # noqa: E731
    t1, t2, t5, f2, f3 = lt("table1-cpu.yaml"), lt("table2-cpu.yaml"), lt("table5-cpu.yaml"), \
        bal("fig2-cpu.yaml"), bal("fig3-cpu.yaml")
    epochs = t2["train"]["epochs"]
    specs = {
        "ce": t2,
        "balanced_softmax": _merge(t2, {"train": {"algorithm": {"name": "balanced_softmax"}}}),
        "ldam_drw": _merge(t2, {"train": {"algorithm": {"name": "ldam_drw",
                                                        "ldam": {"drw_epoch": int(0.8 * epochs)}}}}),
        "weight_balancing": _merge(t2, {"train": {"optim": {"weight_decay": 5e-3}, "algorithm": {
            "name": "weight_balancing", "weight_balancing": {"stage2_epochs": sc["wb_stage2"]}}}}),
        "mixup_lt": _merge(t2, {"train": {"mix": {"mixup": True}}}),
        "cutmix_lt": _merge(t2, {"train": {"mix": {"mixup": False, "cutmix": True}}}),
        "synaug_nomix": {**_merge(t1, {"train": {"mix": {"mixup": False}}}), "finetune": None},
        "synaug_retrain": _merge(t1, {"finetune": {"mode": "retrain"}}),
        "synaug": t1,
        "web": t5,
        "real_balanced": f3,
    }
    for k in sc["fig2_k"]:
        specs[f"replace_class_k{k}"] = _merge(f2, {"plan": {"mode": "replace-class", "k": k}})
    for r in sc["fig2_r"]:
        specs[f"replace_ratio_{r:g}"] = _merge(f2, {"plan": {"mode": "replace-ratio", "ratio": r, "k": None}})
    for name, text in DESCRIPTIONS.items():
        if name in specs:
            specs[name]["description"] = text
    for name in specs:
        if name.startswith("replace_"):
            p = specs[name]["plan"]
            specs[name]["description"] = (f"replacement test: real images of k = {p['k']} classes replaced" if
                                           p["mode"] == "replace-class" else
                                           f"replacement test: a share r = {p['ratio']:g} of every class replaced")
    return specs


DESCRIPTIONS = {
    "ce": "CE on the long-tailed real data",
    "balanced_softmax": "balanced softmax on the long-tailed real data",
    "ldam_drw": "LDAM-DRW on the long-tailed real data",
    "weight_balancing": "weight balancing (wd 5e-3 + MaxNorm head stage) on the long-tailed real data",
    "mixup_lt": "Mixup on the long-tailed real data (no uniformization)",
    "cutmix_lt": "CutMix on the long-tailed real data (no uniformization)",
    "synaug_nomix": "uniformized with the shifted pool, no Mixup, no last-layer step (Table 1 a/b)",
    "synaug_retrain": "uniformized with the shifted pool + Mixup, last layer re-trained (Table 1 c/d)",
    "synaug": "SYNAuG: shifted pool + Mixup + last-layer fine-tuning (Table 1 e)",
    "web": "uniformized with the unshifted held-out pool (web-crawled stand-in) + Mixup + fine-tuning",
    "real_balanced": "balanced real data only (Fig. 2 without replacement; the probe's feature model)",
}


# runs whose trained model (and data / generation) another run can reuse: only the last-layer step differs
REUSE = {"synaug": "synaug_retrain"}


def runs_for(exp: str, scale: str) -> list[str]:
    sc = SCALES[scale]
    return {
        "table1": ["synaug_nomix", "synaug_retrain", "synaug"],
        "table2": ["ce", "balanced_softmax", "ldam_drw", "weight_balancing", "synaug_retrain", "synaug"],
        "table5": ["ce", "mixup_lt", "cutmix_lt", "web", "synaug_retrain", "synaug"],
        "fig2": ["real_balanced"] + [f"replace_class_k{k}" for k in sc["fig2_k"]]
                + [f"replace_ratio_{r:g}" for r in sc["fig2_r"]],
        "fig3": ["real_balanced"],
        "fig5": [],
    }[exp]


# ------------------------------------------------------------------------------ running
class Runner:
    """Runs (or loads from cache) the named runs of one seed under ``out/<scale>/seed<seed>/``."""

    def __init__(self, out: Path, scale: str, seed: int):
        self.dir = out / scale / f"seed{seed}"
        self.scale, self.seed = scale, seed
        self.specs = run_specs(scale)
        self.summaries: dict[str, dict] = {}

    def run(self, name: str) -> dict:
        from synaug.run import load_run_config, run

        if name in self.summaries:
            return self.summaries[name]
        if name in REUSE:
            self.run(REUSE[name])
            _seed_from(self.dir / REUSE[name], self.dir / name)
        raw = copy.deepcopy(self.specs[name])
        raw.update(name=name, seed=self.seed)
        cfg = load_run_config(None, base=raw)
        d = self.dir / name
        print(f"\n=== [{self.scale} seed {self.seed}] {name}: {cfg.description}", flush=True)
        t0 = time.perf_counter()
        summary = run(cfg, d)
        _add_time(d / "reproduce_time.json", time.perf_counter() - t0)
        self.summaries[name] = summary
        return summary

    def seconds(self, name: str) -> float:
        f = self.dir / name / "reproduce_time.json"
        return json.loads(f.read_text())["seconds"] if f.is_file() else 0.0


def _add_time(path: Path, secs: float) -> None:
    from synaug.io import write_json_atomic

    old = json.loads(path.read_text()) if path.is_file() else {"seconds": 0.0, "calls": 0}
    write_json_atomic(path, {"seconds": round(old["seconds"] + secs, 2), "calls": old["calls"] + 1})


def _seed_from(src: Path, dst: Path) -> None:
    """Copy the data / plan / generation / training outputs (and their stage records) of ``src``
    into ``dst`` so that ``synaug.run`` finds them up to date there (it re-checks every key)."""
    if (dst / "stages" / "train.json").is_file() or not (src / "stages" / "train.json").is_file():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "synthetic", "train", "eval/train"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, dirs_exist_ok=True)
    if (src / "plan.json").is_file():
        shutil.copy2(src / "plan.json", dst / "plan.json")
    (dst / "stages").mkdir(exist_ok=True)
    for st in ("data", "plan", "generate", "train", "eval-train"):
        if (src / "stages" / f"{st}.json").is_file():
            shutil.copy2(src / "stages" / f"{st}.json", dst / "stages" / f"{st}.json")


def res(s: dict, stage: str = "final") -> dict:
    return s["results"][s["final"] if stage == "final" else stage]


def top1(s: dict, stage: str = "final") -> float:
    return 100.0 * res(s, stage)["top1"]


def shot(s: dict, bucket: str, stage: str = "final") -> float:
    v = res(s, stage).get("shot", {}).get(bucket)
    return float("nan") if v is None else 100.0 * v


# ------------------------------------------------------------------------------ statistics
def mean_std(xs) -> tuple[float, float]:
    a = np.asarray([x for x in xs if x is not None and not math.isnan(x)], float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


def fmt(xs, digits: int = 2) -> str:
    m, s = mean_std(xs)
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if not math.isnan(s) else "")


def fmt_paper(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def compare(name_a: str, a: list[float], name_b: str, b: list[float], what: str,
            unit: str = "points") -> tuple[bool, str]:
    """Is mean(b) > mean(a)? Returns ("yes" | "on average" | "no", text with the paired per-seed
    difference, mean ± std, and how many seeds agree)."""
    d = [y - x for x, y in zip(a, b)]
    m, s = mean_std(d)
    wins = sum(x > 0 for x in d)
    holds = ("yes" if wins == len(d) else "on average") if m > 0 else "no"
    spread = f" ± {s:.2f}" if not math.isnan(s) else ""
    return holds, (f"{name_b} − {name_a} = {m:+.2f}{spread} {unit} {what} "
                   f"({wins}/{len(d)} seeds positive)")


def verdict(holds) -> str:
    """``True`` / ``"yes"``: holds (in every seed); ``"on average"``: the mean difference has the
    paper's sign but some seeds do not; ``False`` / ``"no"``: it does not hold."""
    if holds == "on average":
        return "**holds on average, but not in every seed**"
    return "**holds here**" if holds in (True, "yes") else "**does NOT hold here**"


def fit_shapes(f: np.ndarray, acc: np.ndarray) -> dict:
    """Least-squares fits of accuracy vs. real fraction ``f``: linear (a + b f) and
    logarithmic (a + b ln f); R^2 of each."""
    out = {}
    for name, x in (("linear", f), ("log", np.log(f))):
        b, a = np.polyfit(x, acc, 1)
        pred = a + b * x
        ss_res = float(((acc - pred) ** 2).sum())
        ss_tot = float(((acc - acc.mean()) ** 2).sum())
        out[name] = {"a": float(a), "b": float(b), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")}
    lin, log = out["linear"]["r2"], out["log"]["r2"]
    out["better"] = "linear" if lin >= log else "log"
    return out


# ------------------------------------------------------------------------------ experiments
def exp_table1(runners: list[Runner]) -> list[str]:
    rows = {"nomix": [], "mixup": [], "retrain": [], "finetune": []}
    for r in runners:
        rows["nomix"].append(top1(r.run("synaug_nomix")))
        s_rt = r.run("synaug_retrain")
        rows["mixup"].append(top1(s_rt, "trained"))
        rows["retrain"].append(top1(s_rt, "finetuned"))
        rows["finetune"].append(top1(r.run("synaug"), "finetuned"))
    P = PAPER["table1"]
    md = ["| row | Mixup | re-train | fine-tune | top-1 here (%) | paper (%) |", "|---|---|---|---|---|---|",
          f"| (a)/(b) uniformized | | | | {fmt(rows['nomix'])} | {P['nomix_no_modifier']:.2f} (a) / {P['nomix']:.2f} (b) |",
          f"| (c) + Mixup | ✓ | | | {fmt(rows['mixup'])} | {P['mixup']:.2f} |",
          f"| (d) + re-train | ✓ | ✓ | | {fmt(rows['retrain'])} | {P['retrain']:.2f} |",
          f"| (e) + fine-tune (SYNAuG) | ✓ | | ✓ | {fmt(rows['finetune'])} | {P['finetune']:.2f} |", ""]
    md.append("The Modifier column needs text prompts; the pool \"generator\" has none, so rows (a) and (b) "
              "are the same run here. Rows (c)–(e) share one trained model (the last layer differs).")
    md.append("")
    checks = [("Mixup helps", compare("(b)", rows["nomix"], "(c)", rows["mixup"], "top-1")),
              ("Fine-tuning the last layer helps", compare("(c)", rows["mixup"], "(e)", rows["finetune"], "top-1")),
              ("Re-training the last layer helps", compare("(c)", rows["mixup"], "(d)", rows["retrain"], "top-1")),
              ("Fine-tuning beats re-training", compare("(d)", rows["retrain"], "(e)", rows["finetune"], "top-1"))]
    md += [f"- {title}: {verdict(h)} — {txt}." for title, (h, txt) in checks]
    return md


T2_METHODS = [("ce", "CE"), ("balanced_softmax", "Balanced softmax"), ("ldam_drw", "LDAM-DRW"),
              ("weight_balancing", "Weight balancing"), ("synaug", "SYNAuG")]


def exp_table2(runners: list[Runner]) -> list[str]:
    vals = {m: {b: [] for b in ("many", "medium", "few", "all")} for m, _ in T2_METHODS}
    for r in runners:
        for m, _ in T2_METHODS:
            s = r.run(m)
            for b in ("many", "medium", "few"):
                vals[m][b].append(shot(s, b))
            vals[m]["all"].append(top1(s))
    md = ["| method | many | medium | few | all | paper many | paper medium | paper few | paper all |",
          "|---|---|---|---|---|---|---|---|---|"]
    for m, label in T2_METHODS:
        p = PAPER["table2"][m] or (None,) * 4
        md.append(f"| {label} | " + " | ".join(fmt(vals[m][b]) for b in ("many", "medium", "few", "all"))
                  + " | " + " | ".join(fmt_paper(x) for x in p) + " |")
    md += ["", "Many / medium / few: classes with > 100 / 20–100 / < 20 real training images (before "
           "uniformization). Balanced softmax and LDAM-DRW are not in the paper's Table 2 (it lists "
           "LDAM + CMO), hence no paper value.", ""]
    h1 = compare("CE", vals["ce"]["few"], "SYNAuG", vals["synaug"]["few"], "few-shot accuracy")
    h2 = compare("CE", vals["ce"]["all"], "SYNAuG", vals["synaug"]["all"], "top-1")
    base = [m for m, _ in T2_METHODS if m not in ("ce", "synaug")]
    best = max(base, key=lambda m: mean_std(vals[m]["all"])[0])
    h3 = compare(dict(T2_METHODS)[best], vals[best]["all"], "SYNAuG", vals["synaug"]["all"], "top-1")
    h4 = compare("Weight balancing", vals["weight_balancing"]["all"], "SYNAuG", vals["synaug"]["all"], "top-1")
    md += [f"- CE < SYNAuG on few-shot classes: {verdict(h1[0])} — {h1[1]}.",
           f"- CE < SYNAuG overall: {verdict(h2[0])} — {h2[1]}.",
           f"- SYNAuG beats weight balancing (the paper's strongest algorithmic baseline): {verdict(h4[0])} — {h4[1]}.",
           f"- SYNAuG beats the best algorithmic baseline measured here ({dict(T2_METHODS)[best]}): "
           f"{verdict(h3[0])} — {h3[1]}."]
    return md


T5_METHODS = [("ce", "CE", "N/A"), ("mixup_lt", "Mixup", "N/A"), ("cutmix_lt", "CutMix", "N/A"),
              ("web", "Web-crawled images → held-out real pool, unshifted", "Real"),
              ("synaug", "SYNAuG → held-out pool + synthetic-domain shift", "\"Syn.\" (shifted real)")]


def exp_table5(runners: list[Runner]) -> list[str]:
    vals = {m: [] for m, _, _ in T5_METHODS}
    for r in runners:
        for m, _, _ in T5_METHODS:
            vals[m].append(top1(r.run(m)))
    md = ["| method | additional data | top-1 here (%) | paper (%) |", "|---|---|---|---|"]
    for m, label, kind in T5_METHODS:
        md.append(f"| {label} | {kind} | {fmt(vals[m])} | {fmt_paper(PAPER['table5'][m])} |")
    md += ["", "Intra-/inter-class image translation and class-distribution fitting need a diffusion model "
           "(configs/table5-cifar100lt-*.yaml); they are not run here. Web and SYNAuG rows include Mixup and "
           "last-layer fine-tuning, as in the paper; Mixup / CutMix rows are trained on the long-tailed data only.", ""]
    h_web = compare("CE", vals["ce"], "web (pool)", vals["web"], "top-1")
    h_syn = compare("CE", vals["ce"], "SYNAuG (shifted pool)", vals["synaug"], "top-1")
    h_sw = compare("web (unshifted pool)", vals["web"], "SYNAuG (shifted pool)", vals["synaug"], "top-1")
    order = sorted(["ce", "mixup_lt", "cutmix_lt"], key=lambda m: mean_std(vals[m])[0])
    names = {"ce": "CE", "mixup_lt": "Mixup", "cutmix_lt": "CutMix"}
    paper_order = sorted(["ce", "mixup_lt", "cutmix_lt"], key=lambda m: PAPER["table5"][m])
    same_order = order == paper_order
    h_mix = compare("CE", vals["ce"], "Mixup", vals["mixup_lt"], "top-1")
    h_cut = compare("CE", vals["ce"], "CutMix", vals["cutmix_lt"], "top-1")
    md += [f"- Pool / web images beat CE: {verdict(h_web[0])} — {h_web[1]}.",
           f"- Shifted-pool SYNAuG beats CE: {verdict(h_syn[0])} — {h_syn[1]}.",
           f"- The paper's synthetic SYNAuG beats web images (58.59 vs 54.06); here the \"synthetic\" images are "
           f"shifted copies of the same kind of real images, so no advantage is expected: {h_sw[1]}.",
           f"- Mixup / CutMix vs CE on the long-tailed data. Paper: Mixup < CE (−1.75) and CutMix ≈ CE (−0.05), "
           f"order low→high {' < '.join(names[m] for m in paper_order)}. Here: {h_mix[1]}; {h_cut[1]}; "
           f"order low→high {' < '.join(names[m] for m in order)} — "
           + ("**same order as the paper**." if same_order else "**a different order from the paper**.")]
    return md


def exp_fig2(runners: list[Runner], scale: str, plot_path: Path | None) -> list[str]:
    sc = SCALES[scale]
    curves = {"class": [("real_balanced", 0)] + [(f"replace_class_k{k}", k) for k in sc["fig2_k"]],
              "ratio": [("real_balanced", 0.0)] + [(f"replace_ratio_{r:g}", r) for r in sc["fig2_r"]]}
    table, fits, pts = [], {}, {}
    for kind, runs in curves.items():
        fs, accs = [], []
        for name, param in runs:
            per_seed, frac = [], None
            for r in runners:
                s = r.run(name)
                per_seed.append(top1(s))
                total = sum(s["train_counts_after"])
                frac = 1.0 - s["synthetic"] / total
            fs.append(frac)
            accs.append(mean_std(per_seed)[0])
            what = ("no replacement" if name == "real_balanced" else
                    f"k = {param} of {len(s['train_counts_after'])} classes" if kind == "class" else f"r = {param:g}")
            paper = ""
            if kind == "class" and abs(frac - 0.5) < 1e-9:
                paper = f"{PAPER['fig2']['class_half_real']:.2f} (50 % real)"
            if kind == "ratio" and name != "real_balanced" and param == max(sc["fig2_r"]):
                paper = f"{PAPER['fig2']['ratio_1pct_real']:.2f} (1 % real)"
            table.append(f"| {'(a) class-wise' if kind == 'class' else '(b) ratio-wise'} | {what} | "
                         f"{100 * frac:.0f} % | {fmt(per_seed)} | {paper or '–'} |")
        pts[kind] = (np.asarray(fs), np.asarray(accs))
        fits[kind] = fit_shapes(np.asarray(fs), np.asarray(accs)) if len(fs) >= 3 else None
    md = ["| setting | replaced | real share of the training set | top-1 here (%) | paper (%) |",
          "|---|---|---|---|---|", *table, ""]
    md.append("The paper plots the whole curves (CIFAR-100, 500 per class); the text quotes two points, shown above "
              "next to the closest setting here.")
    md.append("")
    md.append("Shape fits (least squares on the seed means, x = real share f): linear a + b·f vs logarithmic a + b·ln f.")
    md.append("")
    md += ["| setting | R² linear | R² log | better fit |", "|---|---|---|---|"]
    for kind in ("class", "ratio"):
        f = fits[kind]
        if f is None:
            md.append(f"| {kind}-wise | – | – | too few points (needs 3) |")
        else:
            md.append(f"| {kind}-wise | {f['linear']['r2']:.3f} | {f['log']['r2']:.3f} | {f['better']} |")
    md.append("")
    for kind, expect, label in (("class", "linear", "Class-wise replacement declines ~linearly"),
                                ("ratio", "log", "Ratio-wise replacement declines ~logarithmically")):
        f = fits[kind]
        if f is None:
            md.append(f"- {label}: not tested (fewer than 3 points at this scale).")
            continue
        decl = f["linear"]["b"] > 0  # accuracy rises with the real share = declines with replacement
        holds = decl and f["better"] == expect
        md.append(f"- {label}: {verdict(holds)} — accuracy "
                  f"{'declines' if decl else 'does not decline'} as real images are replaced "
                  f"(slope {f['linear']['b']:+.1f} points per unit real share); the {f['better']} shape fits better "
                  f"(R² {f['linear']['r2']:.3f} linear vs {f['log']['r2']:.3f} log).")
    # the paper's remark: very few real images (ratio-wise) ~ half real (class-wise)
    fc, ac = pts["class"]
    fr, ar = pts["ratio"]
    i_half = int(np.argmin(np.abs(fc - 0.5)))
    i_low = int(np.argmin(fr))
    ok = ar[i_low] >= ac[i_half] - 3.0
    md.append(f"- A few real images per class go a long way (paper: 41.11 % with 1 % real, ratio-wise, vs 43.96 % with "
              f"50 % real, class-wise): here {ar[i_low]:.2f} % with {100 * fr[i_low]:.0f} % real (ratio-wise) vs "
              f"{ac[i_half]:.2f} % with {100 * fc[i_half]:.0f} % real (class-wise) — "
              + ("**comparable or better (within 3 points), as in the paper**." if ok else
                 "**clearly worse, unlike the paper**."))
    if plot_path is not None:
        _plot_fig2(pts, fits, plot_path)
        md += ["", f"![Fig. 2 at CPU scale]({plot_path.name})"]
    return md


def _plot_fig2(pts: dict, fits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synaug.io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, kind, title in zip(axes, ("class", "ratio"), ("(a) class-wise", "(b) ratio-wise")):
        f, a = pts[kind]
        ax.plot(100 * f, a, "ko")
        if fits[kind] is not None:
            xs = np.linspace(max(f.min(), 1e-3), 1, 100)
            ax.plot(100 * xs, fits[kind]["linear"]["a"] + fits[kind]["linear"]["b"] * xs, "b-", label="linear fit")
            ax.plot(100 * xs, fits[kind]["log"]["a"] + fits[kind]["log"]["b"] * np.log(xs), "r--", label="log fit")
            ax.legend(fontsize=7)
        if kind == "ratio":
            ax.set_xscale("log")
        ax.set_xlabel("real share of training images (%)" + (", log scale" if kind == "ratio" else ""))
        ax.set_ylabel("top-1 (%)")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def exp_fig3(runners: list[Runner], scale: str) -> tuple[list[str], float]:
    from synaug.experiments.probe import domain_probe
    from synaug.io import write_json_atomic
    from synaug.manifest import Manifest
    from synaug.train import load_checkpoint

    n = SCALES[scale]["probe_n"]
    shifted, control, secs, n_test = [], [], 0.0, 0
    for r in runners:
        r.run("real_balanced")
        d = r.dir / "real_balanced"
        cache = r.dir / "probe.json"
        want = {"n_per_domain": n, "seed": r.seed, "checkpoint_mtime": (d / "train/model.safetensors").stat().st_mtime_ns}
        out = json.loads(cache.read_text()) if cache.is_file() else None
        if out is None or out.get("want") != want:
            t0 = time.perf_counter()
            model = load_checkpoint(d / "train" / "model.safetensors")
            pr = domain_probe(model, Manifest.read(d / "data" / "heldout.parquet"), n_per_domain=n,
                              seed=r.seed, split="train")
            out = {"want": want, "result": pr, "seconds": round(time.perf_counter() - t0, 2)}
            write_json_atomic(cache, out)
        secs += out["seconds"]
        shifted.append(100 * out["result"]["shifted"]["accuracy"])
        control.append(100 * out["result"]["control"]["accuracy"])
        n_test = out["result"]["shifted"]["n_test"]
    se = 100 * 0.5 / math.sqrt(max(n_test, 1))
    md = ["| probe (one linear layer on frozen features) | accuracy here (%) | paper (%) |", "|---|---|---|",
          f"| real vs \"synthetic\" (held-out real + synthetic-domain shift) | {fmt(shifted)} | {PAPER['fig3']:.2f} |",
          f"| control: real vs real (no shift) | {fmt(control)} | – (50 = no gap) |", "",
          f"Features: ResNet-32 trained on real data only (the Fig. 2 no-replacement run). {n} images per domain "
          f"from the held-out pool (never trained on), half of the probe data fits the probe and {n_test} images "
          f"score it; one standard error of a 50 % probe is {se:.2f} points.", ""]
    m_s, m_c = mean_std(shifted)[0], mean_std(control)[0]
    holds = m_s - 50.0 > 2 * se
    ctrl_ok = abs(m_c - 50.0) <= 2 * se + 1.0
    md.append(f"- The probe separates the domains (> 50 %): {verdict(holds)} — {m_s:.2f} % vs 50 % "
              f"({(m_s - 50) / se:+.1f} standard errors).")
    md.append(f"- The control stays near chance: {'yes' if ctrl_ok else '**no**'} — {m_c:.2f} % "
              f"({(m_c - 50) / se:+.1f} standard errors).")
    return md, secs


def exp_fig5(seeds: list[int], plot_path: Path | None) -> tuple[list[str], float]:
    from synaug.experiments import toy2d

    t0 = time.perf_counter()
    per = {}
    first = None
    for s in seeds:
        out = toy2d.run(seed=s)
        first = first or out
        for name, r in out.items():
            d = per.setdefault(name, {k: [] for k in ("angle_deg", "acc", "dp", "eo", "ed")})
            for k in d:
                d[k].append(r[k] * (100 if k == "acc" else 1))
    if plot_path is not None:
        toy2d.plot(first, plot_path)
    secs = time.perf_counter() - t0
    md = ["| scenario | boundary angle from vertical (°) | accuracy (%) | DP | EO | ED |", "|---|---|---|---|---|---|"]
    for name, d in per.items():
        md.append(f"| {name} | {fmt(d['angle_deg'], 1)} | {fmt(d['acc'], 1)} | {fmt(d['dp'], 3)} | "
                  f"{fmt(d['eo'], 3)} | {fmt(d['ed'], 3)} |")
    ang = {k: v["angle_deg"] for k, v in per.items()}
    md += ["", "The paper shows this as a figure only (no numbers). 0° = vertical boundary = the classifier "
           "ignores the group (fair).", ""]
    c1 = compare("max(group imbalance, class imbalance)",
                 [max(g, c) for g, c in zip(ang["group imbalance"], ang["class imbalance"])],
                 "class + group imbalance", ang["class + group imbalance"], "of tilt", "°")
    c2 = compare("group imbalance", ang["group imbalance"], "class imbalance", ang["class imbalance"], "of tilt", "°")
    c3 = compare("balanced", ang["balanced"], "class + group imbalance", ang["class + group imbalance"], "of tilt", "°")
    c4 = compare("SYNAuG", ang["class + group imbalance + SYNAuG"], "class + group imbalance",
                 ang["class + group imbalance"], "of tilt", "°")
    md += [f"- Group imbalance together with class imbalance amplifies the unfairness (tilts more than either "
           f"alone): {verdict(c1[0])} — {c1[1]}.",
           f"- Class imbalance alone tilts the classifier more than group imbalance alone (the paper: \"class "
           f"imbalance contributes more than group imbalance\"): {verdict(c2[0])} — {c2[1]}. Note the toy's design: "
           f"its class-imbalance scenario has the same class ratio in both groups, so it moves the boundary "
           f"(accuracy column) rather than tilting it; the tilt appears when the class ratio differs between groups.",
           f"- Class + group imbalance tilts it more than balanced data: {verdict(c3[0])} — {c3[1]}.",
           f"- Uniformizing with shifted samples (SYNAuG) reduces the tilt: {verdict(c4[0])} — {c4[1]}."]
    if plot_path is not None:
        md += ["", f"![Fig. 5 toy, seed {seeds[0]}]({plot_path.name})"]
    return md, secs


# ------------------------------------------------------------------------------ report
TITLES = {
    "table1": "Table 1 — reducing the domain gap (Mixup, re-train, fine-tune)",
    "table2": "Table 2 — long-tailed recognition: CE, algorithmic baselines, SYNAuG",
    "table5": "Table 5 — uniformization sources and augmentation baselines",
    "fig2": "Fig. 2 — replacing real images by \"synthetic\" ones on a balanced set",
    "fig3": "Fig. 3a — domain probe",
    "fig5": "Fig. 5 — class vs. group imbalance on a 2-D toy",
}


def _setup_lines(scale: str) -> list[str]:
    sp = run_specs(scale)
    lt, bal = sp["ce"], sp["real_balanced"]
    t = lt["train"]
    return [
        f"- Long-tailed runs (Tables 1, 2, 5): CIFAR-10-LT from the shared real CIFAR-10 JPEGs, imbalance factor "
        f"{lt['data']['imbalance_factor']:g}, {lt['data']['img_max']} images in the head class, "
        f"{lt['data']['val_per_class']} validation images per class (from the held-out images), "
        f"{lt['data']['test_per_class']} test images per class. Paper: CIFAR-100-LT, 200 epochs.",
        f"- Model and recipe: ResNet-32{' (width ' + str(t['model'].get('width')) + ')' if t['model'].get('width') else ''}, "
        f"{t['epochs']} epoch(s), SGD lr {t['optim']['lr']}, batch {t['batch_size']}, multistep "
        f"{t['schedule']['milestones']}; best epoch chosen by validation mean-class accuracy. Every method gets the same "
        f"number of epochs (as in the paper), so runs on the uniformized set take more optimizer steps than runs on the "
        f"long-tailed set.",
        f"- Balanced runs (Figs. 2, 3): {bal['data']['img_max']} real images per class.",
        f"- Last-layer step (fine-tune or re-train): {sp['synaug']['finetune']['epochs']} epoch(s) of SGD on the frozen "
        "features of a class-balanced subset of the REAL training images (as many per class as the smallest class has).",
    ]


def write_results(path: Path, sections: dict, scale: str, seeds: list[int], times: dict, total: float,
                  argv: list[str], out: Path) -> None:
    from synaug.io import write_text_atomic

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    import torch

    lines = [
        "# SYNAuG at CPU scale: measured results",
        "",
        f"Generated by `benchmarks/reproduce_cpu.py` — do not edit by hand. Command: "
        f"`python benchmarks/reproduce_cpu.py {' '.join(argv)}`",
        "",
        f"- Date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; commit {commit}; scale **{scale}**"
        + (" (a smoke test: 1 epoch, a few hundred images — the numbers mean nothing)" if scale == "tiny" else "")
        + f"; seeds {', '.join(map(str, seeds))} (mean ± sample std over seeds).",
        f"- Machine: {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}. Total wall time of this invocation: {total / 60:.1f} min "
        "(runs cached by an earlier invocation count 0 here; per-experiment times below are the runs' own compute times).",
        "",
        "**What played the generator.** No Stable Diffusion weights exist on this machine. Every \"synthetic\" image "
        "below is a real CIFAR-10 training image that the long-tail (or balanced) draw left out — disjoint from the "
        "training, validation and test images — either unchanged (the paper's *web-crawled images* baseline) or passed "
        "through the pool backend's fixed *synthetic-domain shift* (saturation ×1.5, Gaussian blur 0.6 px, warm colour "
        "cast; `synaug.generate.pool.synthetic_domain_shift`), which stands in for the real-vs-synthetic domain gap. "
        "The numbers are therefore NOT a replication of the paper's numbers (CIFAR-100, Stable Diffusion, 200 "
        "epochs); the paper's values are shown next to them only to compare the direction of each finding.",
        "",
        "## Setup",
        "",
        *_setup_lines(scale),
        "",
    ]
    for exp in EXPERIMENTS:
        if exp not in sections:
            continue
        lines += [f"## {TITLES[exp]}", "", *sections[exp], "",
                  f"Wall time: {times[exp]:.0f} s for {len(seeds)} seed(s) ({times[exp] / 60:.1f} min; runs shared with "
                  "another experiment are counted in each).", ""]
    lines += ["## Where the runs are", "",
              f"Each run folder (config, manifests, checkpoints, metrics, report.html) is under "
              f"`{out}/{scale}/seed<N>/<run>/`.", ""]
    write_text_atomic(path, "\n".join(lines))


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scale", choices=sorted(SCALES), default="small")
    p.add_argument("--only", nargs="+", default=None, metavar="EXP",
                   help=f"experiments to run: {', '.join(EXPERIMENTS)} (aliases: {', '.join(ALIASES)})")
    p.add_argument("--out", default=str(ROOT / "runs" / "reproduce"), help="folder for all run folders")
    p.add_argument("--results", default=str(ROOT / "docs" / "results.md"),
                   help="markdown file to write (plots go next to it)")
    args = p.parse_args(argv)
    only = EXPERIMENTS if not args.only else tuple(dict.fromkeys(ALIASES.get(e, e) for e in args.only))
    bad = [e for e in only if e not in EXPERIMENTS]
    if bad:
        p.error(f"unknown experiment {bad[0]!r} (choose from {', '.join(EXPERIMENTS)} or {', '.join(ALIASES)})")
    out, results = Path(args.out), Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    runners = [Runner(out, args.scale, s) for s in args.seeds]
    sections, times = {}, {}
    for exp in EXPERIMENTS:
        if exp not in only:
            continue
        print(f"\n##### {exp}", flush=True)
        extra = 0.0
        if exp == "table1":
            sections[exp] = exp_table1(runners)
        elif exp == "table2":
            sections[exp] = exp_table2(runners)
        elif exp == "table5":
            sections[exp] = exp_table5(runners)
        elif exp == "fig2":
            sections[exp] = exp_fig2(runners, args.scale, results.parent / "fig2_replacement.png")
        elif exp == "fig3":
            sections[exp], extra = exp_fig3(runners, args.scale)
        elif exp == "fig5":
            sections[exp], extra = exp_fig5(args.seeds, results.parent / "fig5_toy.png")
        times[exp] = extra + sum(r.seconds(n) for r in runners for n in dict.fromkeys(runs_for(exp, args.scale)))
    total = time.perf_counter() - t_start
    write_results(results, sections, args.scale, args.seeds, times, total, argv, out)
    print(f"\nwrote {results} ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
