"""``synaug run CONFIG``: the whole method, stage by stage, cached and resumable.

inspect -> plan -> [fit] -> generate -> train (Mixup) -> last-layer fine-tune -> evaluate -> report.
With ``generate.select`` on, generate is three stages: candidates -> scorer -> select.
A stage is skipped when its inputs (config section + upstream stage keys) are unchanged;
generation and training resume their own partial work after a kill. The test split is read
only by the evaluate stage.
"""
from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from .config import Strict, dump, save_resolved
from .errors import SynaugError
from .io import check_writable, write_bytes_atomic, write_json_atomic
from .manifest import Manifest
from .generate.config import GenerateConfig
from .generate.fit.config import FitConfig
from .prepare import DataConfig, data_key, prepare
from .stages import Stages, fingerprint
from .train.config import FinetuneConfig, TrainConfig


class PlanStageConfig(Strict):
    mode: Literal["class", "cell", "agnostic", "spurious", "replace-class", "replace-ratio"] = "class"
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
    fit: Optional[FitConfig] = None                # fine-tune the generator on each class's real images
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
    if cfg.fit is not None and "seed" not in cfg.fit.model_fields_set:
        upd["fit"] = cfg.fit.model_copy(update={"seed": cfg.seed})
    out = cfg.model_copy(update=upd)
    if out.generate is not None and out.plan is None:
        raise SynaugError("config: 'generate' needs a 'plan' section")
    return out


