"""Bad input matrix: every case exits 2 with ONE stderr line ``synaug: error: ...`` naming the
problem and leaves no partial output; a few inputs are legitimately handled (exit 0) instead.

Rows run the real ``synaug`` entry point as subprocesses (launched concurrently by a module
fixture to keep the wall time low); the disk-full rows run ``synaug.cli.main`` in-process with
file writes / renames under the output folder patched to fail with ``ENOSPC``.

Decisions recorded here (see also the report):

* empty class, ``plan --mode class``: handled - the class is filled entirely with synthetic images;
* empty class in training: handled - losses give empty classes zero weight / a finite prior and
  the checkpoint records the zero count; fine-tuning needs real images of every class: error;
* non-RGB images (L, RGBA, P) in training: handled - converted to RGB when decoded;
* images of different sizes without ``data.image_size``: error (with the key to set);
* ``generate`` failing mid-run (disk full) keeps its *resumable* state (complete images + their
  rows, never a ``.tmp`` or a half-written file) but never the final manifest; corrupt pool images
  are all found (and listed) before any image is written.
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import yaml
from PIL import Image

from synaug.manifest import Manifest
from synaug.plan import Cell, Plan
from synaug.train.toydata import make_toy_manifest

CLASSES = ["class0", "class1", "class2"]
SYNAUG = Path(sys.executable).parent / "synaug"
TRAIN_CFG = {"epochs": 1, "batch_size": 16, "model": {"width": 4}, "progress": False,
             "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}}


# ---------------------------------------------------------------------------- shared inputs
@dataclass
class Ctx:
    root: Path                      # images of the good manifests (real root)
    good: Manifest                  # train + val rows, 16x16 RGB PNGs
    good_parquet: Path
    pool_yaml: Path                 # generate config: pool backend over a good pool
    plan_json: Path                 # a valid plan for CLASSES
    train_yaml: Path
    ckpt: Path                      # a trained run folder (finetune rows)
    fake_sd: Path                   # folder with model_index.json only (checks before loading)
    cache: Path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    import torch

    from synaug.train import TrainConfig, train_model

    base = tmp_path_factory.mktemp("badinput")
    root = base / "img"
    tr = make_toy_manifest(root, [8, 6, 4], size=16, seed=0)
    va = make_toy_manifest(root, [2, 2, 2], size=16, seed=1, split="val")
    good = Manifest.concat([tr, va])
    good.write(base / "good.parquet")
    pool = make_toy_manifest(base / "poolimg", [10, 10, 10], size=16, seed=2, prefix="p")
    pool.write(base / "pool.parquet")
    (base / "pool.yaml").write_text(yaml.safe_dump({"backend": "pool", "pool": {"manifest": str(base / "pool.parquet")},
                                                    "batch_size": 2}))
    Plan("class", CLASSES, [Cell(i, c, 5, 2, attributes={"class": c}) for i, c in enumerate(CLASSES)]
         ).write(base / "plan.json")
    cache = base / "cache"
    (base / "train.yaml").write_text(yaml.safe_dump({**TRAIN_CFG, "data": {"cache_dir": str(cache)}}))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig.model_validate({**TRAIN_CFG, "data": {"cache_dir": str(cache)}})
        train_model(tr, None, cfg, base / "ckpt")
    finally:
        torch.set_num_threads(n)
    fake = base / "fake-sd"
    fake.mkdir()
    (fake / "model_index.json").write_text("{}")
    return Ctx(root, good, base / "good.parquet", base / "pool.yaml", base / "plan.json", base / "train.yaml",
               base / "ckpt", fake, cache)


def _csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _rows(m: Manifest) -> list[dict]:
    return m.df[["path", "label", "split"]].to_dict("records")


def _copy_images(ctx: Ctx, dst: Path, m: Manifest | None = None) -> list[dict]:
    """Copy the images of ``m`` (default: the good manifest) under ``dst``; return CSV rows."""
    m = m or ctx.good
    for p in m.df["path"]:
        (dst / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(m.roots["real"] / p, dst / p)
    return _rows(m)


def _plan_dict(ctx: Ctx) -> dict:
    return json.loads(ctx.plan_json.read_text())


def _gen(ctx: Ctx, plan: Path, out: Path, *extra) -> list:
    return ["generate", "--plan", plan, "--config", ctx.pool_yaml, "--out", out, "--no-progress", *extra]


def _train(ctx: Ctx, manifest: Path, out: Path, *extra) -> list:
    return ["train", "-c", ctx.train_yaml, "--train-manifest", manifest, "--out", out, *extra]


# ---------------------------------------------------------------------------- the rows
@dataclass
class Row:
    args: list                                  # CLI arguments
    outputs: list                               # must be absent afterwards (or unchanged, see keep)
    keep: list = field(default_factory=list)    # existing paths that must be byte-identical afterwards
    check: Callable | None = None               # extra check for handled rows / resumable state


def r_missing_column(ctx, t):
    _csv(t / "m.csv", [{"path": "a.png", "split": "train"}])
    return Row(["plan", "--manifest", t / "m.csv", "--out", t / "plan.json"], [t / "plan.json"])


def r_missing_manifest_file(ctx, t):
    return Row(["plan", "--manifest", t / "nothere.parquet", "--out", t / "plan.json"], [t / "plan.json"])


def r_unknown_class_plan_file(ctx, t):
    d = _plan_dict(ctx)
    d["cells"][1]["class_name"] = "wolf"
    (t / "plan.json").write_text(json.dumps(d))
    return Row(_gen(ctx, t / "plan.json", t / "out"), [t / "out"], keep=[t / "plan.json"])


def r_unknown_class_replace(ctx, t):
    return Row(["plan", "--manifest", ctx.good_parquet, "--mode", "replace-class", "--classes", "zebra",
                "--out", t / "plan.json"], [t / "plan.json"])


def _txt2img(ctx, t, key, value):
    return Row(_gen(ctx, ctx.plan_json, t / "out", "--set", "backend=txt2img", "--set", f"model={ctx.fake_sd}",
                    "--set", f"{key}={value}"), [t / "out"])


def r_unknown_class_prompts_file(ctx, t):
    (t / "prompts.json").write_text(json.dumps({"class0": ["a photo of a thing"], "zebra": ["a zebra"]}))
    return _txt2img(ctx, t, "prompts", t / "prompts.json")


def r_unknown_class_modifiers_file(ctx, t):
    mods = {c: ["small", "red"] for c in CLASSES} | {"zebra": ["striped"]}
    (t / "mods.json").write_text(json.dumps(mods))
    return _txt2img(ctx, t, "modifiers", t / "mods.json")


def r_label_out_of_range(ctx, t):
    _csv(t / "m.csv", [{"path": "a.png", "label": 0, "split": "train"}, {"path": "b.png", "label": 7, "split": "train"}])
    (t / "m.csv.meta.json").write_text(json.dumps({"version": 1, "classes": CLASSES, "groups": None,
                                                   "roots": {"real": "."}}))
    return Row(["plan", "--manifest", t / "m.csv", "--out", t / "plan.json"], [t / "plan.json"])


def r_label_negative(ctx, t):
    _csv(t / "m.csv", [{"path": "a.png", "label": 1, "split": "train"}, {"path": "b.png", "label": -1, "split": "train"}])
    return Row(["plan", "--manifest", t / "m.csv", "--out", t / "plan.json"], [t / "plan.json"])


def r_label_not_integer(ctx, t):
    _csv(t / "m.csv", [{"path": "a.png", "label": 1, "split": "train"}, {"path": "b.png", "label": "cat", "split": "train"}])
    return Row(["plan", "--manifest", t / "m.csv", "--out", t / "plan.json"], [t / "plan.json"])


def r_target_negative(ctx, t):
    return Row(["plan", "--manifest", ctx.good_parquet, "--target", "-3", "--out", t / "plan.json"], [t / "plan.json"])


def r_target_not_integer(ctx, t):
    return Row(["plan", "--manifest", ctx.good_parquet, "--target", "2.5", "--out", t / "plan.json"], [t / "plan.json"])


def _bad_count(ctx, t, value):
    d = _plan_dict(ctx)
    d["cells"][1]["synthetic"] = value
    (t / "plan.json").write_text(json.dumps(d))
    return Row(_gen(ctx, t / "plan.json", t / "out"), [t / "out"], keep=[t / "plan.json"])


def r_count_negative_plan_file(ctx, t):
    return _bad_count(ctx, t, -4)


def r_count_fraction_plan_json(ctx, t):
    return _bad_count(ctx, t, 2.5)


def r_count_fraction_plan_csv(ctx, t):
    f = Plan.read(ctx.plan_json).frame()
    f["synthetic"] = f["synthetic"].astype(object)
    f.loc[1, "synthetic"] = "2.5"
    f.to_csv(t / "plan.csv", index=False)
    return Row(_gen(ctx, t / "plan.csv", t / "out"), [t / "out"], keep=[t / "plan.csv"])


def _no_train_class2(ctx) -> Manifest:
    df = ctx.good.df
    return ctx.good.select(~((df["label"] == 2) & (df["split"] == "train")).to_numpy())


def r_empty_class_plan_handled(ctx, t):
    _no_train_class2(ctx).write(t / "m.parquet")

    def check(t):
        plan = Plan.read(t / "plan.json")
        assert [(c.real, c.synthetic) for c in plan.cells] == [(8, 0), (6, 2), (0, 8)]
    return Row(["plan", "--manifest", t / "m.parquet", "--mode", "class", "--out", t / "plan.json"], [], check=check)


def r_empty_class_pool(ctx, t):
    pool = Manifest.read(ctx.pool_yaml.parent / "pool.parquet")
    df = pool.df.copy()
    df.loc[df["label"] == 2, "split"] = "val"  # class2 exists, but has no pool (train) images
    Manifest(df, pool.classes, pool.roots).write(t / "pool.parquet")
    return Row(_gen(ctx, ctx.plan_json, t / "out", "--set", f"pool.manifest={t / 'pool.parquet'}"), [t / "out"])


def r_empty_class_train_handled(ctx, t):
    _no_train_class2(ctx).write(t / "m.parquet")

    def check(t):
        meta = json.loads((t / "run" / "summary.json").read_text())
        assert meta["num_train"] == 14
        from synaug.train import load_checkpoint

        m = load_checkpoint(t / "run")
        assert m.meta["train_class_counts"] == [8, 6, 0] and m.num_classes == 3
    return Row(_train(ctx, t / "m.parquet", t / "run"), [], check=check)


def r_empty_class_finetune(ctx, t):
    _no_train_class2(ctx).write(t / "m.parquet")
    return Row(["finetune", "--checkpoint", ctx.ckpt, "--manifest", t / "m.parquet", "--out", t / "ft",
                "--set", "epochs=1", "--set", "progress=false"], [t / "ft"])


def r_test_rows_to_train(ctx, t):
    # a manifest that also holds test rows: `synaug train` reads only its train/val rows and
    # says so (one file for train / finetune / evaluate, as in the README); the library-level
    # train_model still refuses test rows (tests/test_train_loop.py, tests/test_leakage.py)
    te = make_toy_manifest(ctx.root, [2, 2, 2], size=16, seed=3, split="test")
    Manifest.concat([ctx.good, te]).write(t / "m.parquet")

    def check(t):
        s = json.loads((t / "run" / "summary.json").read_text())
        assert (s["num_train"], s["num_val"]) == (18, 6)
    return Row(_train(ctx, t / "m.parquet", t / "run"), [], check=check)


def _train_with(ctx, t, damage):
    rows = _copy_images(ctx, t / "img")
    damage(t / "img" / rows[3]["path"])
    _csv(t / "img" / "m.csv", rows)
    return Row(_train(ctx, t / "img" / "m.csv", t / "run"), [t / "run"])


def r_truncated_image(ctx, t):
    return _train_with(ctx, t, lambda p: p.write_bytes(p.read_bytes()[:60]))


def r_garbage_image(ctx, t):
    return _train_with(ctx, t, lambda p: p.write_bytes(b"this is not a PNG file\n" * 4))


def r_odd_size_image(ctx, t):
    return _train_with(ctx, t, lambda p: Image.new("RGB", (24, 20), (9, 9, 9)).save(p))


def r_non_rgb_train_handled(ctx, t):
    rows = _copy_images(ctx, t / "img")
    for r, mode in zip(rows[:3], ("L", "RGBA", "P")):
        p = t / "img" / r["path"]
        with Image.open(p) as im:
            im.convert(mode).save(p)
    _csv(t / "img" / "m.csv", rows)

    def check(t):
        s = json.loads((t / "run" / "summary.json").read_text())
        assert s["num_train"] == 18 and s["num_val"] == 6
    return Row(_train(ctx, t / "img" / "m.csv", t / "run"), [], check=check)


def r_corrupt_pool_image(ctx, t):
    pool = Manifest.read(ctx.pool_yaml.parent / "pool.parquet")
    _copy_images(ctx, t / "pool", pool)
    # damage every class1 image: the plan's class0 images would come first, but the pool
    # images the plan uses are all checked before any image is written
    for p in pool.df.loc[pool.df["label"] == 1, "path"]:
        (t / "pool" / p).write_bytes(b"\x89PNG\r\n\x1a\n-truncated")
    Manifest(pool.df, pool.classes, {"real": t / "pool"}).write(t / "pool.parquet")

    def check(t):
        assert not list((t / "out").rglob("*.png")), "an image was written before the pool was checked"
    return Row(_gen(ctx, ctx.plan_json, t / "out", "--set", f"pool.manifest={t / 'pool.parquet'}"),
               [t / "out" / "synthetic.parquet"], check=check)


def _escape(ctx, t, bad):
    _csv(t / "m.csv", [{"path": "a.png", "label": 0, "split": "train"}, {"path": bad, "label": 1, "split": "train"}])
    return Row(["plan", "--manifest", t / "m.csv", "--out", t / "plan.json"], [t / "plan.json"])


def r_path_escapes_dotdot(ctx, t):
    return _escape(ctx, t, "x/../../secret.png")


def r_path_absolute(ctx, t):
    return _escape(ctx, t, "/etc/hostname")


def r_duplicate_paths(ctx, t):
    _csv(t / "m.csv", [{"path": "a.png", "label": 0, "split": "train"}, {"path": "b.png", "label": 1, "split": "train"},
                       {"path": "a.png", "label": 1, "split": "train"}])
    return Row(["plan", "--manifest", t / "m.csv", "--out", t / "plan.json"], [t / "plan.json"])


def r_config_key_misspelled(ctx, t):
    (t / "c.yaml").write_text(yaml.safe_dump({**TRAIN_CFG, "optim": {"lrr": 0.1}}))
    return Row(["train", "-c", t / "c.yaml", "--train-manifest", ctx.good_parquet, "--out", t / "run"], [t / "run"])


def r_run_config_key_misspelled(ctx, t):
    (t / "run.yaml").write_text(yaml.safe_dump({"name": "x", "trian": {"epochs": 1}}))
    return Row(["run", t / "run.yaml", "--out", t / "run"], [t / "run"])


def r_wrong_type_float(ctx, t):
    (t / "c.yaml").write_text(yaml.safe_dump({**TRAIN_CFG, "optim": {"lr": "fast"}}))
    return Row(["train", "-c", t / "c.yaml", "--train-manifest", ctx.good_parquet, "--out", t / "run"], [t / "run"])


def r_wrong_type_override(ctx, t):
    return Row(_gen(ctx, ctx.plan_json, t / "out", "--set", "guidance_scale=high"), [t / "out"])


def r_model_path_missing_generate(ctx, t):
    return Row(_gen(ctx, ctx.plan_json, t / "out", "--set", "backend=txt2img", "--set", "model=/nonexistent/sd-model"),
               [t / "out"])


def r_model_path_missing_finetune(ctx, t):
    return Row(["finetune", "--checkpoint", t / "no-run" / "model.safetensors", "--manifest", ctx.good_parquet,
                "--out", t / "ft"], [t / "ft"])


def r_unknown_model_name(ctx, t):
    return Row(_train(ctx, ctx.good_parquet, t / "run", "--set", "model.name=resnet999"), [t / "run"])


def r_resume_into_other_run(ctx, t):
    # an existing run folder with a different config is refused and left untouched
    shutil.copytree(ctx.ckpt, t / "run")
    return Row(_train(ctx, ctx.good_parquet, t / "run", "--set", "optim.lr=0.01"), [], keep=[t / "run"])


def _run_yaml(ctx, t, **over) -> Path:
    """A `synaug run` config over the good rows (+ a few test rows), planned to class balance and
    filled from the good pool; ``over`` replaces / adds top-level sections."""
    te = make_toy_manifest(t / "img", [2, 2, 2], size=16, seed=3, split="test")
    _copy_images(ctx, t / "img")
    cols = ["path", "label", "class_name", "split"]
    pd.concat([ctx.good.df[cols], te.df[cols]]).to_csv(t / "img" / "m.csv", index=False)
    raw = {"name": "bad", "data": {"manifest": str(t / "img" / "m.csv"), "dataset": None}, "plan": {"mode": "class"},
           "generate": {"backend": "pool", "resolution": 16,
                        "pool": {"manifest": str(ctx.pool_yaml.parent / "pool.parquet")}},
           "train": TRAIN_CFG, **over}
    (t / "run.yaml").write_text(yaml.safe_dump(raw))
    return t / "run.yaml"


def r_select_more_candidates_than_pool(ctx, t):
    cfg = _run_yaml(ctx, t)
    return Row(["run", cfg, "--out", t / "run", "--set", "generate.select.candidates=5"], [t / "run"])


def r_scorer_checkpoint_other_classes(ctx, t):
    from synaug.models import create_model
    from synaug.train import save_model

    save_model(create_model("resnet32", 2, width=4), t / "other.safetensors", {"classes": ["cat", "dog"]})
    cfg = _run_yaml(ctx, t)
    return Row(["run", cfg, "--out", t / "run", "--set", "generate.select.candidates=2",
                "--set", "generate.select.selector=typicality", "--set", "generate.select.scorer.model=checkpoint",
                "--set", f"generate.select.scorer.path={t / 'other.safetensors'}"], [t / "run"])


def r_synthetic_loss_weight_zero(ctx, t):
    return Row(["run", _run_yaml(ctx, t), "--out", t / "run", "--set", "train.synthetic.loss_weight=0"], [t / "run"])


def r_synthetic_smoothing_one(ctx, t):
    return Row(["run", _run_yaml(ctx, t), "--out", t / "run", "--set", "train.synthetic.label_smoothing=1.0"],
               [t / "run"])


# (id, builder, expected message; None = handled, exit 0)
CASES = [
    ("missing-manifest-column", r_missing_column, "missing column 'label'"),
    ("manifest-file-missing", r_missing_manifest_file, "manifest file not found"),
    ("unknown-class-in-plan-file", r_unknown_class_plan_file, "unknown class 'wolf'"),
    ("unknown-class-in-plan-args", r_unknown_class_replace, "unknown class name 'zebra'"),
    ("unknown-class-in-prompts-file", r_unknown_class_prompts_file, "names unknown class 'zebra'"),
    ("unknown-class-in-modifiers-file", r_unknown_class_modifiers_file, "names unknown class 'zebra'"),
    ("label-out-of-range", r_label_out_of_range, "label 7 out of range [0, 3)"),
    ("label-negative", r_label_negative, "label -1 out of range"),
    ("label-not-integer", r_label_not_integer, "'label' must hold integers"),
    ("target-negative", r_target_negative, "target must be a non-negative integer, got -3"),
    ("target-not-integer", r_target_not_integer, "invalid int value: '2.5'"),
    ("count-negative-in-plan", r_count_negative_plan_file, "negative synthetic count -4"),
    ("count-fraction-in-plan-json", r_count_fraction_plan_json, "synthetic count must be an integer, got 2.5"),
    ("count-fraction-in-plan-csv", r_count_fraction_plan_csv, "plan count synthetic must be an integer"),
    ("empty-class-plan-handled", r_empty_class_plan_handled, None),
    ("empty-class-in-pool", r_empty_class_pool, "cannot fill class 'class2': the plan needs 2 images, the pool has 0"),
    ("empty-class-train-handled", r_empty_class_train_handled, None),
    ("empty-class-finetune", r_empty_class_finetune, "class 'class2' has no real training image"),
    ("test-rows-to-train-handled", r_test_rows_to_train, None),
    ("truncated-image", r_truncated_image, "unreadable image"),
    ("not-an-image", r_garbage_image, "unreadable image"),
    ("odd-size-image", r_odd_size_image, "images have 2 different sizes"),
    ("non-rgb-images-handled", r_non_rgb_train_handled, None),
    ("corrupt-pool-image", r_corrupt_pool_image, "pool images the plan uses cannot be used"),
    ("path-escapes-root-dotdot", r_path_escapes_dotdot, "escapes the data root"),
    ("path-absolute", r_path_absolute, "escapes the data root"),
    ("duplicate-paths", r_duplicate_paths, "duplicate path 'a.png'"),
    ("config-key-misspelled", r_config_key_misspelled, "unknown key 'optim.lrr'"),
    ("run-config-key-misspelled", r_run_config_key_misspelled, "unknown key 'trian'"),
    ("wrong-type-float", r_wrong_type_float, "optim.lr: Input should be a valid number"),
    ("wrong-type-override", r_wrong_type_override, "guidance_scale: Input should be a valid number"),
    ("model-path-missing-generate", r_model_path_missing_generate, "model folder not found: /nonexistent/sd-model"),
    ("model-path-missing-finetune", r_model_path_missing_finetune, "checkpoint file not found"),
    ("unknown-model-name", r_unknown_model_name, "unknown model 'resnet999'"),
    ("resume-with-other-config", r_resume_into_other_run, "holds a run with a different config"),
    ("select-more-candidates-than-pool", r_select_more_candidates_than_pool,
     "generate.select.candidates 5: pool 'pool' cannot fill class 'class2': the plan needs 20 images, the pool has 10"),
    ("scorer-checkpoint-other-classes", r_scorer_checkpoint_other_classes,
     "the checkpoint's classes (cat, dog) differ from the plan's (class0, class1, class2)"),
    ("synthetic-loss-weight-zero", r_synthetic_loss_weight_zero,
     "train.synthetic.loss_weight: Input should be greater than 0"),
    ("synthetic-smoothing-one", r_synthetic_smoothing_one, "train.synthetic.label_smoothing: Input should be less than 1"),
]


def _tree_digest(p: Path) -> dict:
    if p.is_file():
        return {".": hashlib.sha256(p.read_bytes()).hexdigest()}
    return {str(f.relative_to(p)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(p.rglob("*"))
            if f.is_file()}


def _assert_resumable(out: Path) -> None:
    """A generation folder after a failure: no final manifest, no temp files, every image whole."""
    assert not (out / "synthetic.parquet").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    pngs = list((out / "images").rglob("*.png")) if (out / "images").exists() else []
    for p in pngs:
        with Image.open(p) as im:
            im.load()
    return pngs


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def results(ctx, tmp_path_factory):
    """Build every row, then run all of them (3 at a time); {id: (row, tmp, completed process)}."""
    rows = {}
    for cid, build, _ in CASES:
        t = tmp_path_factory.mktemp(cid)
        row = build(ctx, t)
        before = {str(k): _tree_digest(Path(k)) for k in row.keep}
        rows[cid] = (row, t, before)

    def run(cid):
        row = rows[cid][0]
        return cid, subprocess.run([str(SYNAUG), *map(str, row.args)], capture_output=True, text=True,
                                   env=_env(), cwd=rows[cid][1], timeout=300)

    with ThreadPoolExecutor(3) as pool:
        done = dict(pool.map(run, rows))
    return {cid: (*rows[cid], done[cid]) for cid in rows}


@pytest.mark.parametrize("cid,expected", [(c, m) for c, _, m in CASES], ids=[c for c, _, _ in CASES])
def test_bad_input_row(results, cid, expected, record_property):
    row, t, before, proc = results[cid]
    record_property("stderr", proc.stderr.strip())
    print(f"\n[{cid}] exit {proc.returncode}: {proc.stderr.strip() or '(no stderr)'}")
    if expected is None:  # handled input: it works, and what it made is right
        assert proc.returncode == 0, proc.stderr[-2000:]
        row.check(t)
        return
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("synaug: error: "), err
    assert expected in lines[0], err
    for p in row.outputs:
        assert not Path(p).exists(), f"partial output left behind: {p}"
    for k, digest in before.items():
        assert _tree_digest(Path(k)) == digest, f"{k} changed"
    if row.check is not None:
        row.check(t)


# ---------------------------------------------------------------------------- disk full
class _FullFile:
    """A writable file that takes half of the first write, then fails like a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _disk_full(monkeypatch, under: Path, after: int, how: str) -> dict:
    """Writes (``how="write"``: Python file writes; ``"rename"``: the final rename of an atomic
    write, which covers Parquet and safetensors writers too) of files under ``under`` succeed
    ``after`` times, then fail with ENOSPC."""
    under = under.resolve()
    seen = {"ok": 0, "failed": 0}

    def inside(p) -> bool:
        try:
            return Path(os.fspath(p)).resolve().is_relative_to(under)
        except TypeError:
            return False

    def budget() -> bool:
        if seen["ok"] < after:
            seen["ok"] += 1
            return True
        seen["failed"] += 1
        return False

    if how == "write":
        real_open = builtins.open

        def fake_open(file, mode="r", *a, **kw):
            f = real_open(file, mode, *a, **kw)
            if any(c in mode for c in "wax+") and inside(file) and not budget():
                return _FullFile(f)
            return f
        monkeypatch.setattr(builtins, "open", fake_open)
    else:
        real_replace = os.replace

        def fake_replace(src, dst, *a, **kw):
            if inside(dst) and not budget():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_replace(src, dst, *a, **kw)
        monkeypatch.setattr(os, "replace", fake_replace)
    return seen


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("synaug: error: "), err
    return lines[0]


