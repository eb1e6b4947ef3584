"""glibc malloc thresholds (``synaug.allocator``): our training step and evaluation with glibc's
defaults vs tuned, ONE run, ratios printed.

Each setting runs in its own process (``SYNAUG_MALLOC=default`` / ``auto``: the thresholds are
process-wide and cannot be put back), alternated over ``--rounds`` so that load from other
processes hits both alike. A process decodes the images (cached), trains ``--epochs`` epochs of
``--batches`` batches with synaug's step (``bench_train.Ours``: fp32, eager, the CPU default)
after one warm-up epoch, then predicts ``--eval`` images at the evaluation batch size (512, as
``synaug run``'s ``eval-*`` stages). Printed per setting: training and evaluation img/s, minor
page faults and system CPU seconds per phase, and a digest of the trained weights: the two
settings must train bit-identical weights (the allocator moves bytes, not arithmetic).

    .venv/bin/python benchmarks/bench_allocator.py [--rounds 3] [--epochs 2] [--batches 16] [--eval 4096]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {"glibc default": "default", "synaug (tuned)": "auto"}


def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime


def worker(args) -> dict:
    from synaug.allocator import keep_freed_memory

    state = keep_freed_memory()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train import Ours, _images
    from synaug.train.evaluate import predict_logits

    torch.manual_seed(0)
    tmp = Path(args.cache)
    m, _ = _images(args.batch * args.batches, args.toy, tmp)
    ours = Ours(m, args, tmp / "cache", torch.device("cpu"))      # one warm-up epoch inside
    f0, s0 = _usage()
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        ours()
    n = args.epochs * len(ours.images)
    train_s = time.perf_counter() - t0
    f1, s1 = _usage()
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in ours.model.state_dict().values()))
    ev, _ = _images(args.eval, args.toy, tmp)
    from synaug.train.data import ImageSet

    images = ImageSet(ev, ours.cfg.data, "evaluation", torch.device("cpu"), True)
    predict_logits(ours.model, images, 512)                         # warm-up
    f2, s2 = _usage()
    t0 = time.perf_counter()
    predict_logits(ours.model, images, 512)
    eval_s = time.perf_counter() - t0
    f3, s3 = _usage()
    return {"malloc": state["malloc"], "train_ips": n / train_s, "eval_ips": len(images) / eval_s,
            "train_faults": f1 - f0, "train_sys_s": s1 - s0, "eval_faults": f3 - f2, "eval_sys_s": s3 - s2,
            "weights": digest.hexdigest()[:16]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per process (after one warm-up epoch)")
    p.add_argument("--batches", type=int, default=16, help="batches per epoch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--model", default="resnet32")
    p.add_argument("--eval", type=int, default=4096, help="images predicted at batch 512")
    p.add_argument("--toy", action="store_true", help="generated PNGs instead of the shared CIFAR-10")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    runs: dict[str, list[dict]] = {k: [] for k in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, __file__, "--worker", "--cache", tmp, "--epochs", str(args.epochs),
                "--batches", str(args.batches), "--batch", str(args.batch), "--model", args.model,
                "--eval", str(args.eval)] + (["--toy"] if args.toy else [])
        for r in range(args.rounds):
            for name, value in SETTINGS.items():
                out = subprocess.run(argv, env={**os.environ, "SYNAUG_MALLOC": value}, capture_output=True,
                                     text=True, check=False)
                if out.returncode != 0:
                    sys.exit(f"bench_allocator: the {name} worker failed: {out.stderr.strip()[-500:]}")
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                row = runs[name][-1]
                print(f"round {r + 1} {name:15s} train {row['train_ips']:6.1f} img/s  eval {row['eval_ips']:6.1f} "
                      f"img/s  faults {row['train_faults']:>8d} / {row['eval_faults']:>7d}", flush=True)
    base, ours = runs["glibc default"], runs["synaug (tuned)"]
    print(f"\n{args.model}, batch {args.batch}, {args.epochs} x {args.batches} batches per process, "
          f"eval {args.eval} images at 512; {args.rounds} rounds alternated, medians")
    print("| setting | malloc | train img/s | eval img/s | train faults | train sys s | eval faults | weights |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in
               ("train_ips", "eval_ips", "train_faults", "train_sys_s", "eval_faults")}
        print(f"| {name} | {rows[0]['malloc']} | {med['train_ips']:.1f} | {med['eval_ips']:.1f} | "
              f"{med['train_faults']:.0f} | {med['train_sys_s']:.2f} | {med['eval_faults']:.0f} | "
              f"{rows[0]['weights']} |")
    tr = statistics.median(o["train_ips"] / b["train_ips"] for o, b in zip(ours, base))
    ev = statistics.median(o["eval_ips"] / b["eval_ips"] for o, b in zip(ours, base))
    same = len({r["weights"] for r in base + ours}) == 1
    print(f"\ntuned / default (median of per-round ratios): training {tr:.2f}x, evaluation {ev:.2f}x")
    print(f"trained weights identical across settings and rounds: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
