"""The "Groups and fairness" section of a run report (any run whose data has groups).

Per stage (trained / fine-tuned): the gap metrics of :data:`synaug.metrics.HEADLINE_SET`
(fairlearn's definitions) with the paper's reading (:data:`synaug.metrics.PAPER_SET`) beside
them and their definitions, the other readings listed beneath, the group-accuracy summary (worst cell,
plain mean, unweighted and training-weighted cell means), a per-(group, class) table (real
training count before uniformization, training count after, test rows, accuracy, the group's
TPR and FPR) and a bar plot of per-cell accuracy. Runs on UTKFace state its licence.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics as M
from ..manifest import Manifest
from . import plots

STAGE_DIRS = {"trained": "train", "finetuned": "finetune"}
UTKFACE_DATASETS = ("utkface", "shared-utkface")


def _f(v, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"


def uses_utkface(cfg: dict) -> bool:
    """Whether the run's data or its pool is UTKFace."""
    data = cfg.get("data") or {}
    pool = ((cfg.get("generate") or {}).get("pool") or {})
    return data.get("dataset") in UTKFACE_DATASETS or pool.get("dataset") in UTKFACE_DATASETS


def cell_table(real: Manifest, train: Manifest, pred: pd.DataFrame | None) -> list[dict]:
    """One row per (group, class): counts before / after uniformization and test accuracy, and
    the group's TPR / FPR (two classes; class 1 positive). Training rows without a group
    (a plan that ignores groups) get a row of their own with group "(none)"."""
    C, G = real.num_classes, real.num_groups
    before = real.cell_counts("train")
    tr = train.split("train")
    after = tr.cell_counts(None)
    rates = {}
    if pred is not None and C == 2:
        y, p, g = pred["label"].to_numpy(), pred["pred"].to_numpy(), pred["group"].to_numpy()
        keep = g >= 0
        tpr = M.true_positive_rates(y[keep], p[keep], g[keep])
        fpr = M.false_positive_rates(y[keep], p[keep], g[keep])
        rates = {int(k): (tpr.get(k), fpr.get(k)) for k in np.unique(g[keep])}
    rows = []
    for gi, gname in enumerate(real.groups or []):
        for c, cname in enumerate(real.classes):
            row = {"group": gname, "class": cname, "real train": int(before[c, gi]), "train after": int(after[c, gi])}
            if pred is not None:
                m = (pred["group"] == gi).to_numpy() & (pred["label"] == c).to_numpy()
                row["test n"] = int(m.sum())
                row["accuracy"] = float((pred["pred"].to_numpy()[m] == c).mean()) if m.any() else float("nan")
                if rates:
                    row["TPR"], row["FPR"] = rates.get(gi, (float("nan"), float("nan")))
            rows.append(row)
    none = tr.df[tr.df["group"] < 0]
    for c, cname in enumerate(real.classes):
        n = int((none["label"] == c).sum())
        if n:
            rows.append({"group": "(none)", "class": cname, "real train": 0, "train after": n})
    return rows


def _table(header, rows):
    return header, [[str(x) for x in r] for r in rows]


Block = tuple[str, object]  # ("text" | "h3", str) or ("table", (header, rows))


def group_section(run_dir: Path, summary: dict, cfg: dict, real: Manifest, train: Manifest,
                  plot_dir: Path) -> tuple[list[Block], list[tuple[str, Path]]]:
    """The section's blocks, in order: ``("text", str)``, ``("table", (header, rows))`` and
    ``("h3", title)``, plus its figures ``[(title, png)]``. Empty when the run has no groups."""
    if not real.groups:
        return [], []
    stages = [s for s in ("trained", "finetuned") if s in summary["results"]]
    res = {s: summary["results"][s] for s in stages}
    blocks: list = []
    gnames = ", ".join(real.groups)
    blocks.append(("text", f"Group = the sensitive attribute / background ({gnames}). Fairness gaps are over the "
                           "group only; worst-group accuracy is over the class x group cells, named <class>/<group>. "
                           f"Synthetic rows: {summary.get('generator', '')}."))
    if uses_utkface(cfg):
        from ..data.utkface import LICENCE

        blocks.append(("text", f"Licence: {LICENCE}; these results may not be used commercially."))
    fair = {s: r.get("fairness") for s, r in res.items() if r.get("fairness")}
    if fair:
        blocks += _fairness_blocks(fair, real)
    blocks += _group_accuracy_blocks(res)
    cell_blocks, figs = _cell_blocks(run_dir, stages, real, train, plot_dir)
    return blocks + cell_blocks, figs


def _fairness_blocks(fair: dict, real: Manifest) -> list:
    """Headline DP / EO / ED, the other definition sets, every gap, and the population shares used."""
    blocks: list = []
    first = next(iter(fair.values()))
    if "headline" in first:
        blocks += _headline_blocks(fair)
        blocks.append(("h3", "Other readings of DP / EO / ED (same predictions)"))
        rows = []
        last = list(fair)[-1]
        for name, d in M.DEFINITION_SETS.items():
            if name in (M.HEADLINE_SET, M.PAPER_SET):
                continue
            vals = fair[last].get("sets", {}).get(name) or {k: fair[last].get(d[k]) for k in ("DP", "EO", "ED")}
            rows.append([name, *[_f(vals.get(k)) for k in ("DP", "EO", "ED")], d["label"]])
        blocks.append(("table", _table([f"set ({last})", "DP", "EO", "ED", "reading"], rows)))
    blocks.append(("h3", "Every gap computed (over the group)"))
    keys = [k for k in M.DEFINITIONS if any(k in f for f in fair.values())]
    rows = [[k, *[_f(fair[s].get(k)) for s in fair], M.DEFINITIONS[k]] for k in keys]
    blocks.append(("table", _table(["gap", *fair, "definition"], rows)))
    shares = first.get("population_shares")
    if shares:
        blocks.append(("text", f"Class shares per group used by demographic_parity_population (from "
                               f"{first.get('population_shares_from')}): "
                               + "; ".join(f"{g}: {real.classes[1]} {100 * v[1]:.1f}%" for g, v in shares.items())
                               + f". Positive class: {first.get('positive_class')}."))
    return blocks