def load_run_config(path: str | Path | None, overrides: list[str] | None = None,
                    base: dict | None = None) -> RunConfig:
    """Read a run config. Relative paths in the file (``data.root``, ``data.manifest``,
    ``generate.pool.manifest`` ...: :func:`synaug.config.path_keys`) are resolved against the
    file's folder, as every command reading a config does; ``--set`` values are taken as typed
    (relative to the working directory)."""
    from .config import apply_overrides, read_yaml, resolve_paths, validate

    data = dict(base or {})
    if path is not None:
        file_data = read_yaml(path)
        resolve_paths(file_data, RunConfig, Path(path).resolve().parent)
        data = _deep_merge(data, file_data)
    texts = apply_overrides(data, overrides)
    return resolve(validate(RunConfig, data, where=str(path) if path else "config", overrides=texts))


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive lock on ``run_dir`` (a second ``synaug run`` into it is refused)."""
    import fcntl
    import os

    f = open(run_dir / ".synaug-run.lock", "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise SynaugError(f"run folder {run_dir} is in use by another synaug run (pid {pid}); "
                              "wait for it to finish, or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()


def _warn(msg: str) -> None:
    print(f"synaug: warning: {msg}", file=sys.stderr)


def run(cfg: RunConfig, run_dir: str | Path, log=print) -> dict:
    """Execute (or resume) a run; returns the final metrics summary.

    The whole config is checked first (:mod:`synaug.checks`): without the data, then against
    the prepared data and the plan, all before generation or training runs. A run folder
    refused at that point is left as it was (a new one is removed again).
    """
    from .checks import check_config

    for w in check_config(cfg):
        _warn(w)
    run_dir = Path(run_dir)
    created = check_writable(run_dir, "run folder", create=True)
    with run_lock(run_dir):  # a busy folder is refused here, and left alone
        try:
            return _run_locked(cfg, run_dir, log)
        except BaseException:
            if created and all(p.name == ".synaug-run.lock" for p in run_dir.iterdir()):
                shutil.rmtree(run_dir, ignore_errors=True)  # refused before anything was written
            raise


def _run_locked(cfg: RunConfig, run_dir: Path, log) -> dict:
    from .checks import check_data
    from .generate.base import random_weights, random_weights_note
    from .generate.runner import generate
    from .generate.fit.stage import FitStage
    from .inspect import histogram_png, inspect_manifest
    from .plan import Plan, apply_plan, make_plan
    from .train import evaluate, finetune_last_layer, load_checkpoint, train_model

    st = Stages(run_dir, log, create=False)  # created on disk only once the checks pass
    d = run_dir / "data"

    # ---------------------------------------------------------------- checks (nothing written yet)
    k_data, loaded = data_key(cfg.data)  # own data: its rows and files are part of the key
    real_p, pool_p = d / "real.parquet", d / "heldout.parquet"
    prep = None
    if st.done("data", k_data, [real_p, d / "inspect.json"]):
        real = Manifest.read(real_p)
        heldout = Manifest.read(pool_p) if pool_p.is_file() else None
        sizes = _cached_sizes(d / "inspect.json", real) if cfg.train.data.image_size is None else None
    else:
        prep = prepare(cfg.data, loaded)  # every image file checked here, before anything is written
        real, heldout, sizes = prep.real, prep.pool, prep.image_sizes
    k_plan = fingerprint(k_data, "plan", dump(cfg.plan) if cfg.plan else None)
    plan_p = run_dir / "plan.json"
    plan = None
    if cfg.plan is not None:
        if st.done("plan", k_plan, [plan_p]):
            plan = Plan.read(plan_p)
        else:
            p = cfg.plan
            plan = make_plan(real, p.mode, target=p.target, classes=p.classes, k=p.k, ratio=p.ratio,
                             equalize_groups=p.equalize_groups, seed=p.seed)
            plan.params["data"] = dump(cfg.data)
    train_real = apply_plan(real, plan) if plan is not None else real
    gcfg = cfg.generate
    gen_on = gcfg is not None and plan is not None and plan.total_synthetic > 0
    if gen_on and gcfg.backend == "pool" and gcfg.pool.manifest == "heldout":
        if heldout is None:
            raise SynaugError("generate.pool.manifest 'heldout' needs data.imbalance_factor (the images "
                              "the long-tail draw left out) or data.heldout_fraction")
        gcfg = gcfg.model_copy(update={"pool": gcfg.pool.model_copy(
            update={"manifest": str(pool_p), "name": gcfg.pool.name or "heldout-real"})})
    k_gen = fingerprint(k_plan, "generate", dump(cfg.generate) if cfg.generate else None)
    fit = FitStage(cfg, run_dir, k_plan, plan if gen_on else None, train_real)  # generate.fit: adapters
    k_gen, gcfg = fit.key(k_gen), fit.generate_config(gcfg)
    syn_dir = run_dir / "synthetic"
    gen_cached = gen_on and st.done("generate", k_gen, [syn_dir / "synthetic.parquet"])
    for w in check_data(cfg, real, plan, train_real, sizes):
        _warn(w)
    sel_on = gen_on and gcfg.select.active  # selection from more candidates (generate.select)
    if gen_on and not gen_cached and gcfg.backend == "pool" and not sel_on:  # can the pool fill every cell?
        from .generate.pool import PoolGenerator, load_pool

        if gcfg.pool.manifest == str(pool_p):  # the held-out real images, maybe not written yet
            pool_gen = PoolGenerator(plan, heldout, gcfg.seed, gcfg.pool.name, gcfg.pool.shift, gcfg.pool.split,
                                     gcfg.pool.match_groups, gcfg.resolution, gcfg.resize_filter,
                                     gcfg.pool.replacement)
        else:
            pool_gen = load_pool(plan, gcfg)
        pool_gen.check_files()
    if gen_on and gcfg.backend != "pool" and random_weights_note(gcfg.model):
        _warn(random_weights_note(gcfg.model))
    if gen_on and not gen_cached and gcfg.backend != "pool":  # the model exists and fits, before any stage
        from .generate.preflight import check_generation

        log(f"[generate] preflight: {check_generation(gcfg).line()}")
    if sel_on:  # can the pool offer the candidates, does the scorer fit the plan?
        from .generate.select import check_selection

        check_selection(cfg, plan, gcfg, heldout if gcfg.pool.manifest == str(pool_p) else None,
                        syn_dir / "candidates")

    # ---------------------------------------------------------------- data + inspect
    save_resolved(cfg, run_dir / "config.yaml")
    st.create()

    def s_data():
        pr = prep or prepare(cfg.data)
        pr.real.write(real_p)
        if pr.pool is not None:
            pr.pool.write(pool_p)
        elif pool_p.exists():
            pool_p.unlink()
        summary = inspect_manifest(pr.real, "train")
        summary["image_sizes"] = {f"{w}x{h}": n for (w, h), n in pr.image_sizes.most_common()}
        write_json_atomic(d / "inspect.json", summary)
        write_bytes_atomic(d / "histogram.png", histogram_png(summary, f"{cfg.name}: real train"))

    st.run("data", k_data, [real_p, d / "inspect.json"], s_data)
    real = Manifest.read(real_p)
    real_counts = real.class_counts("train")
    real_cells = real.cell_counts("train") if real.groups else None

    # ---------------------------------------------------------------- plan
    train_real = real
    if cfg.plan is not None:
        st.run("plan", k_plan, [plan_p], lambda: plan.write(plan_p))
        plan = Plan.read(plan_p)
        train_real = apply_plan(real, plan)

    # ---------------------------------------------------------------- fit + generate
    fit.run(st, train_real)
    parts = [train_real.split("train", "val")]
    if sel_on:  # stages candidates -> scorer -> select
        from .generate.select import run_selection

        parts.append(run_selection(st, cfg, plan, gcfg, run_dir, train_real, k_plan))
    if gen_on and not sel_on:
        note = ""
        if not gen_cached and _generated_for_another(syn_dir, plan, gcfg):
            note = ("the plan or generate config changed: the images that still match are kept, only the "
                    "others are made")

        def s_gen():  # update: a changed plan keeps every image whose cell, seed and source still match
            generate(plan, gcfg, syn_dir, real_manifest=train_real.split("train"), progress=True, update=True)

        st.run("generate", k_gen, [syn_dir / "synthetic.parquet"], s_gen, note=note)
        parts.append(Manifest.read(syn_dir / "synthetic.parquet"))
    train_m = Manifest.concat(parts) if len(parts) > 1 else parts[0]
    train_m.write(d / "train.parquet")  # the manifest training used (real + synthetic, no test)

    # ---------------------------------------------------------------- train
    k_train = fingerprint(k_gen, "train", dump(cfg.train))
    tdir = run_dir / "train"
    trained = {}  # the model of this invocation; a cached stage's model is loaded only if needed
    resume, note = _train_resume(cfg.train, tdir, train_m.split("train"), k_gen)

    def s_train():
        write_json_atomic(tdir / "inputs.json", {"upstream": k_gen})
        trained["m"] = train_model(train_m.split("train"), train_m.split("val"), cfg.train, tdir,
                                   resume=resume).model

    st.run("train", k_train, [tdir / "model.safetensors"], s_train, note=note)

    # ---------------------------------------------------------------- evaluate (+ fine-tune)
    test = real.split("test")
    if len(test) == 0:
        raise SynaugError("data has no test split to evaluate on")
    ev = dict(train_counts=real_counts, train_group_counts=real_cells,
              counts_source="real train rows before uniformization", device=cfg.eval.device,
              data=cfg.train.data, augment=cfg.train.augment, channels_last=cfg.train.channels_last,
              amp=cfg.train.amp)
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

        why = st.why("finetune", k_ft, [fdir / "model.safetensors"])
        ft_note = ""
        if why and st.done("train", k_train, [tdir / "model.safetensors"]) and "train" not in st.timings:
            ft_note = f"{why}; the trained model is reused"
        st.run("finetune", k_ft, [fdir / "model.safetensors"], s_ft, note=ft_note)
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
               "random_weights": any(random_weights(g) for g in _generators(train_m)),
               "timings_s": st.timings}
    write_json_atomic(run_dir / "metrics.json", summary)
    from .report import build_report

    build_report(run_dir)
    return summary


def _generated_for_another(syn_dir: Path, plan, gcfg: GenerateConfig) -> bool:
    """Whether ``syn_dir`` holds a generation of another plan or generate config."""
    from .generate.runner import fingerprint as gen_fingerprint

    try:
        was = json.loads((syn_dir / "run.json").read_text()).get("digest")
    except (OSError, json.JSONDecodeError):
        return False
    return was != gen_fingerprint(plan, gcfg)["digest"]


def _cached_sizes(inspect_json: Path, real: Manifest):
    """Image sizes of the real rows of a cached data stage: from its inspect.json, or (runs made
    before it recorded them) probed again (headers only)."""
    from collections import Counter

    from .data.files import check_manifest_images, size_counts

    try:
        found = json.loads(inspect_json.read_text()).get("image_sizes")
    except (OSError, json.JSONDecodeError):
        found = None
    if found is not None:
        return Counter({tuple(int(x) for x in k.split("x")): int(n) for k, n in found.items()})
    return size_counts(check_manifest_images(real, "images of the prepared real data"), real)


def _train_resume(cfg: TrainConfig, tdir: Path, train_rows: Manifest, upstream: str) -> tuple[bool, str]:
    """Whether the train stage continues the checkpoints in ``tdir``, and what the log says.

    ``upstream`` is the key of the stages before training: when it changed, the images may
    differ under the same paths (e.g. regenerated), so training starts over.
    """
    from .train.checkpoint import read_last
    from .train.loop import manifest_fingerprint, resume_decision

    last = read_last(tdir) if tdir.is_dir() else None
    if last is None:
        return True, ""
    try:
        was = json.loads((tdir / "inputs.json").read_text()).get("upstream")
    except (OSError, json.JSONDecodeError):
        was = None
    if was is not None and was != upstream:
        return False, "training again from scratch: the data, plan or generated images changed"
    action, reason = resume_decision(last, cfg, manifest_fingerprint(train_rows))
    done = int(last["epoch"]) + 1
    if action == "resume":
        return True, f"resuming after epoch {done}" if done < cfg.epochs else ""
    if action == "extend":
        return True, f"extending the training: {reason}; continuing at epoch {done + 1} of {cfg.epochs}"
    return False, f"training again from scratch: {reason}"


def _generators(train_m: Manifest) -> list[str]:
    """The distinct ``generator`` values of the synthetic rows training used."""
    return sorted(set(train_m.df.loc[train_m.df["source"] == "synthetic", "generator"]))


def _generator_label(cfg: RunConfig, train_m: Manifest) -> str:
    from .generate.base import random_weights

    gens = _generators(train_m)
    label = cfg.generator_note or (", ".join(gens) if gens else "none (real data only)")
    if any(random_weights(g) for g in gens):
        label += " (RANDOM WEIGHTS: the synthetic images are noise, not meaningful)"
    return label


# ---------------------------------------------------------------------------- CLI
def register(sub) -> None:
    import argparse

    from .train.cli import TRAIN_KEYS_HELP

    p = sub.add_parser(
        "run", help="run the whole method from one config (cached, resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="inspect -> plan -> [fit] -> generate -> train -> fine-tune -> evaluate -> report\n\n"
                    "Config sections: name, seed, data (dataset | manifest, root, ...), plan (mode, target),\n"
                    "generate (as `synaug generate --help`; null = off), train (as `synaug train --help`),\n"
                    "finetune (as `synaug finetune --help`; null = off), eval. Relative paths in the file\n"
                    "are read relative to its folder. Every image file is checked before anything is\n"
                    "generated; a changed plan keeps the generated images that still match.\n"
                    "Beyond the paper (off by default; docs/synthetic.md): generate.select.*\n"
                    "(candidates -> scorer -> select stages), train.synthetic.*, finetune.train_blocks.\n\n"
                    + TRAIN_KEYS_HELP.replace("--set epochs=30 --set schedule.warmup_epochs=2",
                                              "--set train.epochs=30 --set train.schedule.warmup_epochs=2")
                    + "\n  (in a run config these keys live under train:)")
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
    print(f"report: {(out / 'report.html').resolve()}")
    from .generate.base import random_weights_note

    for g in s.get("generators") or []:
        if random_weights_note(g):
            _warn(random_weights_note(g))
    return 0


def _generators_cell(s: dict) -> str:
    from .generate.base import random_weights

    return ", ".join(g + (" (random weights: not meaningful)" if random_weights(g) else "")
                     for g in s.get("generators") or ["none"])


def print_summary_table(summaries: list[dict]) -> None:
    from rich.table import Table

    from .term import console

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
            t.add_row(s["name"], _generators_cell(s), stage, *[row.get(c, "") for c in cols])
    console().print(t)
