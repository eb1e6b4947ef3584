#!/usr/bin/env python
"""Rows beside ``synaug demo``'s four, paired by seed (a thin driver over
:mod:`synaug.experiments.demo_rows`): run the missing ones, then print the table.

    for s in 0 1 2; do .venv/bin/synaug demo --seed $s --epochs 22 --out runs/demo-s$s; done
    .venv/bin/python benchmarks/demo_rows.py --demo 'runs/demo-s{seed}' --seeds 0 1 2 \\
        --rows plus+select_rotate sd14+select_rotate [--epochs 22] [--table-only] [--md out.md]
        [--records docs/records/demo-rows.json [--save-records]] [--results docs/results.md [--note TEXT] [--title TEXT]]

``--records``: a committed ledger (:mod:`synaug.experiments.records`); a (seed, row) whose run folder
is absent is taken from it when its configuration is today's. ``--save-records`` first writes every
finished run of the given seeds and rows into it (metrics + commit, CPU, date). ``--results``: put
the table into that results file as its section "The shipped recipe beside the demo" (the file's
other sections are kept, :mod:`synaug.experiments.results_file`). ``--epochs``: the demo's training
epochs every row runs at (default 22, the reference configuration every recorded row ran at; the
demo's own default is 12: pass ``--epochs 12`` beside a plain ``synaug demo``).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def main(argv=None) -> int:
    from synaug.demo import DEFAULT_EPOCHS, REFERENCE_EPOCHS
    from synaug.errors import SynaugError
    from synaug.experiments import records
    from synaug.experiments.demo_rows import parse, record_runs, run_row, section, table
    from synaug.experiments.results_file import merge
    from synaug.io import write_text_atomic

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="runs/demo-s{seed}", help="each seed's demo folder ({seed} is replaced)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="*", default=[],
                    help="BASE+OPTION[+OPTION]: BASE sd14 or plus (none: the demo's four rows only)")
    ap.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS,
                    help=f"the demo's training epochs the rows run at (default {REFERENCE_EPOCHS}: the reference "
                         f"configuration of the records; a plain `synaug demo` runs {DEFAULT_EPOCHS})")
    ap.add_argument("--table-only", action="store_true", help="run nothing; the table of what is finished")
    ap.add_argument("--md", default=None, help="also write the table to this file")
    ap.add_argument("--records", default=None, help="a records file: runs whose folders are absent come from it")
    ap.add_argument("--save-records", action="store_true", help="write the finished runs into --records first")
    ap.add_argument("--results", default=None, help="merge the table into this results file as its own section")
    ap.add_argument("--note", default="", help="a paragraph put above the table in --results")
    ap.add_argument("--title", default="", help="the section's heading in --results (default: the shipped "
                    "recipe's section; another title adds a section, e.g. for other seeds or another CPU)")
    a = ap.parse_args(argv)
    try:
        for r in a.rows:
            parse(r)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.save_records and not a.records:
        print("error: --save-records needs --records FILE", file=sys.stderr)
        return 2
    dirs = {s: Path(a.demo.format(seed=s)) for s in a.seeds}
    if not a.table_only:
        for r in a.rows:          # row by row: an interrupted invocation leaves whole rows
            for s in a.seeds:
                print(f"=== {r}, seed {s} -> {dirs[s] / r}", flush=True)
                try:
                    run_row(r, s, dirs[s], a.epochs)
                except SynaugError as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 2
    try:
        if a.save_records:
            added, replaced = records.merge(Path(a.records), record_runs(dirs, a.rows, a.epochs))
            print(f"{a.records}: {added} records added, {replaced} replaced", flush=True)
        recs = records.load(Path(a.records)) if a.records else None
    except SynaugError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = "\n".join(table(dirs, a.rows, recs, a.epochs))
    print(text)
    if a.md:
        Path(a.md).write_text(text + "\n")
    if a.results:
        res = Path(a.results)
        args = list(sys.argv[1:] if argv is None else argv)
        if "--note" in args[:-1]:   # the paragraph itself stands above the table
            args[args.index("--note") + 1] = "(the paragraph above the table)"
        if "--title" in args[:-1]:
            args[args.index("--title") + 1] = "(the section's heading)"
        cmd = "python benchmarks/demo_rows.py " + " ".join(shlex.quote(x) for x in args)
        new = section(text.splitlines(), cmd, a.note, a.title, a.epochs)
        write_text_atomic(res, merge(res.read_text(), new) if res.is_file() else new)
        print(f"{res}: section updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
