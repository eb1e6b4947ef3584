"""CPU contention: ``synaug train`` alone, beside one competing CPU-bound 2-thread process, and
(``--late``) with the competitor starting after the first epoch, ONE run, ratios printed.

Each measurement is a fresh ``synaug train`` process (ResNet-32, batch 128, ``--images`` CIFAR-10
images, ``--epochs`` epochs; img/s = mean of the epochs after the first, so start-up, decoding
and the first epoch's lazy initialisation are excluded; under ``late``, the epochs after the
second: the competitor starts when epoch 1 ends, and the thread governor reacts at the end of
epoch 2). Settings (how ``synaug`` is started):

* ``before``   ``--omp-wait unset``: torch's own defaults (one thread per core, OpenMP's own
               spin-then-sleep wait);
* ``synaug``   no flag: synaug's default (``--omp-wait auto``: the wait policy decided from the
               load at start, the thread governor between epochs; ``synaug.threads``);
* ``passive``  ``--omp-wait passive`` (synaug's wait policy before issue 18);
* ``bf16``     no flag, ``$SYNAUG_CPU_BF16=1``: synaug's default threads and wait policy with bf16
               training (the opt-in; ``amp: auto`` keeps fp32 on CPUs), governed as a bf16 step;
* ``old``      ``--omp-wait passive`` with ``$SYNAUG_CPU_BF16=0``: synaug's whole default before
               issue 18 (passive wait, fp32), what the issue's "2x today's default" is measured against
               (the same computation as ``passive`` since ``amp: auto`` keeps fp32 on CPUs; pinned
               so that the comparison does not move with the default);
* ``threads1`` ``--threads 1``;
* ``active`` / ``spin10k`` / ``spin1k`` (optional): ``--omp-wait active``, and OpenMP's default
               with ``GOMP_SPINCOUNT=10000`` / ``1000`` (spin briefly, then sleep).

Competitors (``--competitor``): ``numpy`` (default) - one process, two Python threads each
multiplying 200x200 matrices in a loop (single-threaded BLAS; the GIL is released, so two cores
are busy); ``torch`` - one process training a ResNet-32 on random tensors with torch's default
two OpenMP threads (another training run on the same machine).

All runs are interleaved, ``--repeats`` times; the table shows medians, the ratio contended /
alone per setting (fair share: 50 % on 2 cores; target >= 40 %), and every setting against
``before`` (target for ``synaug`` alone: >= 0.95x).

    .venv/bin/python benchmarks/bench_contention.py [--images 2560] [--epochs 4] [--repeats 2]
        [--settings before synaug passive] [--competitor numpy] [--late]

Uses the shared CIFAR-10 JPEGs when available, else generated PNGs. Run it on an otherwise idle
machine (processes under ``nice`` excepted, with the kernel's autogroup scheduling off:
``/proc/sys/kernel/sched_autogroup_enabled`` = 0): other load is contention too.
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
SETTINGS = {"before": (["--omp-wait", "unset"], {}), "synaug": ([], {}),
            "bf16": ([], {"SYNAUG_CPU_BF16": "1"}), "threads1": (["--threads", "1"], {}),
            "passive": (["--omp-wait", "passive"], {}), "old": (["--omp-wait", "passive"], {"SYNAUG_CPU_BF16": "0"}),
            "active": (["--omp-wait", "active"], {}),
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
              "SYNAUG_OMP_WAIT", "SYNAUG_CPU_BF16", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _competitor(kind: str) -> subprocess.Popen:
    env = _env()
    env["OPENBLAS_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    code = NUMPY_COMPETITOR if kind == "numpy" else TORCH_COMPETITOR
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def _train(setting: str, manifest: Path, cfg: Path, out: Path, condition: str = "alone",
           competitor: str = "numpy") -> tuple[float, dict]:
    """img/s of one ``synaug train`` under ``condition`` (alone / contended / late)."""
    exe = Path(sys.executable).parent / "synaug"
    flags, extra = SETTINGS[setting]
    cmd = [str(exe), *flags, "train", "-c", str(cfg), "--train-manifest", str(manifest),
           "--out", str(out), "--no-resume"]
    comp = None
    if condition == "contended":
        comp = _competitor(competitor)
        time.sleep(1.5)
    try:
        p = subprocess.Popen(cmd, env={**_env(), **extra}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        if condition == "late":
            while p.poll() is None and not (out / "last.json").is_file():
                time.sleep(0.05)   # last.json appears when epoch 1 is written
            comp = _competitor(competitor)
        err = p.communicate()[1]
    finally:
        if comp is not None:
            comp.kill()
            comp.wait()
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    hist = json.loads((out / "history.json").read_text())
    summ = json.loads((out / "summary.json").read_text())
    cpu = {**summ.get("cpu", {}), "amp": (summ.get("amp") or {}).get("used", "off")}
    skip = 2 if condition == "late" else 1
    rates = [h["img_per_s"] for h in hist[skip:]] or [hist[-1]["img_per_s"]]
    return statistics.mean(rates), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2560)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--settings", nargs="+", default=["before", "synaug", "passive"], choices=list(SETTINGS))
    ap.add_argument("--competitor", choices=["numpy", "torch"], default="numpy")
    ap.add_argument("--late", action="store_true", help="also start the competitor after the first epoch")
    ap.add_argument("--alone-only", action="store_true", help="only the 'alone' condition (a quick A/B of settings)")
    args = ap.parse_args()
    if args.late and args.epochs < 4:
        raise SystemExit("--late needs --epochs >= 4 (epochs 3.. are measured)")
    tmp = Path(tempfile.mkdtemp(prefix="synaug-contention-"))
    manifest, cfg = _data(tmp, args.images, args.epochs)
    _train("synaug", manifest, cfg, tmp / "warm")  # decode cache, page cache
    conds = ["alone"] if args.alone_only else ["alone", "contended"] + (["late"] if args.late else [])
    print(f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}; {args.images} images, "
          f"{args.epochs} epochs per run, competitor: {args.competitor} (2 threads)")
    res = {(s, c): [] for s in args.settings for c in conds}
    cpu_info = {}
    for r in range(args.repeats):
        for s in (args.settings if r % 2 == 0 else args.settings[::-1]):  # alternate: no order effect
            for c in conds:
                v, cpu_info[(s, c)] = _train(s, manifest, cfg, tmp / f"{s}-{c}-{r}", c, args.competitor)
                res[(s, c)].append(v)
                gov = "; ".join(cpu_info[(s, c)].get("governor_events") or [])
                print(f"  round {r + 1}: {s:<9} {c:<10} {v:7.1f} img/s  "
                      f"[wait {cpu_info[(s, c)].get('omp_wait_policy') or 'unset'}; amp {cpu_info[(s, c)]['amp']}"
                      f"{'; ' + gov if gov else ''}]",
                      flush=True)
    _table(args, res, cpu_info, conds)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def _table(args, res: dict, cpu_info: dict, conds: list[str]) -> None:
    med = statistics.median
    print(f"\n{'setting':<10}" + "".join(f"{c:>11}" for c in conds) + "".join(f"{c + '/alone':>17}" for c in conds[1:]))
    for s in args.settings:
        ratios = [med(x / y for x, y in zip(res[(s, c)], res[(s, "alone")])) for c in conds[1:]]
        print(f"{s:<10}" + "".join(f"{med(res[(s, c)]):11.1f}" for c in conds) + "".join(f"{100 * q:16.0f}%" for q in ratios))
    if "before" in args.settings:
        print("\nagainst 'before' (torch's defaults; same run, medians of per-round ratios):")
        for s in args.settings:
            if s == "before":
                continue
            for c in conds:
                q = med(x / y for x, y in zip(res[(s, c)], res[("before", c)]))
                print(f"  {s} / before, {c:<10} {q:6.2f}x")
    if "synaug" in args.settings:
        alone = med(x / y for x, y in zip(res[("synaug", "alone")], res[("before", "alone")])) \
            if "before" in args.settings else None
        cont = (med(x / y for x, y in zip(res[("synaug", "contended")], res[("synaug", "alone")]))
                if ("synaug", "contended") in res else float("nan"))
        print("\ntargets: synaug alone / before alone >= 0.95x: "
              + (f"{alone:.2f}x {'met' if alone >= 0.95 else 'NOT met'}" if alone is not None else "n/a")
              + (f"; synaug contended / alone >= 40 %: {100 * cont:.0f} % {'met' if cont >= 0.40 else 'NOT met'}"
                 if cont == cont else ""))
    for s in ("synaug", "bf16"):
        if {s, "old"} <= set(args.settings):
            q = med(x / y for x, y in zip(res[(s, "alone")], res[("old", "alone")]))
            print(f"         {s} alone / old default (passive, fp32) alone >= 2x: {q:.2f}x {'met' if q >= 2 else 'NOT met'}")
    if ("bf16", "contended") in res:
        q = med(x / y for x, y in zip(res[("bf16", "contended")], res[("bf16", "alone")]))
        print(f"         bf16 contended / alone >= 40 %: {100 * q:.0f} % {'met' if q >= 0.40 else 'NOT met'}")


if __name__ == "__main__":
    main()
