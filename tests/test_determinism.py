"""Determinism: the same config and seed give byte-identical plans, manifests and generated files,
and identical training metrics and weights - across separate processes.

Each pair of runs is two subprocesses with *different* ``PYTHONHASHSEED`` values (so nothing may
depend on set/dict hash order) and ``OMP_NUM_THREADS=1``. What the engine needs for byte
identity: the same thread count and batch size for the diffusers backend (``batch_invariant``
removes the batch-size condition, see test_generate_diffusers); nothing for plans, manifests or
the pool backend; CPU and fixed seeds for training.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from synaug.data import long_tail_counts
from synaug.manifest import Manifest
from synaug.plan import Cell, Plan

SYNAUG = Path(sys.executable).parent / "synaug"
CLASSES = ["cat", "dog", "truck"]


def _env(hashseed: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED=str(hashseed))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _twice(make_args, cwd: Path | None = None) -> None:
    """Run ``synaug <make_args(i)>`` for i = 0, 1 concurrently, with different hash seeds."""
    procs = [subprocess.Popen([str(SYNAUG), *map(str, make_args(i))], env=_env(1000 + 17 * i), cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_tree(a: Path, b: Path, min_files: int) -> dict:
    da, db = _digests(a), _digests(b)
    assert len(da) >= min_files and da.keys() == db.keys()
    diff = [k for k in da if da[k] != db[k]]
    assert not diff, f"differ: {diff[:5]}"
    return da


# ---------------------------------------------------------------------------- plans + manifests
@pytest.mark.parametrize("mode_args", [["--mode", "class"], ["--mode", "replace-ratio", "--ratio", "0.3", "--seed", "4"],
                                       ["--mode", "replace-class", "--k", "3", "--seed", "9"]],
                         ids=["class", "replace-ratio", "replace-class"])
def test_plan_is_byte_identical(tmp_path, mode_args):
    # the shared real CIFAR-10, long-tailed by a seeded draw: plan + dropped rows must repeat exactly
    _twice(lambda i: ["plan", "--dataset", "shared-cifar10", "--imbalance-factor", "100", "--lt-seed", "3",
                      *mode_args, "--out", tmp_path / f"plan{i}.json"])
    a, b = (tmp_path / "plan0.json").read_bytes(), (tmp_path / "plan1.json").read_bytes()
    assert a == b
    plan = Plan.read(tmp_path / "plan0.json")
    lt_total = sum(long_tail_counts(10, 5000, 100))
    if mode_args[1] == "class":
        assert plan.total_real == lt_total and plan.total_real + plan.total_synthetic == 50000
    else:  # replacement keeps the totals; which real rows are dropped is a seeded choice that must repeat
        assert plan.total_real + plan.total_synthetic == lt_total and plan.drop_real


PREPARE = """
import sys
from synaug.prepare import DataConfig, prepare
p = prepare(DataConfig(dataset="shared-cifar10", imbalance_factor=50, lt_seed=1, val_per_class=5,
                       test_per_class=100, split_seed=2))
p.real.write(sys.argv[1] + "/real.parquet"); p.pool.write(sys.argv[1] + "/heldout.parquet")
"""


def test_prepared_manifests_are_byte_identical(tmp_path):
    procs = []
    for i in (0, 1):
        (tmp_path / str(i)).mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", PREPARE, str(tmp_path / str(i))], env=_env(7 + i),
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
    _same_tree(tmp_path / "0", tmp_path / "1", min_files=2)
    real = Manifest.read(tmp_path / "0" / "real.parquet")
    # val comes from the long-tail draw's held-out images; the head class keeps all 5,000 and has none
    # held out, so its 5 val images are carved from its training images instead
    assert real.class_counts("val").tolist() == [5] * 10 and real.class_counts("test").tolist() == [100] * 10
    assert real.class_counts("train")[0] == 5000 - 5


# ---------------------------------------------------------------------------- generation
def _plan(tmp: Path, counts) -> Path:
    Plan("class", CLASSES, [Cell(i, c, 4, n, attributes={"class": c}) for i, (c, n) in enumerate(zip(CLASSES, counts))],
         seed=0).write(tmp / "plan.json")
    return tmp / "plan.json"


def test_pool_generation_is_byte_identical(tmp_path):
    from synaug.generate.tiny import toy_image_manifest

    toy_image_manifest(tmp_path / "pool", CLASSES, 20, seed=1, ext="jpg").write(tmp_path / "pool.parquet")
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump({"backend": "pool", "seed": 3, "pool": {
        "manifest": str(tmp_path / "pool.parquet"), "shift": "synthetic-domain"}}))
    plan = _plan(tmp_path, (15, 6, 11))
    _twice(lambda i: ["generate", "--plan", plan, "--config", tmp_path / "gen.yaml", "--out", tmp_path / f"out{i}",
                      "--no-progress"])
    files = _same_tree(tmp_path / "out0", tmp_path / "out1", min_files=32 + 4)
    assert "synthetic.parquet" in files and len([k for k in files if k.endswith(".png")]) == 32


def test_tiny_diffusers_generation_is_byte_identical(tmp_path):
    from synaug.generate.tiny import build_tiny_sd

    sd = build_tiny_sd(tmp_path / "tiny-sd")
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump({"backend": "txt2img", "model": str(sd), "steps": 2,
                                                       "batch_size": 3, "seed": 11, "device": "cpu"}))
    plan = _plan(tmp_path, (4, 2, 3))
    _twice(lambda i: ["generate", "--plan", plan, "--config", tmp_path / "gen.yaml", "--out", tmp_path / f"out{i}",
                      "--no-progress"])
    files = _same_tree(tmp_path / "out0", tmp_path / "out1", min_files=9 + 4)
    assert len([k for k in files if k.endswith(".png")]) == 9
    m = Manifest.read(tmp_path / "out0" / "synthetic.parquet")
    assert m.df["prompt"].str.startswith("a photo of ").all() and m.df["seed"].is_unique


# ---------------------------------------------------------------------------- training
def test_training_metrics_and_weights_are_identical(tmp_path):
    from synaug.train.toydata import make_toy_manifest

    tr = make_toy_manifest(tmp_path / "img", [30, 15, 8], size=16, seed=0)
    va = make_toy_manifest(tmp_path / "img", [3, 3, 3], size=16, seed=1, split="val")
    Manifest.concat([tr, va]).write(tmp_path / "train.parquet")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({
        "epochs": 2, "batch_size": 16, "seed": 5, "model": {"width": 4}, "progress": False,
        "schedule": {"warmup_epochs": 1, "milestones": [], "factors": []}, "mix": {"mixup": True, "cutmix": True},
        "algorithm": {"name": "resample"}, "data": {"cache_dir": str(tmp_path / "cache")}}))
    _twice(lambda i: ["train", "-c", tmp_path / "train.yaml", "--train-manifest", tmp_path / "train.parquet",
                      "--out", tmp_path / f"run{i}"])
    h0, h1 = (json.loads((tmp_path / f"run{i}" / "history.json").read_text()) for i in (0, 1))
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in h]
    assert len(h0) == 2 and strip(h0) == strip(h1)
    assert all("val_top1" in r for r in h0)
    w0, w1 = (load_file(str(tmp_path / f"run{i}" / "model.safetensors")) for i in (0, 1))
    import torch

    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    s0, s1 = (json.loads((tmp_path / f"run{i}" / "summary.json").read_text()) for i in (0, 1))
    assert s0["best_epoch"] == s1["best_epoch"]
