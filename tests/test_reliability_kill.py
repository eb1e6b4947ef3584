"""Kill anywhere: ``synaug generate`` and ``synaug train`` run as subprocesses, are SIGKILLed at
seeded random points again and again, restarted each time, and must end exactly where an
uninterrupted run ends.

A kill point is drawn from a seeded RNG: a progress mark (images on disk / completed epochs,
distinct marks so every run does some work) plus a random delay (so kills land mid-batch,
mid-epoch, inside checkpoint or image writes, during merge). Counts are printed (``-s``) and
recorded as test properties.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from synaug.generate import GenerateConfig, generate
from synaug.generate.base import plan_items
from synaug.generate.runner import build_prompt_fn
from synaug.generate.tiny import build_tiny_sd, toy_image_manifest
from synaug.manifest import Manifest
from synaug.plan import Cell, Plan
from synaug.train import TrainConfig, train_model
from synaug.train.toydata import make_toy_manifest

SYNAUG = Path(sys.executable).parent / "synaug"
CLASSES = ["cat", "dog", "truck"]
DEADLINE_S = 240  # per scenario; a hang fails instead of blocking CI


# one torch thread, as the CLI subprocesses get (OMP_NUM_THREADS=1 from conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    return env


@dataclass
class KillLog:
    kills: int = 0                    # SIGKILLs delivered to a live process
    runs: int = 0                     # processes started
    resumed_runs: int = 0             # runs that started on top of earlier work
    kill_marks: list = field(default_factory=list)   # progress seen at each kill
    logs: list = field(default_factory=list)         # per run: (progress at start, log file)


def kill_loop(cmd: list, progress: Callable[[], int], marks: list[int], delays: list[float], log_dir: Path,
              log: KillLog) -> subprocess.CompletedProcess:
    """Run ``cmd`` until it exits 0; the i-th run is killed once ``progress() >= marks[i]``
    (and above where that run started) plus ``delays[i]`` seconds."""
    deadline = time.monotonic() + DEADLINE_S
    for i in range(len(marks) + 1):
        start = progress()
        if start > 0:
            log.resumed_runs += 1
        logf = log_dir / f"run{i:02d}.log"
        with open(logf, "wb") as fh:
            proc = subprocess.Popen([str(c) for c in cmd], env=_env(), stdout=fh, stderr=subprocess.STDOUT)
        log.runs += 1
        log.logs.append((start, logf))
        if i < len(marks):
            while proc.poll() is None and time.monotonic() < deadline:
                if progress() >= max(marks[i], start + 1):
                    break
                time.sleep(0.003)
            time.sleep(delays[i])
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                log.kills += 1
                log.kill_marks.append(progress())
        try:
            rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{cmd[:2]} hung; log: {logf.read_text()[-2000:]}")
        if rc == 0:
            return rc
        assert rc == -signal.SIGKILL, f"run {i} failed with {rc}: {logf.read_text()[-3000:]}"
    pytest.fail("still not finished after the last planned kill")


def _report(name: str, log: KillLog, record_property, **extra) -> None:
    record_property(f"{name}_kills", log.kills)
    record_property(f"{name}_runs", log.runs)
    record_property(f"{name}_resumed_runs", log.resumed_runs)
    for k, v in extra.items():
        record_property(f"{name}_{k}", v)
    more = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"\n[kill] {name}: kills={log.kills} runs={log.runs} resumed_runs={log.resumed_runs} "
          f"progress_at_kills={log.kill_marks} {more}")


# ---------------------------------------------------------------------------- generate
def _png_count(out: Path) -> Callable[[], int]:
    return lambda: sum(1 for _ in (out / "images").rglob("*.png")) if (out / "images").is_dir() else 0


def _check_generation(out: Path, plan: Plan, cfg: GenerateConfig, reference: Path) -> int:
    """Every planned image exactly once, every file decodes, manifest complete without duplicates,
    and every file identical to an uninterrupted run's."""
    expected = {it.path: (it.seed, it.prompt) for it in plan_items(plan, build_prompt_fn(plan, cfg), cfg.seed)}
    m = Manifest.read(out / "synthetic.parquet")
    m.validate(verify_files=True, expected_size=(cfg.resolution, cfg.resolution))
    assert m.df["path"].is_unique and len(m) == len(expected) == plan.total_synthetic
    assert dict(zip(m.df["path"], zip(m.df["seed"], m.df["prompt"]))) == expected
    on_disk = sorted(str(p.relative_to(out)) for p in (out / "images").rglob("*.png"))
    assert on_disk == sorted(expected)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not list(out.glob("manifest/*.parquet"))  # shard rows merged and removed
    for rel in expected:
        assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel
    return len(on_disk)


