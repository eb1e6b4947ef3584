"""What checking every real image file costs (``synaug.data.files``), on the 50,000 CIFAR-10
training JPEGs of ../shared/data (extracted once into the cache).

Measured in one run, one after another on the same files (warm page cache: a first pass reads
them all once): the file check of the data stage (headers and the file's last bytes; a full
decode only for files that do not end as their format must), a full PIL decode of every
file (what a check by decoding would cost), and the stat pass of a run's data key (own data).

    .venv/bin/python benchmarks/bench_filecheck.py [--limit N] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="only the first N files")
    ap.add_argument("--threads", type=int, default=2, help="also timed with this many threads")
    args = ap.parse_args()

    from PIL import Image

    from synaug.data.files import probe_all
    from synaug.data.shared import extract_shared

    root = extract_shared("cifar10") / "train"
    paths = sorted(str(p) for p in root.rglob("*.jpg"))[: args.limit]
    for p in paths:  # warm the page cache: every pass below reads the same bytes from memory
        with open(p, "rb") as f:
            f.read()

    def full_decode():
        for p in paths:
            with Image.open(p) as im:
                im.load()

    t_stat, _ = _timed(lambda: [os.stat(p) for p in paths])
    t_fast1, r1 = _timed(lambda: probe_all(paths, threads=1))
    t_fast, r = _timed(lambda: probe_all(paths, threads=args.threads))
    t_full, _ = _timed(full_decode)
    bad = sum(1 for _, why in r if why)
    assert r == r1 and not bad, "the check must agree with itself and find these files usable"
    n = len(paths)
    print(f"{n} CIFAR-10 training JPEGs ({root})")
    for label, t in (("file check (the data stage's, 1 thread)", t_fast1), (f"file check, {args.threads} threads", t_fast),
                     ("full PIL decode, 1 thread", t_full), ("stat of every file (own-data key)", t_stat)):
        print(f"  {label + ':':42s} {t:6.2f} s  ({1e6 * t / n:5.1f} us/file)")
    print(f"  full decode / file check: {t_full / t_fast1:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
