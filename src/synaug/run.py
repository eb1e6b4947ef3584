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

from .config import dump, save_resolved
from .errors import SynaugError
from .io import check_writable, write_bytes_atomic, write_json_atomic
from .manifest import Manifest
from .generate.config import GenerateConfig
from .prepare import data_key, prepare
from .runconfig import RunConfig, load_run_config, resolve  # noqa: F401 (synaug.run.load_run_config, public)
from .stages import Stages, fingerprint
from .train.config import TrainConfig


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
    p = _Pipeline(cfg, run_dir, log)
    p.check()  # everything that can be refused, before a file is written
    save_resolved(cfg, run_dir / "config.yaml")
    # metrics.json exists only for a run finished under this config.yaml (rewritten by finish)
    (run_dir / "metrics.json").unlink(missing_ok=True)
    p.st.create()
    p.data_stage()
    p.plan_stage()
    train_m = p.generate_stages()
    p.train_stage(train_m)
    results = {"trained": p.evaluate_stage("train", p.tdir, p.k_train)}
    if cfg.finetune is not None:
        results["finetuned"] = p.finetune_stages()
    return p.finish(train_m, results)


class _Pipeline:
    """The stages of one run and what they share (keys, manifests, the plan)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, log):
        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        self.st = Stages(run_dir, log, create=False)  # created on disk only once the checks pass
        self.d = run_dir / "data"
        self.real_p, self.pool_p, self.plan_p = self.d / "real.parquet", self.d / "heldout.parquet", run_dir / "plan.json"
        self.syn_dir, self.tdir, self.fdir = run_dir / "synthetic", run_dir / "train", run_dir / "finetune"
        self.trained = {}  # models of this invocation; a cached stage's model is loaded only if needed

    # ------------------------------------------------------------ checks (nothing written yet)
    def check(self) -> None:
        from .checks import check_data

        self._load_data()
        self._make_plan()
        self._setup_generation()
        for w in check_data(self.cfg, self.real, self.plan, self.train_real, self.sizes):
            _warn(w)
        self._check_generation()

    def _load_data(self) -> None:
        cfg = self.cfg
        self.k_data, loaded = data_key(cfg.data)  # own data: its rows and files are part of the key
        self.prep = None
        if self.st.done("data", self.k_data, [self.real_p, self.d / "inspect.json"]):
            self.real = Manifest.read(self.real_p)
            self.heldout = Manifest.read(self.pool_p) if self.pool_p.is_file() else None
            self.sizes = (_cached_sizes(self.d / "inspect.json", self.real)
                          if cfg.train.data.image_size is None else None)
        else:
            self.prep = prepare(cfg.data, loaded)  # every image file checked here, before anything is written
            self.real, self.heldout, self.sizes = self.prep.real, self.prep.pool, self.prep.image_sizes

    def _make_plan(self) -> None:
        from .plan import Plan, apply_plan, make_plan

        cfg = self.cfg
        self.k_plan = fingerprint(self.k_data, "plan", dump(cfg.plan) if cfg.plan else None)
        self.plan = None
        if cfg.plan is not None:
            if self.st.done("plan", self.k_plan, [self.plan_p]):
                self.plan = Plan.read(self.plan_p)
            else:
                p = cfg.plan
                self.plan = make_plan(self.real, p.mode, target=p.target, classes=p.classes, k=p.k, ratio=p.ratio,
                                      equalize_groups=p.equalize_groups, seed=p.seed)
                self.plan.params["data"] = dump(cfg.data)
        self.train_real = apply_plan(self.real, self.plan) if self.plan is not None else self.real

    def _setup_generation(self) -> None:
        """The generation config as it will run (held-out pool, fitted adapters) and its key."""
        from .generate.fit.stage import FitStage

        cfg, gcfg = self.cfg, self.cfg.generate
        self.gen_on = gcfg is not None and self.plan is not None and self.plan.total_synthetic > 0
        if self.gen_on and gcfg.backend == "pool" and gcfg.pool.manifest == "heldout":
            if self.heldout is None:
                raise SynaugError("generate.pool.manifest 'heldout' needs data.imbalance_factor (the images "
                                  "the long-tail draw left out) or data.heldout_fraction")
            gcfg = gcfg.model_copy(update={"pool": gcfg.pool.model_copy(
                update={"manifest": str(self.pool_p), "name": gcfg.pool.name or "heldout-real"})})
        k_gen = fingerprint(self.k_plan, "generate", dump(cfg.generate) if cfg.generate else None)
        self.fit = FitStage(cfg, self.run_dir, self.k_plan, self.plan if self.gen_on else None, self.train_real)
        self.k_gen, self.gcfg = self.fit.key(k_gen), self.fit.generate_config(gcfg)
        self.gen_cached = self.gen_on and self.st.done("generate", self.k_gen, [self.syn_dir / "synthetic.parquet"])
        self.sel_on = self.gen_on and self.gcfg.select.active  # selection from more candidates (generate.select)
        self.k_train = fingerprint(self.k_gen, "train", dump(cfg.train))

    def _check_generation(self) -> None:
        """The pool can fill every cell, the model exists and fits, the selection can run."""
        from .generate.base import random_weights_note

        gcfg, pooled = self.gcfg, self.gen_on and self.gcfg.backend == "pool"
        if pooled and not self.gen_cached and not self.sel_on:
            from .generate.pool import PoolGenerator, load_pool

            if gcfg.pool.manifest == str(self.pool_p):  # the held-out real images, maybe not written yet
                pool_gen = PoolGenerator(self.plan, self.heldout, gcfg.seed, gcfg.pool.name, gcfg.pool.shift,
                                         gcfg.pool.split, gcfg.pool.match_groups, gcfg.resolution,
                                         gcfg.resize_filter, gcfg.pool.replacement)
            else:
                pool_gen = load_pool(self.plan, gcfg)
            pool_gen.check_files()
        if self.gen_on and not pooled and random_weights_note(gcfg.model):
            _warn(random_weights_note(gcfg.model))
        if self.gen_on and not pooled and not self.gen_cached:
            from .generate.preflight import check_generation

            self.log(f"[generate] preflight: {check_generation(gcfg).line()}")
        if self.sel_on:
            from .generate.select import check_selection

            check_selection(self.cfg, self.plan, gcfg, self.heldout if gcfg.pool.manifest == str(self.pool_p)
                            else None, self.syn_dir / "candidates")

    # ------------------------------------------------------------ stages
    def data_stage(self) -> None:
        from .inspect import histogram_png, inspect_manifest

        cfg, d = self.cfg, self.d

        def s_data():
            pr = self.prep or prepare(cfg.data)
            pr.real.write(self.real_p)
            if pr.pool is not None:
                pr.pool.write(self.pool_p)
            elif self.pool_p.exists():
                self.pool_p.unlink()
            summary = inspect_manifest(pr.real, "train")
            summary["image_sizes"] = {f"{w}x{h}": n for (w, h), n in pr.image_sizes.most_common()}
            write_json_atomic(d / "inspect.json", summary)
            write_bytes_atomic(d / "histogram.png", histogram_png(summary, f"{cfg.name}: real train"))

        self.st.run("data", self.k_data, [self.real_p, d / "inspect.json"], s_data)
        self.real = Manifest.read(self.real_p)
        self.train_real = self.real
        self.real_counts = self.real.class_counts("train")  # before uniformization: evaluation's shots
        self.real_cells = self.real.cell_counts("train") if self.real.groups else None

    def plan_stage(self) -> None:
        from .plan import Plan, apply_plan

        if self.cfg.plan is not None:
            self.st.run("plan", self.k_plan, [self.plan_p], lambda: self.plan.write(self.plan_p))
            self.plan = Plan.read(self.plan_p)
            self.train_real = apply_plan(self.real, self.plan)

    def generate_stages(self) -> Manifest:
        """fit -> generate (or candidates -> scorer -> select); the manifest training uses."""
        self.fit.run(self.st, self.train_real)
        parts = [self.train_real.split("train", "val")]
        if self.sel_on:
            from .generate.select import run_selection

            parts.append(run_selection(self.st, self.cfg, self.plan, self.gcfg, self.run_dir, self.train_real,
                                       self.k_plan))
        elif self.gen_on:
            parts.append(self._generate())
        train_m = Manifest.concat(parts) if len(parts) > 1 else parts[0]
        train_m.write(self.d / "train.parquet")  # the manifest training used (real + synthetic, no test)
        return train_m

    def _generate(self) -> Manifest:
        from .generate.runner import generate

        plan, gcfg, syn_dir = self.plan, self.gcfg, self.syn_dir
        note = ""
        if not self.gen_cached and _generated_for_another(syn_dir, plan, gcfg):
            note = "the plan or generate config changed: the images that still match are kept, only the others are made"

        def s_gen():  # update: a changed plan keeps every image whose cell, seed and source still match
            generate(plan, gcfg, syn_dir, real_manifest=self.train_real.split("train"), progress=True, update=True)

        self.st.run("generate", self.k_gen, [syn_dir / "synthetic.parquet"], s_gen, note=note)
        return Manifest.read(syn_dir / "synthetic.parquet")

    def train_stage(self, train_m: Manifest) -> None:
        from .train import train_model

        cfg, tdir = self.cfg, self.tdir
        resume, note = _train_resume(cfg.train, tdir, train_m.split("train"), self.k_gen)

        def s_train():
            write_json_atomic(tdir / "inputs.json", {"upstream": self.k_gen})
            self.trained["train"] = train_model(train_m.split("train"), train_m.split("val"), cfg.train, tdir,
                                                resume=resume).model

        self.st.run("train", self.k_train, [tdir / "model.safetensors"], s_train, note=note)

    def evaluate_stage(self, which: str, model_dir: Path, upstream: str) -> dict:
        """``eval-<which>``: the model of ``model_dir`` on the test split (the only stage reading it)."""
        from .train import evaluate, load_checkpoint
        from .train.features import FILE as FEATURES_FILE

        cfg = self.cfg
        test = self.real.split("test")
        if len(test) == 0:
            raise SynaugError("data has no test split to evaluate on")
        ev = dict(train_counts=self.real_counts, train_group_counts=self.real_cells,
                  counts_source="real train rows before uniformization", device=cfg.eval.device,
                  data=cfg.train.data, augment=cfg.train.augment, channels_last=cfg.train.channels_last,
                  amp=cfg.train.amp)
        out = self.run_dir / "eval" / which
        # step 3 keeps the encoder: eval-finetune applies its head to eval-train's features when they match
        train_feats = self.run_dir / "eval" / "train" / FEATURES_FILE
        ev.update(features_out=train_feats if which == "train" else None,
                  features_from=[] if which == "train" else [train_feats])
        self.st.run(f"eval-{which}", fingerprint(upstream, "eval", dump(cfg.eval)), [out / "metrics.json"],
                    lambda: evaluate(self.trained.get(which) or load_checkpoint(model_dir / "model.safetensors"),
                                     test, out_dir=out, **ev))
        return json.loads((out / "metrics.json").read_text())

    def finetune_stages(self) -> dict:
        """Last-layer fine-tuning on the real rows (step 3), then its evaluation."""
        from .train import finetune_last_layer, load_checkpoint

        cfg, fdir, st = self.cfg, self.fdir, self.st
        k_ft = fingerprint(self.k_train, "finetune", dump(cfg.finetune))

        def s_ft():
            m2 = load_checkpoint(self.tdir / ("last.json" if cfg.finetune.start == "last" else "model.safetensors"))
            self.trained["finetune"] = finetune_last_layer(m2, self.train_real.split("train", "val"), cfg.finetune,
                                                           fdir)

        why = st.why("finetune", k_ft, [fdir / "model.safetensors"])
        note = ""
        if why and st.done("train", self.k_train, [self.tdir / "model.safetensors"]) and "train" not in st.timings:
            note = f"{why}; the trained model is reused"
        st.run("finetune", k_ft, [fdir / "model.safetensors"], s_ft, note=note)
        return self.evaluate_stage("finetune", fdir, k_ft)

    def finish(self, train_m: Manifest, results: dict) -> dict:
        """metrics.json and the report."""
        from .generate.base import random_weights
        from .report import build_report

        gens = _generators(train_m)
        summary = {"name": self.cfg.name, "final": "finetuned" if "finetuned" in results else "trained",
                   "results": results, "real_train_counts": self.real_counts.tolist(),
                   "train_counts_after": _epoch_counts(train_m),
                   "synthetic": int((train_m.df["source"] == "synthetic").sum()),
                   "generator": _generator_label(self.cfg, train_m), "generators": gens,
                   "random_weights": any(random_weights(g) for g in gens), "timings_s": self.st.seconds(),
                   "ran_s": self.st.timings}
        write_json_atomic(self.run_dir / "metrics.json", summary)
        build_report(self.run_dir)
        return summary


def _epoch_counts(train_m: Manifest) -> list[int]:
    """Training images per class in one epoch (rotating synthetic rows: one round of them)."""
    from .train.synthetic import epoch_manifest

    return epoch_manifest(train_m).class_counts("train").tolist()


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

    from .train.config import TRAIN_KEYS_HELP

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