def _no_temp(out: Path) -> None:
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_disk_full_plan_leaves_nothing(ctx, tmp_path, monkeypatch, capsys):
    from synaug.cli import main

    out = tmp_path / "plans"
    seen = _disk_full(monkeypatch, out, after=0, how="write")
    rc = main(["plan", "--manifest", str(ctx.good_parquet), "--out", str(out / "plan.json")])
    line = _one_error_line(capsys)
    assert rc == 2 and seen["failed"] == 1
    assert "no space left" in line and "plan.json" in line, line
    assert list(out.iterdir()) == []  # neither plan.json nor its temp file


def test_disk_full_mid_generation_then_resume(ctx, tmp_path, monkeypatch, capsys):
    from synaug.cli import main

    out = tmp_path / "gen"
    args = ["generate", "--plan", str(ctx.plan_json), "--config", str(ctx.pool_yaml), "--out", str(out), "--no-progress"]
    # run.json, generate.yaml, plan.json and 2 images fit; the 3rd image hits a full disk
    seen = _disk_full(monkeypatch, out, after=5, how="write")
    rc = main(args)
    line = _one_error_line(capsys)
    assert rc == 2 and seen["failed"] == 1
    assert "no space left" in line and ".png" in line, line
    assert len(_assert_resumable(out)) == 2  # images made before the disk filled up are whole
    monkeypatch.undo()  # space freed: the same command finishes the job
    assert main(args) == 0
    m = Manifest.read(out / "synthetic.parquet")
    m.validate(verify_files=True, expected_size=(32, 32))
    assert len(m) == 6 and len(list((out / "images").rglob("*.png"))) == 6


