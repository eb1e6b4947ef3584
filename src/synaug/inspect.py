"""``synaug inspect``: how imbalanced is a dataset?

Counts per class and per (class, group), the imbalance factor (largest / smallest non-empty
class), the paper's many (>100) / medium (20-100) / few (<20) buckets by train count, and a
histogram. :func:`inspect_manifest` returns the numbers as a JSON-ready dict for reuse.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .errors import SynaugError
from .manifest import SPLITS, SOURCES, Manifest

BUCKETS = ("many", "medium", "few")
BUCKET_COLOURS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}


def bucket_of(count: int) -> str:
    """The paper's shot bucket of a class with ``count`` train images."""
    if count > 100:
        return "many"
    if count >= 20:
        return "medium"
    return "few"


def _imbalance(counts: np.ndarray) -> float | None:
    nz = counts[counts > 0]
    return float(nz.max() / nz.min()) if len(nz) else None


def inspect_manifest(manifest: Manifest, split: str = "train") -> dict:
    """Summarise the ``split`` rows of ``manifest``.

    Returns
    -------
    dict
        ``split``, ``num_images``, ``num_classes``, ``class_counts`` (label order),
        ``classes`` (per class: label, name, count, bucket), ``imbalance_factor`` (max / min
        over non-empty classes; ``None`` if all are empty), ``empty_classes``, ``buckets``
        (per bucket: number of classes, images, class names), ``splits`` and ``sources``
        (row counts over the whole manifest), and with groups: ``groups``, ``group_counts``,
        ``cell_counts`` (classes x groups) and ``cell_imbalance_factor``.
    """
    if split not in SPLITS:
        raise SynaugError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    part = manifest.split(split)
    counts = part.class_counts(split=None)
    per_class = [{"label": i, "name": n, "count": int(c), "bucket": bucket_of(int(c))}
                 for i, (n, c) in enumerate(zip(manifest.classes, counts))]
    buckets = {b: {"classes": 0, "images": 0, "names": []} for b in BUCKETS}
    for row in per_class:
        b = buckets[row["bucket"]]
        b["classes"] += 1
        b["images"] += row["count"]
        b["names"].append(row["name"])
    df = manifest.df
    out = {
        "split": split,
        "num_images": int(len(part)),
        "num_classes": manifest.num_classes,
        "class_counts": [int(c) for c in counts],
        "classes": per_class,
        "imbalance_factor": _imbalance(counts),
        "empty_classes": [r["name"] for r in per_class if r["count"] == 0],
        "buckets": buckets,
        "splits": {s: int((df["split"] == s).sum()) for s in SPLITS},
        "sources": {s: int((df["source"] == s).sum()) for s in SOURCES},
        "groups": manifest.groups,
    }
    if manifest.groups is not None:
        cc = part.cell_counts(split=None)
        out["cell_counts"] = cc.tolist()
        out["group_counts"] = [int(x) for x in cc.sum(axis=0)]
        out["cell_imbalance_factor"] = _imbalance(cc.ravel())
        out["no_group_rows"] = int((part.df["group"] < 0).sum())
    return out


