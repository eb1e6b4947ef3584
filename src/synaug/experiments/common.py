"""What every paper-experiment module shares: run specs, a cached runner per seed, statistics
and verdicts computed from the numbers.

An experiment module (``synaug.experiments.table1`` ...) exposes

* ``TITLE``: the section title in ``docs/results.md``;
* ``specs(scale) -> {run name: raw run config}``: the runs it needs (a run used by several
  experiments has one name and one definition everywhere);
* ``runs(scale) -> [run names]``: which of them it reads (wall-time accounting);
* ``analyse(runners, ctx) -> (markdown lines, extra seconds)``: reads the runs' metrics
  (running them if needed, cached otherwise) and returns its section, with the paper's
  numbers beside ours and verdicts computed from the numbers.

``benchmarks/reproduce_cpu.py`` is a thin driver over :data:`synaug.experiments.EXPERIMENTS`.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from ..errors import SynaugError

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"
SCALES = ("small", "tiny")
STAGES = ("plan", "generate", "finetune")

# tiny = a smoke test of the whole pipeline (1 epoch, a few hundred images): numbers mean nothing
TINY_TRAIN = {"epochs": 1, "model": {"width": 4}, "progress": False,
              "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}}
TINY_FINETUNE = {"epochs": 2, "progress": False}


def merge(base: dict, over: dict) -> dict:
    """Deep merge; a stage section that is off in ``base`` (null or absent) stays off."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict):
            if k in STAGES and out.get(k) is None:
                continue
            out[k] = merge(out.get(k) or {}, v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(name: str) -> dict:
    """A run config of the repository's ``configs/`` folder, as a dict."""
    path = CONFIGS / name
    if not path.is_file():
        raise SynaugError(f"experiment config not found: {path} (the experiments need the repository's configs/)")
    return yaml.safe_load(path.read_text())


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise SynaugError(f"unknown scale {scale!r} (choose from {', '.join(SCALES)})")


# ------------------------------------------------------------------------------ running
@dataclass
class Context:
    """What an experiment's analysis may use besides the runs."""

    scale: str
    seeds: list[int]
    results_dir: Path                  # plots go next to the results file
    specs: dict = field(default_factory=dict)


class Pending(SynaugError):
    """A run not finished yet, asked of a runner that only reads finished runs (``cached_only``)."""


class Runner:
    """Runs (or loads from cache) the named runs of one seed under ``out/<scale>/seed<seed>/``.

    ``cached_only``: read the ``metrics.json`` of finished runs (:func:`finished`: that file and the
    same config) without touching their stages, and raise :class:`Pending` for the others instead of
    running them (``reproduce_cpu.py --cached-only``:
    a long experiment reported while its remaining runs wait for another invocation)."""

    def __init__(self, out: Path, scale: str, seed: int, specs: dict[str, dict],
                 reuse: dict[str, str] | None = None, cached_only: bool = False):
        self.dir = Path(out) / scale / f"seed{seed}"
        self.scale, self.seed = scale, seed
        self.specs = specs
        self.reuse = reuse or {}
        self.cached_only = cached_only
        self.summaries: dict[str, dict] = {}

    def run(self, name: str) -> dict:
        from ..run import load_run_config, run

        if name in self.summaries:
            return self.summaries[name]
        if name not in self.specs:
            raise SynaugError(f"no run named {name!r} in the experiment specs")
        raw = copy.deepcopy(self.specs[name])
        raw.update(name=name, seed=self.seed)
        cfg = load_run_config(None, base=raw)
        d = self.dir / name
        if self.cached_only:  # read, never run: not even a stage re-check that a changed stage key would redo
            if not finished(d, cfg):
                raise Pending(f"run {name} at seed {self.seed} not finished under its current config")
            self.summaries[name] = json.loads((d / "metrics.json").read_text())
            return self.summaries[name]
        if name in self.reuse:
            self.run(self.reuse[name])
            seed_from(self.dir / self.reuse[name], d)
        print(f"\n=== [{self.scale} seed {self.seed}] {name}: {cfg.description}", flush=True)
        t0 = time.perf_counter()
        summary = run(cfg, d)
        add_time(d / "reproduce_time.json", time.perf_counter() - t0)
        self.summaries[name] = summary
        return summary

    def seconds(self, name: str) -> float:
        f = self.dir / name / "reproduce_time.json"
        return json.loads(f.read_text())["seconds"] if f.is_file() else 0.0


def finished(run_dir: Path, cfg) -> bool:
    """Whether ``run_dir`` holds a run finished under ``cfg``: its ``metrics.json`` (removed when a
    run starts, written when it ends) and a ``config.yaml`` equal to ``cfg`` resolved."""
    from ..config import dump

    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return (run_dir / "metrics.json").is_file() and saved == yaml.safe_load(yaml.safe_dump(dump(cfg), sort_keys=False))


def add_time(path: Path, secs: float) -> None:
    from ..io import write_json_atomic

    old = json.loads(path.read_text()) if path.is_file() else {"seconds": 0.0, "calls": 0}
    write_json_atomic(path, {"seconds": round(old["seconds"] + secs, 2), "calls": old["calls"] + 1})


def seed_from(src: Path, dst: Path) -> None:
    """Copy the data / plan / generation / training outputs (and their stage records) of ``src``
    into ``dst`` so that ``synaug.run`` finds them up to date there (it re-checks every key)."""
    if (dst / "stages" / "train.json").is_file() or not (src / "stages" / "train.json").is_file():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "synthetic", "scorer", "select", "train", "eval/train"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, dirs_exist_ok=True)
    if (src / "plan.json").is_file():
        shutil.copy2(src / "plan.json", dst / "plan.json")
    (dst / "stages").mkdir(exist_ok=True)
    for rec in (src / "stages").glob("*.json"):   # every stage up to training (selection's included)
        if rec.stem not in ("finetune", "eval-finetune"):
            shutil.copy2(rec, dst / "stages" / rec.name)


