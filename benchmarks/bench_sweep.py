"""Several small runs on one device: ``synaug sweep`` with ``--per-device 1`` (one run after
another) vs ``--per-device K`` (K at once), ONE run, wall-time ratio printed.

The runs are ``synaug run`` on generated CIFAR-size PNGs (``--images`` train rows of 10 classes,
100 test rows; no plan / generation / fine-tuning: training + evaluation only), ResNet-32,
``--epochs`` epochs, ``--seeds`` seeds. The sweep folder is deleted between the two settings so
both start cold (the decoded-image cache is shared and warmed first).

    .venv/bin/python benchmarks/bench_sweep.py [--device cuda] [--seeds 4] [--per-device 4]
        [--images 5000] [--epochs 3]

On the 2-core CPU the concurrent setting cannot win much (the cores are the limit; each run gets
cores / K threads); on a GPU one ResNet-32 run leaves most of the device idle.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--per-device", type=int, default=4)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    import yaml

    from synaug.manifest import Manifest
    from synaug.train.toydata import make_toy_manifest

    tmp = Path(tempfile.mkdtemp(prefix="synaug-benchsweep-"))
    tr = make_toy_manifest(tmp / "img", [args.images // 10] * 10, size=32, seed=0)
    te = make_toy_manifest(tmp / "img", [10] * 10, size=32, seed=1, split="test")
    Manifest.concat([tr, te]).write(tmp / "data.parquet")
    (tmp / "small.yaml").write_text(yaml.safe_dump({
        "name": "small", "data": {"dataset": None, "manifest": str(tmp / "data.parquet")}, "plan": None,
        "generate": None, "finetune": None, "eval": {"device": "auto"},
        "train": {"epochs": args.epochs, "batch_size": 128, "progress": False,
                  "data": {"cache_dir": str(tmp / "cache")},
                  "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}}}))
    exe = [sys.executable, "-m", "synaug.cli", "sweep", str(tmp / "small.yaml"), "--devices", args.device]
    seeds = [str(s) for s in range(args.seeds)]
    # warm the decode cache (and the page cache) with one short run
    subprocess.run([*exe, "--seeds", "99", "--set", "train.epochs=1", "--out", str(tmp / "warm")], check=True,
                   capture_output=True)
    walls = {}
    for k in (1, args.per_device):
        out = tmp / f"sweep-{k}"
        t0 = time.perf_counter()
        r = subprocess.run([*exe, "--seeds", *seeds, "--per-device", str(k), "--out", str(out)],
                           capture_output=True, text=True)
        walls[k] = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(f"sweep failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        rec = json.loads((out / "sweep.json").read_text())
        per_run = [j["ended"] - j["started"] for j in rec["runs"]]
        ips = [json.loads((out / j["name"] / "train" / "history.json").read_text())[-1]["img_per_s"] for j in rec["runs"]]
        print(f"--per-device {k}: {len(per_run)} runs in {walls[k]:.1f} s wall (per run {min(per_run):.1f}-"
              f"{max(per_run):.1f} s; last-epoch img/s per run {min(ips):.0f}-{max(ips):.0f}, "
              f"sum {sum(ips):.0f} when concurrent)" if k > 1 else
              f"--per-device 1: {len(per_run)} runs in {walls[k]:.1f} s wall (per run {min(per_run):.1f}-"
              f"{max(per_run):.1f} s; last-epoch img/s per run {min(ips):.0f}-{max(ips):.0f})", flush=True)
        shutil.rmtree(out)
    print(f"\n{args.seeds} runs on {args.device}: --per-device {args.per_device} / --per-device 1 wall time "
          f"{walls[args.per_device] / walls[1]:.2f} (throughput x{walls[1] / walls[args.per_device]:.2f})")


if __name__ == "__main__":
    main()