# ---------------------------------------------------------------------------- histogram
def histogram_png(summary: dict, title: str = "") -> bytes:
    """A PNG of class counts sorted by size, bars coloured by bucket (one more panel per group)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    counts = np.asarray(summary["class_counts"])
    names = [c["name"] for c in summary["classes"]]
    order = np.argsort(-counts, kind="stable")
    groups = summary.get("groups") or []
    panels = 1 + len(groups)
    C = len(counts)
    fig = Figure(figsize=(max(6.0, min(0.25 * C + 2, 20.0)), 3.2 * panels), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]

    def bars(ax, values, subtitle):
        colours = [BUCKET_COLOURS[bucket_of(int(v))] for v in values]
        ax.bar(np.arange(C), values, color=colours, width=0.85)
        ax.set_ylabel("images (log scale)" if log else "images")
        ax.set_title(subtitle, fontsize=10)
        if C <= 40:
            ax.set_xticks(np.arange(C), [names[i] for i in order], rotation=60, ha="right", fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_xlabel("classes, sorted by train count")
        ax.set_xlim(-0.6, C - 0.4)
        if log:  # a long tail is unreadable on a linear axis
            ax.set_yscale("log")

    imb = summary["imbalance_factor"]
    log = imb is not None and imb >= 10
    head = f"{summary['split']}: {summary['num_images']} images, {C} classes"
    head += f", imbalance factor {imb:.1f}" if imb is not None else ""
    bars(axes[0], counts[order], (title + " - " if title else "") + head)
    if groups:
        cc = np.asarray(summary["cell_counts"])
        for gi, g in enumerate(groups):
            bars(axes[1 + gi], cc[order, gi], f"group {g}: {int(cc[:, gi].sum())} images")
    axes[0].legend(handles=[Patch(color=BUCKET_COLOURS[b], label=lbl) for b, lbl in
                            (("many", "many (>100)"), ("medium", "medium (20-100)"), ("few", "few (<20)"))],
                   fontsize=8, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---------------------------------------------------------------------------- terminal
def print_summary(summary: dict, console=None) -> None:
    """Rich tables: per class (count, share, bucket, per-group counts) and the bucket totals."""
    from rich.table import Table

    from .term import console as term_console

    console = console or term_console()
    groups = summary.get("groups") or []
    n = max(summary["num_images"], 1)
    imb = summary["imbalance_factor"]
    # the headline is a plain line: as a table title it would wrap around a narrow table
    console.print(f"[bold]{summary['split']}: {summary['num_images']} images, {summary['num_classes']} classes, "
                  f"imbalance factor {'n/a' if imb is None else f'{imb:.2f}'}[/]")
    t = Table()
    t.add_column("label", justify="right")
    t.add_column("class")
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    t.add_column("bucket")
    for g in groups:
        t.add_column(g, justify="right")
    style = {"many": "blue", "medium": "yellow", "few": "red"}
    for row in summary["classes"]:
        cells = [str(row["label"]), row["name"], str(row["count"]), f"{100 * row['count'] / n:.1f}%",
                 f"[{style[row['bucket']]}]{row['bucket']}[/]"]
        cells += [str(v) for v in (summary["cell_counts"][row["label"]] if groups else [])]
        t.add_row(*cells)
    if groups:
        t.add_section()
        t.add_row("", "total", str(summary["num_images"]), "100.0%", "",
                  *[str(v) for v in summary["group_counts"]])
    console.print(t)
    b = Table(title="shot buckets (by train count)")
    for col in ("bucket", "classes", "images"):
        b.add_column(col, justify="left" if col == "bucket" else "right")
    for name, label in (("many", "many (>100)"), ("medium", "medium (20-100)"), ("few", "few (<20)")):
        b.add_row(label, str(summary["buckets"][name]["classes"]), str(summary["buckets"][name]["images"]))
    console.print(b)
    extra = f"splits: {summary['splits']}; sources: {summary['sources']}"
    if groups and summary.get("cell_imbalance_factor") is not None:
        extra += f"; cell imbalance factor {summary['cell_imbalance_factor']:.2f}"
    if summary["empty_classes"]:
        extra += f"; empty classes: {len(summary['empty_classes'])}"
    console.print(extra)
    sizes = summary.get("image_sizes")
    if sizes:
        shown = ", ".join(f"{k} ({v})" for k, v in list(sizes.items())[:6]) + (", ..." if len(sizes) > 6 else "")
        hint = " (train.data.image_size resizes them to one size)" if len(sizes) > 1 else ""
        console.print(f"image sizes (all splits): {shown}{hint}")


# ---------------------------------------------------------------------------- CLI
def register(sub) -> None:
    p = sub.add_parser("inspect", help="class / group counts, imbalance factor, shot buckets, histogram",
                       description="Counts per class and per class x group, imbalance factor, "
                                   "many/medium/few buckets; a terminal table, JSON and a PNG histogram.")
    from .data import add_source_args

    add_source_args(p)
    p.add_argument("--split", choices=SPLITS, default="train", help="which split to count (default: train)")
    p.add_argument("--out", "-o", help="folder for inspect.json and histogram.png")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of tables")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    import json

    from .data import manifest_from_args
    from .io import write_bytes_atomic, write_json_atomic

    from .data.files import check_manifest_images, size_counts

    m = manifest_from_args(args)
    table = args.manifest if args.manifest and Path(args.manifest).is_file() else None
    sizes = size_counts(check_manifest_images(m, f"images of {args.manifest or args.dataset}", table), m)
    summary = inspect_manifest(m, args.split)
    summary["image_sizes"] = {f"{w}x{h}": n for (w, h), n in sizes.most_common()}
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise SynaugError(f"--out {out} exists and is not a folder")
        png = histogram_png(summary, title=args.dataset or Path(args.manifest).name)  # before any write
        write_json_atomic(out / "inspect.json", summary)
        write_bytes_atomic(out / "histogram.png", png)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    if args.out:
        print(f"wrote {Path(args.out) / 'inspect.json'} and {Path(args.out) / 'histogram.png'}")
    return 0
