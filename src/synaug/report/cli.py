"""``synaug report RUN...``: rebuild one run's report, or compare several runs."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("report", help="rebuild a run's report, or compare several runs",
                       description="One run: rewrite RUN/report.{html,md}. Several: a comparison "
                                   "table and per-class bars in --out.")
    p.add_argument("runs", nargs="+", help="run folders written by `synaug run` / `synaug demo`")
    p.add_argument("--out", "-o", default=None, help="comparison folder (default: first run's parent)")
    p.add_argument("--title", default="comparison")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from ..errors import SynaugError
    from . import build_report, compare

    for r in args.runs:
        if not (Path(r) / "metrics.json").is_file():
            raise SynaugError(f"{r} is not a finished run folder (no metrics.json)")
    if len(args.runs) == 1:
        print(f"wrote {build_report(args.runs[0])}")
    else:
        out = Path(args.out) if args.out else Path(args.runs[0]).parent
        print(f"wrote {compare(args.runs, out, args.title)}")
    return 0
