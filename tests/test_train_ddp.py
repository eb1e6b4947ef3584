"""Data-parallel training with torchrun: 2 CPU processes (gloo) finish with identical weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from synaug.manifest import Manifest
from synaug.train.toydata import make_toy_manifest


def test_two_process_ddp_run_completes_with_matching_weights(tmp_path):
    tr = make_toy_manifest(tmp_path / "data", [24, 12, 8], size=16, seed=0)
    va = make_toy_manifest(tmp_path / "data", [4, 4, 4], size=16, seed=1, split="val")
    Manifest.concat([tr, va]).write(tmp_path / "m.parquet")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SYNAUG_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "synaug.cli", "train", "--train-manifest", str(tmp_path / "m.parquet"), "--out", str(out),
           "--set", "epochs=2", "--set", "batch_size=16", "--set", "model.width=4",
           "--set", "schedule.warmup_epochs=0", "--set", "progress=false", "--set", "device=cpu"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["ranks_in_sync"] is True
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 2
    # global batches of 16 (16, 16, 12) are split in halves over the ranks: all 44 images seen
    assert hist[0]["images"] == 44
    assert (out / "model.safetensors").is_file() and summary["best_epoch"] is not None
