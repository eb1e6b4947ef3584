"""Memory under load: a 100,000-row manifest and pool generation of 5,000 images.

    .venv/bin/python benchmarks/bench_load.py [--rows 10000 100000] [--images 1000 5000] [--out DIR]

Every measurement runs in a fresh child process, so its peak RSS (``ru_maxrss``) belongs to that
phase alone; "baseline" is a child that only imports the same modules. Two sizes per phase
give the growth per row / per image: bounded memory means the growth per image is a few
hundred bytes of bookkeeping (rows, work items), not the images themselves.

Phases:

* ``manifest N``: build N synthetic-style rows -> ``Manifest`` (validates) -> write Parquet ->
  read back (validates) -> ``validate()`` again -> write/read CSV;
* ``generate N``: the pool backend makes N images (CIFAR-10-LT IF 100 from the shared real
  CIFAR-10; its held-out real images are the pool, shifted by the synthetic-domain filter)
  through the real runner (PNG files, shard rows, merge), then a second run on the finished
  folder (the resume path: reads every row and decodes every image again).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _imports() -> None:
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from PIL import Image  # noqa: F401

    import synaug.generate.runner  # noqa: F401
    from synaug.data import load_dataset  # noqa: F401
    from synaug.manifest import Manifest  # noqa: F401


# ---------------------------------------------------------------------------- child phases
def phase_baseline(work: Path, n: int) -> dict:
    _imports()
    return {}


def phase_manifest(work: Path, n: int) -> dict:
    _imports()
    from synaug.manifest import Manifest

    steps = {}
    t = time.perf_counter()
    classes = [f"class_{i:03d}" for i in range(100)]
    records = ({"path": f"images/{i % 100}/{i:07d}.png", "label": i % 100, "split": "train",
                "source": "synthetic", "prompt": f"a photo of a small {classes[i % 100]}",
                "seed": (i * 2654435761) % 2**62, "generator": "txt2img:sd-2-1-base"} for i in range(n))
    m = Manifest.from_records(records, classes, {"synthetic": work})
    steps["build+validate"] = (time.perf_counter() - t, rss_mb())
    t = time.perf_counter()
    m.write(work / "m.parquet")
    steps["write parquet"] = (time.perf_counter() - t, rss_mb())
    del m
    t = time.perf_counter()
    m = Manifest.read(work / "m.parquet")
    steps["read parquet"] = (time.perf_counter() - t, rss_mb())
    t = time.perf_counter()
    m.validate()
    steps["validate"] = (time.perf_counter() - t, rss_mb())
    t = time.perf_counter()
    m.write(work / "m.csv")
    m2 = Manifest.read(work / "m.csv")
    assert len(m2) == n
    steps["write+read csv"] = (time.perf_counter() - t, rss_mb())
    return {"steps": steps, "parquet_mb": (work / "m.parquet").stat().st_size / 2**20}


def phase_generate(work: Path, n: int) -> dict:
    _imports()
    import numpy as np

    from synaug.data import load_dataset, long_tail_counts, make_long_tail
    from synaug.generate import GenerateConfig, generate
    from synaug.plan import make_plan

    real = load_dataset("shared-cifar10")
    lt, held = make_long_tail(real, 100, seed=0)
    held.write(work / "heldout.parquet")
    counts = np.asarray(long_tail_counts(10, 5000, 100))
    target = next(t for t in range(1, 5001) if np.maximum(t - counts, 0).sum() >= n)  # smallest target giving >= n
    plan = make_plan(lt, "class", target=target)
    cfg = GenerateConfig(backend="pool", seed=0, batch_size=32,
                         pool={"manifest": str(work / "heldout.parquet"), "shift": "synthetic-domain"})
    del real
    steps = {"setup": (0.0, rss_mb())}
    t = time.perf_counter()
    m = generate(plan, cfg, work / "out", progress=False)
    steps["generate"] = (time.perf_counter() - t, rss_mb())
    made = len(m)
    del m
    t = time.perf_counter()
    again = generate(plan, cfg, work / "out", progress=False)  # resume path: nothing to do, checks everything
    assert len(again) == made
    steps["rerun (verify all)"] = (time.perf_counter() - t, rss_mb())
    return {"steps": steps, "images": made, "target_per_class": target}


PHASES = {"baseline": phase_baseline, "manifest": phase_manifest, "generate": phase_generate}


def child(phase: str, n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-load-") as d:
        res = PHASES[phase](Path(d), n)
    res.update(phase=phase, n=n, peak_mb=peak_mb())
    print(json.dumps(res))


# ---------------------------------------------------------------------------- parent
def run_child(phase: str, n: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run([sys.executable, __file__, "--child", phase, str(n)], capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        raise SystemExit(f"phase {phase} {n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs=2, default=[10_000, 100_000], metavar=("SMALL", "LARGE"))
    ap.add_argument("--images", type=int, nargs=2, default=[1_000, 5_000], metavar=("SMALL", "LARGE"))
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))

    results = [run_child("baseline", 0)]
    base = results[0]["peak_mb"]
    print(f"baseline (imports only): peak RSS {base:.0f} MB")
    for phase, sizes, unit in (("manifest", args.rows, "row"), ("generate", args.images, "image")):
        rs = [run_child(phase, n) for n in sizes]
        results += rs
        for r in rs:
            extra = (f", parquet {r['parquet_mb']:.1f} MB" if phase == "manifest"
                     else f", {r['images']} images (per-class target {r['target_per_class']})")
            print(f"\n{phase} n={r['n']}: peak RSS {r['peak_mb']:.0f} MB "
                  f"(+{r['peak_mb'] - base:.0f} MB over baseline){extra}")
            for step, (secs, rss) in r["steps"].items():
                print(f"  {step:<20} {secs:7.2f} s   RSS after {rss:6.0f} MB")
        n0, n1 = rs[0].get("images", rs[0]["n"]), rs[1].get("images", rs[1]["n"])
        growth = (rs[1]["peak_mb"] - rs[0]["peak_mb"]) * 2**20 / max(n1 - n0, 1)
        print(f"  => peak RSS growth {growth:.0f} bytes per {unit} between n={n0} and n={n1}")
        results.append({"phase": f"{phase}-growth", "bytes_per_" + unit: growth})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