def cached_json(path: Path, want: dict, compute: Callable[[], dict]) -> dict:
    """``compute()`` once per ``want`` (a dict of what the result depends on), kept in ``path``;
    returns ``{"want", "result", "seconds"}``."""
    from ..io import write_json_atomic

    out = json.loads(path.read_text()) if path.is_file() else None
    if out is None or out.get("want") != want:
        t0 = time.perf_counter()
        result = compute()
        out = {"want": want, "result": result, "seconds": round(time.perf_counter() - t0, 2)}
        write_json_atomic(path, out)
    return out


# ------------------------------------------------------------------------------ reading runs
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


def fmt_paper(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def standard_error(d: list[float]) -> float:
    """Standard error of the mean of paired differences (std / sqrt(seeds)); NaN below two seeds."""
    s = mean_std(d)[1]
    return s / math.sqrt(len(d)) if len(d) > 1 and not math.isnan(s) else float("nan")


def compare(name_a: str, a: list[float], name_b: str, b: list[float], what: str,
            unit: str = "points", digits: int = 2, beyond_se: bool = False) -> tuple[str, str]:
    """Is mean(b) > mean(a)? Returns ("yes" | "on average" | "no", text with the paired per-seed
    difference, mean ± std (``digits`` decimals), and how many seeds agree). ``beyond_se``: a mean
    not above one standard error of the differences is "no" (no measurable change), not "on average"."""
    d = [y - x for x, y in zip(a, b)]
    m, s = mean_std(d)
    wins = sum(x > 0 for x in d)
    holds = ("yes" if wins == len(d) else "on average") if m > 0 else "no"
    spread = f" ± {s:.{digits}f}" if not math.isnan(s) else ""
    text = (f"{name_b} − {name_a} = {m:+.{digits}f}{spread} {unit + ' ' if unit else ''}{what} "
            f"({wins}/{len(d)} seeds positive)")
    se = standard_error(d)
    if beyond_se and holds != "no" and not math.isnan(se) and m <= se:
        holds, text = "no", text + f"; within one standard error ({se:.2f}) of zero: no measurable change"
    return holds, text


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


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