def test_disk_full_mid_training_then_resume(ctx, tmp_path, monkeypatch, capsys):
    from synaug.cli import main

    out = tmp_path / "run"
    args = ["train", "-c", str(ctx.train_yaml), "--train-manifest", str(ctx.good_parquet), "--out", str(out),
            "--set", "epochs=2"]
    # config.yaml, best_0000 and epoch_0000 weights commit; the optimizer state file does not
    seen = _disk_full(monkeypatch, out, after=3, how="rename")
    rc = main(args)
    line = _one_error_line(capsys)
    assert rc == 2 and seen["failed"] == 1
    assert "no space left" in line and "epoch_0000.state.safetensors" in line, line
    _no_temp(out)
    assert not (out / "last.json").exists() and not (out / "model.safetensors").exists()
    monkeypatch.undo()
    assert main(args) == 0
    capsys.readouterr()
    hist = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [0, 1]
    _no_temp(out)


def test_disk_full_raw_oserror_is_one_line(monkeypatch, capsys, tmp_path):
    """An ENOSPC outside the atomic writers (e.g. creating a folder) is one line too."""
    from synaug import cli

    def boom(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))
    monkeypatch.setattr(cli, "build_parser", _parser_with(boom))
    assert cli.main(["boom"]) == 2
    line = _one_error_line(capsys)
    assert "No space left on device" in line and str(tmp_path / "x") in line


def _parser_with(fn):
    import argparse

    def build(command=None):
        p = argparse.ArgumentParser(prog="synaug")
        sub = p.add_subparsers()
        sub.add_parser("boom").set_defaults(func=fn)
        return p
    return build
