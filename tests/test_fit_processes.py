"""``synaug fit`` as real processes: SIGKILLed mid-fit and restarted, it ends with the adapters an
uninterrupted fit makes; two processes under torchrun shard the classes and match one process
(as tests/test_reliability_kill.py and tests/test_generate_resume.py do for generation)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from synaug.generate.fit import FitConfig, fit
from synaug.generate.fit import checkpoint as ckpt
from synaug.generate.tiny import build_tiny_sd

from test_fit import cifar_subset

pytestmark = pytest.mark.usefixtures("one_thread")
SYNAUG = Path(sys.executable).parent / "synaug"
DEADLINE_S = 1200  # per test; generous: the 2 shared cores may be busy; a hang still fails


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("fitproc")
    sd = build_tiny_sd(d / "tiny-sd", seed=0)
    real = cifar_subset({"cat": 3, "dog": 2, "truck": 2})
    real.write(d / "real.parquet")
    return d, sd, real


def _write_cfg(d: Path, sd: Path, **kw) -> tuple[Path, FitConfig]:
    data = {"model": str(sd), "steps": 12, "lr": 1e-2, "save_every": 2, **kw}
    f = d / f"fit-{len(list(d.glob('fit-*.yaml')))}.yaml"
    f.write_text("".join(f"{k}: {v}\n" for k, v in data.items()))
    return f, FitConfig.model_validate(data)


def _steps_done(out: Path):
    """Optimizer steps finished and saved so far, over every unit of ``out``."""
    def done() -> int:
        n = 0
        for u in (out / "units").glob("*") if (out / "units").is_dir() else []:
            if (u / "adapter.json").is_file():
                n += json.loads((u / "adapter.json").read_text())["steps"]
            else:
                meta = ckpt.read_meta(u / ckpt.CHECKPOINT)
                n += meta["step"] if meta else 0
        return n
    return done


def _same_adapters(a: Path, b: Path) -> int:
    ia, ib = (json.loads((p / "adapters.json").read_text()) for p in (a, b))
    assert ia["classes"] == ib["classes"] and ia["units"] == ib["units"]
    files = sorted(p.relative_to(a) for p in (a / "units").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in (b / "units").rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    return len(files)


def test_sigkill_mid_fit_then_resume_gives_the_uninterrupted_adapters(setup, tmp_path):
    d, sd, real = setup
    cfg_file, cfg = _write_cfg(tmp_path, sd)
    ref = tmp_path / "ref"
    fit(real, cfg, ref, classes=["cat", "dog"], progress=False)  # same code and thread count, uninterrupted
    out = tmp_path / "out"
    cmd = [SYNAUG, "fit", "-c", cfg_file, "-m", d / "real.parquet", "--classes", "cat", "dog", "--out", out,
           "--no-progress"]
    progress = _steps_done(out)
    rng = np.random.default_rng(5)
    marks = [3, 13]        # inside the first unit, then inside the second (24 steps in all)
    kills, deadline = 0, time.monotonic() + DEADLINE_S
    for i in range(len(marks) + 1):
        start = progress()
        proc = subprocess.Popen([str(c) for c in cmd], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if i < len(marks):
            while proc.poll() is None and time.monotonic() < deadline and progress() < max(marks[i], start + 1):
                time.sleep(0.005)
            time.sleep(float(rng.uniform(0, 0.3)))  # lands mid-step, or inside a checkpoint write
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
        log = proc.stdout.read().decode()
        if i < len(marks):
            assert rc in (0, -signal.SIGKILL), log[-3000:]
        else:
            assert rc == 0, log[-3000:]
    assert kills == len(marks)
    assert _same_adapters(ref, out) >= 8  # weights, records, image manifests, losses of both units
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(ckpt.CHECKPOINT))


def test_two_processes_shard_the_classes_and_match_one_process(setup, tmp_path):
    d, sd, real = setup
    cfg_file, cfg = _write_cfg(tmp_path, sd, steps=3)
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "synaug.cli", "fit", "-c", str(cfg_file), "-m", str(d / "real.parquet"), "--classes", "cat", "dog",
           "truck", "--out", str(out)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=DEADLINE_S)
    assert r.returncode == 0, r.stderr[-3000:]
    # rank 0 fitted cat and truck (units 0 and 2), rank 1 dog
    assert "fit 003_cat (1/2) [rank 0/2]" in r.stderr and "fit 009_truck (2/2) [rank 0/2]" in r.stderr
    assert "fit 005_dog (1/1) [rank 1/2]" in r.stderr
    one = tmp_path / "one"
    fit(real, cfg, one, classes=["cat", "dog", "truck"], progress=False)
    assert _same_adapters(one, out) >= 12
