"""``synaug run CONFIG``: the whole method, stage by stage, cached and resumable.

inspect -> plan -> generate -> train (Mixup) -> last-layer fine-tune -> evaluate -> report.
A stage is skipped when its inputs (config section + upstream stage keys) are unchanged;
generation and training resume their own partial work after a kill. The test split is read
only by the evaluate stage.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from pydantic import Field

from .config import Strict, dump, parse_override, save_resolved
from .errors import SynaugError
from .io import write_bytes_atomic, write_json_atomic
from .manifest import Manifest
from .generate.config import GenerateConfig
from .prepare import DataConfig, prepare
from .stages import Stages, fingerprint
from .train.config import FinetuneConfig, TrainConfig


class PlanStageConfig(Strict):
    mode: str = "class"
    target: Optional[int] = Field(None, ge=0)
    k: Optional[int] = Field(None, ge=0)
    classes: Optional[list[str]] = None
    ratio: Optional[float] = Field(None, ge=0, le=1)
    equalize_groups: bool = False
    seed: int = 0


class EvalConfig(Strict):
    device: str = "auto"


class RunConfig(Strict):
    """A whole SYNAuG (or baseline) run. ``plan``/``generate``/``finetune`` null = stage off."""

    name: str = "run"
    description: str = ""
    seed: int = 0                                  # seeds train / finetune / generate unless they set one
    data: DataConfig = Field(default_factory=DataConfig)
    plan: Optional[PlanStageConfig] = Field(default_factory=PlanStageConfig)
    generate: Optional[GenerateConfig] = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    finetune: Optional[FinetuneConfig] = None
    eval: EvalConfig = Field(default_factory=EvalConfig)
    generator_note: str = ""                       # what played the generator, said in the report


def resolve(cfg: RunConfig) -> RunConfig:
    """Propagate the run seed into stages that did not set their own."""
    upd = {}
    if "seed" not in cfg.train.model_fields_set:
        upd["train"] = cfg.train.model_copy(update={"seed": cfg.seed})
    if cfg.finetune is not None and "seed" not in cfg.finetune.model_fields_set:
        upd["finetune"] = cfg.finetune.model_copy(update={"seed": cfg.seed})
    if cfg.generate is not None and "seed" not in cfg.generate.model_fields_set:
        upd["generate"] = cfg.generate.model_copy(update={"seed": cfg.seed})
    out = cfg.model_copy(update=upd)
    if out.generate is not None and out.plan is None:
        raise SynaugError("config: 'generate' needs a 'plan' section")
    return out


def load_run_config(path: str | Path | None, overrides: list[str] | None = None,
                    base: dict | None = None) -> RunConfig:
    from .config import read_yaml, set_dotted, validate

    data = dict(base or {})
    if path is not None:
        data = _deep_merge(data, read_yaml(path))
    for o in overrides or []:
        k, v = parse_override(o)
        set_dotted(data, k, v)
    return resolve(validate(RunConfig, data, where=str(path) if path else "config"))


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run(cfg: RunConfig, run_dir: str | Path, log=print) -> dict:
    """Execute (or resume) a run; returns the final metrics summary."""
    from .generate.runner import generate
    from .inspect import histogram_png, inspect_manifest
    from .plan import Plan, apply_plan, make_plan
    from .train import evaluate, finetune_last_layer, load_checkpoint, train_model

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, run_dir / "config.yaml")
    st = Stages(run_dir, log)
    d = run_dir / "data"

    # ---------------------------------------------------------------- data + inspect
    k_data = fingerprint("data", dump(cfg.data))
    real_p, pool_p = d / "real.parquet", d / "heldout.parquet"

    def s_data():
        prep = prepare(cfg.data)
        prep.real.write(real_p)
        if prep.pool is not None:
            prep.pool.write(pool_p)
        elif pool_p.exists():
            pool_p.unlink()
        summary = inspect_manifest(prep.real, "train")
        write_json_atomic(d / "inspect.json", summary)
        write_bytes_atomic(d / "histogram.png", histogram_png(summary, f"{cfg.name}: real train"))

    st.run("data", k_data, [real_p, d / "inspect.json"], s_data)
    real = Manifest.read(real_p)
    real_counts = real.class_counts("train")
    real_cells = real.cell_counts("train") if real.groups else None

    # ---------------------------------------------------------------- plan
    k_plan = fingerprint(k_data, "plan", dump(cfg.plan) if cfg.plan else None)
    plan_p = run_dir / "plan.json"
    train_real = real
    plan = None
    if cfg.plan is not None:
        def s_plan():
            p = cfg.plan
            pl = make_plan(real, p.mode, target=p.target, classes=p.classes, k=p.k, ratio=p.ratio,
                           equalize_groups=p.equalize_groups, seed=p.seed)
            pl.params["data"] = dump(cfg.data)
            pl.write(plan_p)

        st.run("plan", k_plan, [plan_p], s_plan)
        plan = Plan.read(plan_p)
        train_real = apply_plan(real, plan)

    # ---------------------------------------------------------------- generate
    parts = [train_real.split("train", "val")]
    k_gen = fingerprint(k_plan, "generate", dump(cfg.generate) if cfg.generate else None)
    syn_dir = run_dir / "synthetic"
    if cfg.generate is not None and plan is not None and plan.total_synthetic > 0:
        gcfg = cfg.generate
        if gcfg.backend == "pool" and not gcfg.pool.dataset and gcfg.pool.manifest in (None, "heldout"):
            if not pool_p.is_file():
                raise SynaugError("generate.pool.manifest 'heldout' needs data.imbalance_factor (the images "
                                  "the long-tail draw left out) or data.heldout_fraction")
            gcfg = gcfg.model_copy(update={"pool": gcfg.pool.model_copy(
                update={"manifest": str(pool_p), "name": gcfg.pool.name or "heldout-real"})})

        def s_gen():
            generate(plan, gcfg, syn_dir, real_manifest=train_real.split("train"), progress=True)

        st.run("generate", k_gen, [syn_dir / "synthetic.parquet"], s_gen)
        parts.append(Manifest.read(syn_dir / "synthetic.parquet"))
    train_m = Manifest.concat(parts) if len(parts) > 1 else parts[0]
    train_m.write(d / "train.parquet")  # the manifest training used (real + synthetic, no test)

    # ---------------------------------------------------------------- train
    k_train = fingerprint(k_gen, "train", dump(cfg.train))
    tdir = run_dir / "train"
    trained = {}  # the model of this invocation; a cached stage's model is loaded only if needed

    def s_train():
        trained["m"] = train_model(train_m.split("train"), train_m.split("val"), cfg.train, tdir).model

    st.run("train", k_train, [tdir / "model.safetensors"], s_train)

    # ---------------------------------------------------------------- evaluate (+ fine-tune)
    test = real.split("test")
    if len(test) == 0:
        raise SynaugError("data has no test split to evaluate on")
    ev = dict(train_counts=real_counts, train_group_counts=real_cells,
              counts_source="real train rows before uniformization", device=cfg.eval.device,
              data=cfg.train.data, augment=cfg.train.augment, channels_last=cfg.train.channels_last)
    results = {}
    k_eval = fingerprint(k_train, "eval", dump(cfg.eval))
    st.run("eval-train", k_eval, [run_dir / "eval/train/metrics.json"],
           lambda: evaluate(trained.get("m") or load_checkpoint(tdir / "model.safetensors"), test,
                            out_dir=run_dir / "eval/train", **ev))
    results["trained"] = json.loads((run_dir / "eval/train/metrics.json").read_text())
    if cfg.finetune is not None:
        fdir = run_dir / "finetune"
        k_ft = fingerprint(k_train, "finetune", dump(cfg.finetune))
        tuned = {}

        def s_ft():
            m2 = load_checkpoint(tdir / "model.safetensors")
            tuned["m"] = finetune_last_layer(m2, train_real.split("train", "val"), cfg.finetune, fdir)

        st.run("finetune", k_ft, [fdir / "model.safetensors"], s_ft)
        k_eval2 = fingerprint(k_ft, "eval", dump(cfg.eval))
        st.run("eval-finetune", k_eval2, [run_dir / "eval/finetune/metrics.json"],
               lambda: evaluate(tuned.get("m") or load_checkpoint(fdir / "model.safetensors"), test,
                                out_dir=run_dir / "eval/finetune", **ev))
        results["finetuned"] = json.loads((run_dir / "eval/finetune/metrics.json").read_text())

    final_key = "finetuned" if "finetuned" in results else "trained"
    summary = {"name": cfg.name, "final": final_key, "results": results,
               "real_train_counts": real_counts.tolist(),
               "train_counts_after": train_m.class_counts("train").tolist(),
               "synthetic": int((train_m.df["source"] == "synthetic").sum()),
               "generator": _generator_label(cfg, train_m), "generators": _generators(train_m),
               "timings_s": st.timings}
    write_json_atomic(run_dir / "metrics.json", summary)
    from .report import build_report

    build_report(run_dir)
    return summary


def _generators(train_m: Manifest) -> list[str]:
    """The distinct ``generator`` values of the synthetic rows training used."""
    return sorted(set(train_m.df.loc[train_m.df["source"] == "synthetic", "generator"]))


def _generator_label(cfg: RunConfig, train_m: Manifest) -> str:
    if cfg.generator_note:
        return cfg.generator_note
    gens = _generators(train_m)
    return ", ".join(gens) if gens else "none (real data only)"


# ---------------------------------------------------------------------------- CLI
def register(sub) -> None:
    p = sub.add_parser("run", help="run the whole method from one config (cached, resumable)",
                       description="inspect -> plan -> generate -> train -> fine-tune -> evaluate -> report")
    p.add_argument("config", help="run config YAML (see configs/)")
    p.add_argument("--out", "-o", default=None, help="run folder (default: runs/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    cfg = load_run_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / cfg.name)
    s = run(cfg, out)
    print_summary_table([s])
    print(f"synthetic images: {s['synthetic']}; generator: {s['generator']}")
    print(f"report: {out / 'report.html'}")
    return 0


def print_summary_table(summaries: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from .report import headline

    t = Table(title="test accuracy (%)")
    cols = None
    for s in summaries:
        for stage, res in s["results"].items():
            row = headline(res)
            if cols is None:
                cols = list(row)
                t.add_column("run")
                t.add_column("synthetic images from")
                t.add_column("stage")
                for c in cols:
                    t.add_column(c, justify="right")
            t.add_row(s["name"], ", ".join(s.get("generators") or ["none"]), stage, *[row.get(c, "") for c in cols])
    Console().print(t)