def _gen_scenario(tmp: Path, plan: Plan, cfg_dict: dict, n_kills: int, window: float, seed: int,
                  name: str, record_property) -> None:
    plan.write(tmp / "plan.json")
    (tmp / "gen.yaml").write_text(yaml.safe_dump(cfg_dict))
    cfg = GenerateConfig.model_validate(cfg_dict)
    ref = tmp / "reference"
    generate(plan, cfg, ref, progress=False)
    out = tmp / "out"
    rng = np.random.default_rng(seed)
    N = plan.total_synthetic
    # kill marks leave a third of the work, so a run cannot finish during the random delay
    marks = sorted(rng.choice(np.arange(1, N - N // 3), size=n_kills, replace=False).tolist())
    delays = rng.uniform(0, window, size=n_kills).tolist()
    log = KillLog()
    cmd = [SYNAUG, "generate", "--plan", tmp / "plan.json", "--config", tmp / "gen.yaml", "--out", out]
    (tmp / "logs").mkdir()
    kill_loop(cmd, _png_count(out), marks, delays, tmp / "logs", log)
    n = _check_generation(out, plan, cfg, ref)
    _report(name, log, record_property, images=n, planned=N)
    assert log.kills == n_kills and log.resumed_runs >= n_kills


def test_generate_pool_survives_repeated_sigkill(tmp_path, record_property):
    pool = toy_image_manifest(tmp_path / "pool", CLASSES, 120, seed=3)
    pool.write(tmp_path / "pool.parquet")
    plan = Plan("class", CLASSES, [Cell(i, c, 10, n, attributes={"class": c})
                                   for i, (c, n) in enumerate(zip(CLASSES, (110, 60, 90)))], seed=0)
    cfg = {"backend": "pool", "batch_size": 4, "seed": 7,
           "pool": {"manifest": str(tmp_path / "pool.parquet"), "shift": "synthetic-domain"}}
    _gen_scenario(tmp_path, plan, cfg, n_kills=5, window=0.05, seed=11, name="generate-pool",
                  record_property=record_property)


def test_generate_tiny_diffusers_survives_repeated_sigkill(tmp_path, record_property):
    sd = build_tiny_sd(tmp_path / "tiny-sd")
    plan = Plan("class", CLASSES, [Cell(i, c, 10, n, attributes={"class": c})
                                   for i, (c, n) in enumerate(zip(CLASSES, (12, 8, 10)))], seed=0)
    # batch_invariant: every image is denoised alone, so the bytes do not depend on how a
    # resumed run regroups the remaining images into batches
    cfg = {"backend": "txt2img", "model": str(sd), "steps": 2, "batch_size": 3, "seed": 5,
           "batch_invariant": True}
    _gen_scenario(tmp_path, plan, cfg, n_kills=2, window=0.2, seed=12, name="generate-tiny-sd",
                  record_property=record_property)


# ---------------------------------------------------------------------------- train
EPOCHS = 10


def _train_cfg(cache: Path) -> dict:
    return {"epochs": EPOCHS, "batch_size": 32, "seed": 4, "model": {"name": "resnet32", "width": 4},
            "optim": {"lr": 0.05}, "schedule": {"warmup_epochs": 1, "milestones": [6], "factors": [0.1]},
            "mix": {"mixup": True}, "progress": True, "data": {"cache_dir": str(cache)}}


def _epochs_done(run: Path) -> Callable[[], int]:
    def done() -> int:
        try:
            return json.loads((run / "last.json").read_text())["epoch"] + 1
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return 0
    return done


def test_train_survives_repeated_sigkill(tmp_path, record_property):
    root = tmp_path / "data"
    train = make_toy_manifest(root, [120, 90, 60, 30], size=32, seed=0)
    val = make_toy_manifest(root, [5, 5, 5, 5], size=32, seed=1, split="val")
    m = Manifest.concat([train, val])
    m.write(tmp_path / "train.parquet")
    cfg_d = _train_cfg(tmp_path / "cache")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg_d))
    # uninterrupted reference (same code, same thread count); also gives the epoch time
    ref = train_model(m, None, TrainConfig.model_validate({**cfg_d, "progress": False}), tmp_path / "ref")
    epoch_s = float(np.mean([h["seconds"] for h in ref.history]))

    n_kills = 6
    rng = np.random.default_rng(21)
    marks = sorted(rng.choice(np.arange(1, EPOCHS - 1), size=n_kills, replace=False).tolist())
    delays = rng.uniform(0, 1.2 * epoch_s, size=n_kills).tolist()
    run = tmp_path / "run"
    (tmp_path / "logs").mkdir()
    log = KillLog()
    cmd = [SYNAUG, "train", "-c", tmp_path / "train.yaml", "--train-manifest", tmp_path / "train.parquet",
           "--out", run]
    kill_loop(cmd, _epochs_done(run), marks, delays, tmp_path / "logs", log)

    # every resumed run continued right after the last complete epoch (never restarted, never skipped)
    checked = 0
    for start, logf in log.logs:
        logged = [int(x) for x in re.findall(r"^epoch (\d+)/%d " % EPOCHS, logf.read_text(), re.MULTILINE)]
        if logged:
            assert logged[0] == start + 1, (start, logged, logf.name)
            assert logged == list(range(logged[0], logged[0] + len(logged)))
            checked += start > 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    assert json.loads((run / "summary.json").read_text())["epochs"] == EPOCHS
    assert json.loads((run / "last.json").read_text())["epoch"] == EPOCHS - 1
    # the engine promises bit-identical weights after resumption (fixed seeds, CPU)
    a, b = load_file(str(run / "model.safetensors")), load_file(str(ref.checkpoint))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in history] == [h["loss"] for h in ref.history]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    _report("train", log, record_property, epochs=len(history), resumes_verified_from_logs=checked,
            epoch_seconds=round(epoch_s, 3))
    assert log.kills == n_kills and log.resumed_runs >= n_kills and checked >= 1


def test_train_resume_clears_temp_files_a_kill_left(tmp_path):
    """A kill inside a checkpoint write leaves ``.<name>.<random>.tmp``; the next run removes it."""
    root = tmp_path / "data"
    m = make_toy_manifest(root, [20, 10], size=16, seed=0)
    cfg = TrainConfig.model_validate({**_train_cfg(tmp_path / "cache"), "epochs": 2, "progress": False})

    class Killed(Exception):
        pass

    def stop(row):
        raise Killed

    with pytest.raises(Killed):
        train_model(m, None, cfg, tmp_path / "run", callbacks=[stop])
    stale = [tmp_path / "run" / ".epoch_0001.safetensors.a1b2c3.tmp",
             tmp_path / "run" / ".last.json.x9y8z7.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    (tmp_path / "run" / ".notes.tmp").write_text("not ours")
    res = train_model(m, None, cfg, tmp_path / "run")
    assert [h["epoch"] for h in res.history] == [0, 1]
    left = [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert left == [".notes.tmp"]  # only files of this run are removed
