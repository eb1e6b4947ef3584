"""CPU contention: ``synaug train`` alone and beside one competing CPU-bound 2-thread process,
ONE run, ratios printed.

Each measurement is a fresh ``synaug train`` process (ResNet-32, batch 128, ``--images`` CIFAR-10
images, ``--epochs`` epochs; img/s = mean of the epochs after the first, so start-up, decoding
and the first epoch's lazy initialisation are excluded). Settings (how ``synaug`` is started):

* ``before``   ``--omp-wait unset``: torch's defaults (one thread per core, OpenMP's own
               spin-then-sleep wait) - what ``synaug train`` did before the knob existed;
* ``synaug``   no flag: synaug's default (``--omp-wait auto`` = passive wait, one thread per core);
* ``threads1`` ``--threads 1``;
* ``passive`` / ``active`` / ``spin10k`` / ``spin1k`` (optional): ``--omp-wait passive|active``,
               and OpenMP's default with ``GOMP_SPINCOUNT=10000`` / ``1000`` (spin briefly, then sleep).

Competitors (``--competitor``): ``numpy`` (default) - one process, two Python threads each
multiplying 200x200 matrices in a loop (single-threaded BLAS; the GIL is released, so two cores
are busy); ``torch`` - one process training a ResNet-32 on random tensors with torch's default
two OpenMP threads (another training run on the same machine).

Alone and contended runs of all settings are interleaved, ``--repeats`` times; the table shows
medians, and the ratio contended / alone per setting (fair share: 50 % on 2 cores; target
>= 40 %), plus synaug / before when alone (what the knob costs without contention).

    .venv/bin/python benchmarks/bench_contention.py [--images 2560] [--epochs 3] [--repeats 2]
        [--settings before synaug threads1] [--competitor numpy]

Uses the shared CIFAR-10 JPEGs when available, else generated PNGs. Run it on an otherwise idle
machine: other load is contention too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# setting -> (synaug flags, extra environment)
SETTINGS = {"before": (["--omp-wait", "unset"], {}), "synaug": ([], {}), "threads1": (["--threads", "1"], {}),
            "passive": (["--omp-wait", "passive"], {}), "active": (["--omp-wait", "active"], {}),
            "spin10k": (["--omp-wait", "unset"], {"GOMP_SPINCOUNT": "10000"}),
            "spin1k": (["--omp-wait", "unset"], {"GOMP_SPINCOUNT": "1000"})}

NUMPY_COMPETITOR = """
import sys, threading, time
import numpy as np
def work():
    a = np.random.rand(200, 200)
    while True:
        a = (a @ a) * 1e-3 + 0.5
for _ in range(2):
    threading.Thread(target=work, daemon=True).start()
time.sleep(1e6)
"""

TORCH_COMPETITOR = """
import torch, torch.nn.functional as F
from synaug.models import create_model
torch.set_num_threads(2)
m = create_model("resnet32", 10).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.01)
x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,))
while True:
    loss = F.cross_entropy(m(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
"""


def _data(tmp: Path, n: int, epochs: int) -> tuple[Path, Path]:
    import numpy as np
    import yaml

    try:
        from synaug.data import load_dataset

        m = load_dataset("shared-cifar10")
        m = m.select((m.df["split"] == "train").to_numpy())
        keep = np.zeros(len(m), bool)
        keep[np.random.default_rng(0).choice(len(m), n, replace=False)] = True
        m = m.select(keep)
    except Exception as e:
        print(f"(shared CIFAR-10 unavailable: {e}; using generated PNGs)")
        from synaug.train.toydata import make_toy_manifest

        m = make_toy_manifest(tmp / "img", [n // 10] * 10, size=32, seed=0)
    m.write(tmp / "train.parquet")
    (tmp / "train.yaml").write_text(yaml.safe_dump({
        "epochs": epochs, "batch_size": 128, "progress": False,
        "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []},
        "data": {"cache_dir": str(tmp / "cache")}}))
    return tmp / "train.parquet", tmp / "train.yaml"


def _env() -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "SYNAUG_THREADS",
              "SYNAUG_OMP_WAIT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _train(setting: str, manifest: Path, cfg: Path, out: Path) -> tuple[float, dict]:
    exe = Path(sys.executable).parent / "synaug"
    flags, extra = SETTINGS[setting]
    cmd = [str(exe), *flags, "train", "-c", str(cfg), "--train-manifest", str(manifest),
           "--out", str(out), "--no-resume"]
    r = subprocess.run(cmd, env={**_env(), **extra}, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    hist = json.loads((out / "history.json").read_text())
    cpu = json.loads((out / "summary.json").read_text()).get("cpu", {})
    rates = [h["img_per_s"] for h in hist[1:]] or [hist[-1]["img_per_s"]]
    return statistics.mean(rates), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2560)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--settings", nargs="+", default=["before", "synaug", "threads1"], choices=list(SETTINGS))
    ap.add_argument("--competitor", choices=["numpy", "torch"], default="numpy")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="synaug-contention-"))
    manifest, cfg = _data(tmp, args.images, args.epochs)
    _train("synaug", manifest, cfg.parent / "train.yaml", tmp / "warm")  # decode cache, page cache
    print(f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}; {args.images} images, "
          f"{args.epochs} epochs per run (img/s of epochs 2..), competitor: {args.competitor} (2 threads)")
    res = {(s, c): [] for s in args.settings for c in ("alone", "contended")}
    cpu_info = {}
    env = _env()
    env["OPENBLAS_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    for r in range(args.repeats):
        for s in args.settings:
            for c in ("alone", "contended"):
                comp = None
                if c == "contended":
                    code = NUMPY_COMPETITOR if args.competitor == "numpy" else TORCH_COMPETITOR
                    comp = subprocess.Popen([sys.executable, "-c", code], env=env)
                    time.sleep(1.5)
                try:
                    v, cpu_info[s] = _train(s, manifest, cfg, tmp / f"{s}-{c}-{r}")
                finally:
                    if comp is not None:
                        comp.kill()
                        comp.wait()
                res[(s, c)].append(v)
                print(f"  round {r + 1}: {s:<9} {c:<10} {v:7.1f} img/s", flush=True)
    print(f"\n{'setting':<10}{'threads':>8}{'wait':>9}{'alone':>10}{'contended':>11}{'ratio':>8}")
    for s in args.settings:
        a, c = statistics.median(res[(s, 'alone')]), statistics.median(res[(s, 'contended')])
        ratio = statistics.median(x / y for x, y in zip(res[(s, 'contended')], res[(s, 'alone')]))
        info = cpu_info.get(s, {})
        print(f"{s:<10}{info.get('threads', '?'):>8}{str(info.get('omp_wait_policy') or 'unset'):>9}"
              f"{a:10.1f}{c:11.1f}{100 * ratio:7.0f}%")
    if "before" in args.settings:
        print("\nagainst 'before' (same run, medians of per-round ratios):")
        for s in args.settings:
            if s == "before":
                continue
            for c in ("alone", "contended"):
                q = statistics.median(x / y for x, y in zip(res[(s, c)], res[("before", c)]))
                print(f"  {s} / before, {c:<10} {q:6.2f}x")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
