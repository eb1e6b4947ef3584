#!/usr/bin/env python
"""Rows beside ``synaug demo``'s four, paired by seed (a thin driver over
:mod:`synaug.experiments.demo_rows`): run the missing ones, then print the table.

    for s in 0 1 2; do .venv/bin/synaug demo --seed $s --out runs/demo-s$s; done
    .venv/bin/python benchmarks/demo_rows.py --demo 'runs/demo-s{seed}' --seeds 0 1 2 \\
        --rows plus+select_rotate sd14+select_rotate [--table-only] [--md out.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from synaug.errors import SynaugError
    from synaug.experiments.demo_rows import parse, run_row, table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="runs/demo-s{seed}", help="each seed's demo folder ({seed} is replaced)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="*", default=[],
                    help="BASE+OPTION[+OPTION]: BASE sd14 or plus (none: the demo's four rows only)")
    ap.add_argument("--table-only", action="store_true", help="run nothing; the table of what is finished")
    ap.add_argument("--md", default=None, help="also write the table to this file")
    a = ap.parse_args(argv)
    try:
        for r in a.rows:
            parse(r)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dirs = {s: Path(a.demo.format(seed=s)) for s in a.seeds}
    if not a.table_only:
        for r in a.rows:          # row by row: an interrupted invocation leaves whole rows
            for s in a.seeds:
                print(f"=== {r}, seed {s} -> {dirs[s] / r}", flush=True)
                try:
                    run_row(r, s, dirs[s])
                except SynaugError as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 2
    text = "\n".join(table(dirs, a.rows))
    print(text)
    if a.md:
        Path(a.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
