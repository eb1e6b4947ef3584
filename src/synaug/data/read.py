"""Reading what a user points at: a manifest file or an image folder, and ``synaug manifest``.

:class:`synaug.manifest.Manifest` is the one manifest type; this module adds the folder case
(an ImageFolder, through :mod:`synaug.data.adapters`), which the manifest module itself cannot
import without a cycle (the adapters build manifests).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import SynaugError
from ..manifest import SOURCES, SPLITS, Manifest
from .adapters import imagefolder


def read_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None,
                  root_for_plain_only: bool = False) -> Manifest:
    """A manifest file (:meth:`Manifest.read`), or a folder read as an ImageFolder
    (``folder/<class>/<image>`` or ``folder/{train,val,test}/<class>/<image>``)."""
    if path is None or str(path) == "":
        raise SynaugError("no manifest given")
    p = Path(path)
    if p.is_dir():
        if root is not None:
            raise SynaugError(f"{p} is a folder (read as an ImageFolder): give no separate root for it")
        return imagefolder(p)
    if not p.exists():
        raise SynaugError(f"manifest file not found: {p} (nor an image folder)")
    return Manifest.read(p, root=root, root_for_plain_only=root_for_plain_only)


# ---------------------------------------------------------------------------- CLI
def register(sub) -> None:
    p = sub.add_parser("manifest", help="manifest tools: merge real and synthetic manifests into one",
                       description="Manifest tools.")
    msub = p.add_subparsers(dest="manifest_command", metavar="ACTION")
    m = msub.add_parser(
        "merge", help="join manifests (e.g. your real rows + a generation's synthetic.parquet) into one",
        description="Join manifests into one file: classes and groups matched by name, rows of one "
                    "source under different folders rebased onto their common folder. Each input is a "
                    "manifest file (.parquet/.csv) or an image folder (ImageFolder layout). Splits are "
                    "kept as they are: `synaug train` uses the train/val rows, `synaug evaluate` the "
                    "test rows.")
    m.add_argument("inputs", nargs="+", help="manifest files or image folders")
    m.add_argument("--data-root", help="root of the real rows of plain-table inputs, e.g. your CSV (default: "
                                       "each table's folder); manifests written by synaug keep their roots")
    m.add_argument("--out", "-o", required=True, help="merged manifest (.parquet or .csv)")
    m.set_defaults(func=_cmd_merge)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _cmd_merge(args) -> int:
    out = Path(args.out)
    if out.suffix not in (".parquet", ".csv"):
        raise SynaugError(f"--out must end in .parquet or .csv: {out}")
    parts = [read_manifest(i, None if Path(i).is_dir() else args.data_root, root_for_plain_only=True)
             for i in args.inputs]
    merged = Manifest.merge(parts)
    merged.write(out)
    df = merged.df
    splits = ", ".join(f"{s} {int((df['split'] == s).sum())}" for s in SPLITS)
    sources = ", ".join(f"{s} {int((df['source'] == s).sum())}" for s in SOURCES)
    print(f"wrote {out}: {len(df)} rows ({splits}; {sources}), {merged.num_classes} classes")
    return 0
