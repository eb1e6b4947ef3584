"""``synaug report RUN...``: rebuild one run's report, or compare several runs."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("report", help="rebuild a run's report, or compare several runs",
                       description="One run: rewrite RUN/report.{html,md}. Several: a comparison "
                                   "table, per-class table and per-class bars in --out. Runs are "
                                   "keyed by folder: each row is labelled with the folder name (with "
                                   "parent folders when names repeat) or with --label; per-class "
                                   "numbers are matched by class name.")
    p.add_argument("runs", nargs="+", help="run folders written by `synaug run` / `synaug demo`")
    p.add_argument("--out", "-o", default=None, help="comparison folder (default: first run's parent)")
    p.add_argument("--title", default="comparison")
    p.add_argument("--label", action="append", default=None, metavar="TEXT",
                   help="label of a run in the comparison, once per run in the order given "
                        "(default: the run folders' names)")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from ..errors import SynaugError
    from . import build_report, compare

    for r in args.runs:
        if not (Path(r) / "metrics.json").is_file():
            raise SynaugError(f"{r} is not a finished run folder (no metrics.json)")
    if len(args.runs) == 1:
        if args.label:
            raise SynaugError("--label names runs in a comparison; give two or more run folders")
        print(f"wrote {build_report(args.runs[0])}")
    else:
        if args.label is not None and len(args.label) != len(args.runs):
            raise SynaugError(f"{len(args.label)} --label for {len(args.runs)} runs: give one per run, in order")
        out = Path(args.out) if args.out else Path(args.runs[0]).parent
        from ..io import check_writable

        check_writable(out)
        print(f"wrote {compare(args.runs, out, args.title, labels=args.label)}")
    return 0
