"""The CPU-contention knob (synaug.threads): the thread count and OpenMP wait policy are applied,
before torch is imported, from the CLI flag or the environment. (Speed is measured by
benchmarks/bench_contention.py, not here.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synaug.errors import SynaugError
from synaug.threads import configure


def test_configure_sets_the_environment_openmp_reads():
    env = {}
    assert configure(None, None, env)["omp_wait_policy"] == "PASSIVE"      # the default
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}                          # thread count left to torch
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    configure("auto", "auto", env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"                              # the user's own setting wins
    env = {"SYNAUG_THREADS": "3", "SYNAUG_OMP_WAIT": "active"}
    out = configure(None, None, env)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3" and env["OMP_WAIT_POLICY"] == "ACTIVE"
    assert out["threads"] == 3
    env = {"SYNAUG_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    configure("1", "unset", env)                                           # flags beat the environment
    assert env["OMP_NUM_THREADS"] == "1" and "OMP_WAIT_POLICY" not in env
    for bad in ("0", "two", "-1"):
        with pytest.raises(SynaugError, match="thread count"):
            configure(bad, None, {})
    with pytest.raises(SynaugError, match="wait policy 'spin'"):
        configure(None, "spin", {})


@pytest.fixture(scope="module")
def tiny_train(tmp_path_factory):
    from synaug.train.toydata import make_toy_manifest

    d = tmp_path_factory.mktemp("threads")
    make_toy_manifest(d / "img", [6, 6], size=16, seed=0).write(d / "train.parquet")
    (d / "train.yaml").write_text(yaml.safe_dump({"epochs": 1, "batch_size": 12, "model": {"width": 2},
                                                  "progress": False, "data": {"cache_dir": str(d / "cache")}}))
    return d


def _train(d: Path, out: str, *flags, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "SYNAUG_THREADS", "SYNAUG_OMP_WAIT")}
    env.update(env_extra or {})
    exe = Path(sys.executable).parent / "synaug"
    r = subprocess.run([str(exe), *flags, "train", "-c", str(d / "train.yaml"), "--train-manifest",
                        str(d / "train.parquet"), "--out", str(d / out)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((d / out / "summary.json").read_text())["cpu"]


def test_cli_flags_are_applied_before_torch_starts(tiny_train):
    cpu = _train(tiny_train, "flags", "--threads", "1", "--omp-wait", "active")
    assert cpu == {"threads": 1, "omp_wait_policy": "ACTIVE", "configured_before_torch": True}


def test_environment_knob_and_default(tiny_train):
    cpu = _train(tiny_train, "env", env_extra={"SYNAUG_THREADS": "1", "SYNAUG_OMP_WAIT": "passive"})
    assert cpu == {"threads": 1, "omp_wait_policy": "PASSIVE", "configured_before_torch": True}
    cpu = _train(tiny_train, "default")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    torch_default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                   env=env, capture_output=True, text=True).stdout.strip()
    assert cpu["omp_wait_policy"] == "PASSIVE" and cpu["threads"] == int(torch_default)  # torch's own choice


def test_bad_knob_is_a_one_line_error(tiny_train):
    exe = Path(sys.executable).parent / "synaug"
    r = subprocess.run([str(exe), "--threads", "zero", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--threads" in r.stderr
