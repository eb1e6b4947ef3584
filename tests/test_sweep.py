"""``synaug sweep``: configs x seeds as concurrent processes on assigned devices, gathered into one
comparison; the scheduler with stand-in commands; bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synaug.errors import SynaugError
from synaug.sweep import device_env, plan_jobs, schedule

TINY = {
    "data": {"dataset": "shared-cifar10", "img_max": 20, "imbalance_factor": 10, "val_per_class": 2,
             "test_per_class": 5},
    "plan": {"mode": "class"},
    "generate": {"backend": "pool", "pool": {"manifest": "heldout"}},
    "train": {"epochs": 1, "batch_size": 64, "model": {"name": "resnet32", "width": 4},
              "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}, "progress": False},
    "finetune": None,
}


def _synaug(*args, env=None):
    exe = Path(sys.executable).parent / "synaug"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def test_sweep_runs_two_tiny_configs_concurrently_and_gathers_them(tmp_path):
    (tmp_path / "ce.yaml").write_text(yaml.safe_dump({**TINY, "name": "ce", "plan": None, "generate": None}))
    (tmp_path / "synaug.yaml").write_text(yaml.safe_dump({**TINY, "name": "synaug"}))
    r = _synaug("sweep", tmp_path / "ce.yaml", tmp_path / "synaug.yaml", "--seeds", "3", "--per-device", "2",
                "--devices", "cpu", "--set", "train.batch_size=32", "--out", tmp_path / "sw")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    rec = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    runs = {j["name"]: j for j in rec["runs"]}
    assert set(runs) == {"ce-s3", "synaug-s3"} and rec["finished"] == ["ce-s3", "synaug-s3"]
    a, b = runs["ce-s3"], runs["synaug-s3"]
    assert a["started"] < b["ended"] and b["started"] < a["ended"], "the two runs did not overlap"
    for name in runs:
        cfg = yaml.safe_load((tmp_path / "sw" / name / "config.yaml").read_text())
        assert cfg["name"] == name and cfg["seed"] == 3 and cfg["train"]["seed"] == 3
        assert cfg["train"]["batch_size"] == 32                      # --set reaches every run
        cpu = json.loads((tmp_path / "sw" / name / "train" / "summary.json").read_text())["cpu"]
        assert cpu["threads"] == 1                                   # 2 runs share the 2 cores
    md = (tmp_path / "sw" / "comparison.md").read_text()
    assert "| ce-s3 | trained |" in md and "| synaug-s3 | trained |" in md
    assert "pool:heldout-real" in md and "none (real data only)" in md  # the generator column
    assert (tmp_path / "sw" / "logs" / "ce-s3.log").is_file()


STANDIN = """
import json, os, sys, time
t0 = time.time()
time.sleep(0.6)
json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": os.environ.get("SYNAUG_THREADS"),
           "start": t0, "end": time.time()}, open(sys.argv[1], "w"))
sys.exit(3 if "bad" in sys.argv[1] else 0)
"""


def test_scheduler_assigns_devices_and_limits_concurrency(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    jobs = plan_jobs(["x/a.yaml", "y/a.yaml", "bad.yaml"], [0, 1])
    assert [j.name for j in jobs] == ["a-s0", "a-s1", "a-2-s0", "a-2-s1", "bad-s0", "bad-s1"]
    assert jobs[1].overrides[-2:] == ["seed=1", "name=a-s1"]
    cmd = lambda job, out: [sys.executable, "-c", STANDIN, str(out / f"{job.name}.json")]  # noqa: E731
    schedule(jobs, tmp_path, ["cuda:0", "cuda:1"], per_device=2, command=cmd, poll_s=0.05, log=lambda m: None)
    rec = {j.name: json.loads((tmp_path / f"{j.name}.json").read_text()) for j in jobs}
    assert {j.name: j.returncode for j in jobs} == {"a-s0": 0, "a-s1": 0, "a-2-s0": 0, "a-2-s1": 0,
                                                    "bad-s0": 3, "bad-s1": 3}  # a failure stops nothing
    for j in jobs:
        assert rec[j.name]["cuda"] == j.device[-1]                  # the run sees only its GPU
    assert sorted(j.device for j in jobs[:4]) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    events = sorted([(r["start"], 1) for r in rec.values()] + [(r["end"], -1) for r in rec.values()])
    live, peak = 0, 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    assert peak == 4                                                # 2 devices x 2 at a time
    assert all((tmp_path / "logs" / f"{j.name}.log").is_file() for j in jobs)


def test_device_env():
    env = device_env("cuda:1", 0, {"CUDA_VISIBLE_DEVICES": "4,6", "RANK": "3"})
    assert env["CUDA_VISIBLE_DEVICES"] == "6" and "RANK" not in env
    env = device_env("cpu", 2, {})
    assert env["CUDA_VISIBLE_DEVICES"] == "" and int(env["SYNAUG_THREADS"]) >= 1
    assert device_env("cpu", 2, {"SYNAUG_THREADS": "5"})["SYNAUG_THREADS"] == "5"


def test_bad_sweeps_fail_with_one_line_before_starting(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**TINY, "trian": {}}))
    r = _synaug("sweep", tmp_path / "bad.yaml", "--seeds", "0", "1", "--out", tmp_path / "o")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown key 'trian'" in r.stderr
    assert not (tmp_path / "o").exists()
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(TINY))
    r = _synaug("sweep", tmp_path / "ok.yaml", "--devices", "tpu", "--out", tmp_path / "o")
    assert r.returncode == 2 and "unknown device" in r.stderr and not (tmp_path / "o").exists()
    with pytest.raises(SynaugError, match="repeated seeds"):
        plan_jobs(["a.yaml"], [1, 1])