def _group_accuracy_blocks(res: dict) -> list:
    ga = {s: r["group_accuracy"] for s, r in res.items() if "group_accuracy" in r}
    if not ga:
        return []
    defs = next(iter(ga.values())).get("definitions", {})
    rows = [[k, *[_pct(ga[s].get(k)) for s in ga], defs.get(k, "")]
            for k in ("worst", "mean", "unweighted_mean", "weighted_mean") if any(k in g for g in ga.values())]
    return [("h3", "Group accuracy (%)"), ("table", _table(["", *ga, "definition"], rows))]


def _cell_blocks(run_dir: Path, stages: list[str], real: Manifest, train: Manifest,
                 plot_dir: Path) -> tuple[list, list[tuple[str, Path]]]:
    """Per stage, the (group, class) cell table with counts before / after and test accuracy,
    and the cell-accuracy figure when predictions were saved."""
    blocks: list = []
    figs: list[tuple[str, Path]] = []
    acc_plot = {}
    for s in stages:
        p = Path(run_dir) / "eval" / STAGE_DIRS[s] / "predictions.csv"
        pred = pd.read_csv(p) if p.is_file() else None
        rows = cell_table(real, train, pred)
        out = [[r["group"], r["class"], r["real train"], r["train after"], r.get("test n", ""),
                _pct(r["accuracy"]) if "accuracy" in r else "", _pct(r["TPR"]) if "TPR" in r else "",
                _pct(r["FPR"]) if "FPR" in r else ""] for r in rows]
        cols = ["group", "class", "real train (before)", "train (after uniformization)", "test n",
                "accuracy (%)", "TPR of the group (%)", "FPR of the group (%)"]
        blocks.append(("h3", f"Per (group, class) cell — {s}"))
        blocks.append(("table", _table(cols, out)))
        if pred is not None:
            a = np.full((real.num_groups, real.num_classes), np.nan)
            for r in rows:
                if r["group"] in real.groups and "accuracy" in r:
                    a[real.groups.index(r["group"]), real.classes.index(r["class"])] = r["accuracy"]
            acc_plot[s] = a
    if acc_plot:
        blocks.append(("text", "TPR / FPR: P(ŷ = " + (real.classes[1] if real.num_classes == 2 else "1")
                               + " | y, group) for the positive / negative class of the group (two classes only). "
                               "Counts before: real training rows; after: real + synthetic training rows."))
        figs.append(("Test accuracy per (group, class) cell",
                     plots.cell_accuracy(real.groups, real.classes, acc_plot, plot_dir / "cell_accuracy.png")))
    return blocks, figs


def _headline_blocks(fair: dict) -> list:
    """DP / EO / ED per stage under fairlearn's definitions, the paper's reading beside them."""
    hs, ps = M.DEFINITION_SETS[M.HEADLINE_SET], M.DEFINITION_SETS[M.PAPER_SET]
    rows = []
    for k in ("DP", "EO", "ED"):
        rows.append([k, *[_f(fair[s].get(hs[k])) for s in fair], *[_f(fair[s].get(ps[k])) for s in fair],
                     f"{hs[k]}: {M.DEFINITIONS[hs[k]]}", f"{ps[k]}: {M.DEFINITIONS[ps[k]]}"])
    header = ["metric", *fair, *[f"{s}, paper reading" for s in fair], f"definition ('{M.HEADLINE_SET}')",
              f"paper reading ('{M.PAPER_SET}')"]
    return [("h3", f"Fairness gaps: fairlearn's definitions ('{M.HEADLINE_SET}': {hs['label']}), the paper's "
                   f"reading beside them"),
            ("table", _table(header, rows)),
            ("text", f"The paper's reading ('{M.PAPER_SET}'): {ps['label']}. It is the headline of the Table 3 "
                     "reproduction (docs/results.md); fairlearn's definitions are the ones to compare with other "
                     "work.")]


SECTION_TITLE = "Groups and fairness"


def to_markdown(blocks, figs, run_dir: Path) -> list[str]:
    from . import _md_table

    if not blocks:
        return []
    md = [f"## {SECTION_TITLE}", ""]
    for kind, x in blocks:
        if kind == "h3":
            md += [f"### {x}", ""]
        elif kind == "table":
            md += [_md_table(*x), ""]
        else:
            md += [x, ""]
    for title, p in figs:
        md += [f"### {title}", "", f"![{title}]({Path(p).relative_to(run_dir).as_posix()})", ""]
    return md


def to_html(blocks, figs) -> list[str]:
    import html

    from . import _html_table, _img

    if not blocks:
        return []
    body = [f"<h2>{SECTION_TITLE}</h2>"]
    for kind, x in blocks:
        if kind == "h3":
            body.append(f"<h3>{html.escape(x)}</h3>")
        elif kind == "table":
            body.append(_html_table(*x))
        else:
            body.append(f"<p>{html.escape(x)}</p>")
    for title, p in figs:
        body += [f"<h3>{html.escape(title)}</h3>", _img(p)]
    return body
