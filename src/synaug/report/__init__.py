"""Run reports: self-contained HTML (images inlined) and markdown, one per run, and a
comparison across runs (``synaug report RUN...``)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from ..io import write_text_atomic
from ..manifest import Manifest
from . import plots


def _pct(v) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"


GAP_COLUMNS = ("DP", "EO", "ED")  # shown with 4 decimals; every other headline column in %


def headline_values(res: dict) -> dict[str, float | None]:
    """The numbers a run is judged by, unformatted: top-1, many/medium/few, fairness gaps
    (:data:`synaug.metrics.HEADLINE_SET`), worst/mean group accuracy."""
    row: dict[str, float | None] = {"top1": res.get("top1")}
    if "shot" in res:
        for k in ("many", "medium", "few"):
            row[k] = res["shot"].get(k)
    if "fairness" in res and "headline" in res["fairness"]:
        # from the gaps themselves: metrics.json of runs made when the headline was another
        # reading give the same columns
        from ..metrics import HEADLINE_SET, definition_set_values

        row.update(definition_set_values(res["fairness"], HEADLINE_SET))
    elif "fairness" in res and "demographic_parity" in res["fairness"]:  # metrics.json of older runs
        f = res["fairness"]
        for k, key in (("DP", "demographic_parity"), ("EO", "equal_opportunity"), ("ED", "equalized_odds")):
            row[k] = f.get(key)
    if "group_accuracy" in res:
        g = res["group_accuracy"]
        row["worst group"] = g.get("worst")
        row["mean"] = g.get("mean")  # plain accuracy; the group means are in the fairness section
    return row


def _cell(col: str, v) -> str:
    if col in GAP_COLUMNS:
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"
    return _pct(v)


def headline(res: dict) -> dict[str, str]:
    """The numbers a run is judged by (:func:`headline_values`), formatted: % with 2 decimals,
    fairness gaps with 4."""
    return {k: _cell(k, v) for k, v in headline_values(res).items()}


def mean_std_rows(summaries: Sequence[dict], groups: Sequence[str], cols: Sequence[str]) -> list[list[str]]:
    """One row per (group of runs, stage) with two or more runs: ``mean ± std`` (sample std) of
    every headline column over the group's runs (e.g. a config's seeds in a sweep)."""
    order = {"trained": 0, "finetuned": 1}
    by: dict[tuple[str, str], list[dict]] = {}
    for g, s in zip(groups, summaries):
        for stage, res in s["results"].items():
            by.setdefault((g, stage), []).append(headline_values(res))
    rows = []
    for (g, stage), vals in sorted(by.items(), key=lambda kv: (list(groups).index(kv[0][0]),
                                                               order.get(kv[0][1], 2))):
        if len(vals) < 2:
            continue
        cells = []
        for c in cols:
            xs = np.array([v[c] for v in vals if v.get(c) is not None], dtype=float)
            xs = xs[~np.isnan(xs)]
            if len(xs) < 2:
                cells.append(_cell(c, xs[0]) if len(xs) else "")
                continue
            m, sd = xs.mean(), xs.std(ddof=1)
            cells.append(f"{_cell(c, m)} ± {_cell(c, sd)}")
        rows.append([f"{g} (mean ± std, {len(vals)} runs)", stage, *cells])
    return rows


def named_counts(classes: Sequence[str], counts: Sequence[int]) -> str:
    """``airplane 5000, automobile 2997, ...``: counts with their class names."""
    return ", ".join(f"{c} {int(n)}" for c, n in zip(classes, counts))


def random_weights_warnings(summary: dict) -> list[str]:
    """The warning a report opens with when its synthetic images come from random weights."""
    from ..generate.base import random_weights_note

    return [f"WARNING: {n}." for n in map(random_weights_note, summary.get("generators") or []) if n]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).name)}">'


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f3f3f3}img{max-width:100%;margin:0.5em 0}"
        ".note{background:#fff6dd;padding:0.6em;border-left:4px solid #e0b000}")


def metrics_rows(summaries: Sequence[dict], labels: Sequence[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """One row per (run, stage); ``labels`` name the runs (default: each run's ``name``).

    Columns are the union of every run's headline numbers, in first-seen order (a run
    without groups leaves the group columns empty).
    """
    labels = list(labels) if labels is not None else [s["name"] for s in summaries]
    order = {"trained": 0, "finetuned": 1}  # pipeline order, whatever order the JSON kept
    cols: list[str] = []
    table = []
    for label, s in zip(labels, summaries):
        for stage, res in sorted(s["results"].items(), key=lambda kv: order.get(kv[0], 2)):
            h = headline(res)
            cols += [c for c in h if c not in cols]
            table.append((label, stage, h))
    rows = [[label, stage, *[h.get(c, "") for c in cols]] for label, stage, h in table]
    return ["run", "stage", *cols], rows


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Distinct short labels for run folders: the folder name, with as many parent folders
    as it takes to tell them apart (``lr0.1/out`` vs ``lr0.01/out``)."""
    parts = [Path(r).resolve().parts for r in run_dirs]
    for k in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(r) for r in run_dirs]


def _per_class(summary: dict) -> dict[str, float]:
    """Final-stage per-class accuracy of a run, by class name."""
    return {k: (np.nan if v is None else float(v))
            for k, v in summary["results"][summary["final"]]["per_class"].items()}


def _how_trained(path: Path) -> list[str]:
    """Precision, compilation and CPU threading of the training run, with the reasons."""
    try:
        t = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    out = []
    if "amp" in t:
        out.append(f"Training precision: {t['amp']['used']} ({t['amp']['why']}).")
    step = t.get("step") or {}
    if step.get("compile_why"):
        out.append(f"Training step: {step.get('mode', 'eager')}; {step['compile_why']}.")
    cpu = t.get("cpu") or {}
    if str(t.get("device", "")).startswith("cpu") and cpu:
        gov = "; ".join(cpu.get("governor_events") or []) or "no change"
        out.append(f"CPU: {cpu.get('threads')} threads, OpenMP wait {cpu.get('omp_wait_policy') or 'default (spin)'} "
                   f"({cpu.get('omp_wait_reason') or 'not chosen by synaug'}); thread governor: "
                   f"{gov if cpu.get('governor') else 'off'}.")
    return out


def _how_finetuned(path: Path) -> list[str]:
    """What step 3 trained on: the paper's balanced subset, or class-balanced draws from every real row."""
    try:
        r = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    if r.get("mode") == "dfr":
        return ["Step 3: DFR (logistic regression on frozen features; finetune/finetune.json)."]
    sub, what = r.get("subset") or {}, "the head"
    if r.get("train_blocks"):
        what += f" and the last {r['train_blocks']} encoder block(s)"
    n = sum(int(v) for v in (sub.get("cells") or {}).values())
    if sub.get("sampling") == "class_balanced":
        rows = f"every real training image ({n}), drawn class-balanced: {sub['samples_per_epoch']} draws per epoch"
    else:
        rows = (f"a {sub.get('by', 'class')}-balanced subset of the real training images "
                f"({sub.get('per_cell')} each, {n} in all)")
    start = r.get("start") or {}
    frm = (f", from the {'last' if start.get('model') == 'last' else 'validation-selected'} training epoch "
           f"({start['epoch']})" if start.get("epoch") is not None else "")
    return [f"Step 3 ({r.get('mode')}): {what} on {rows}, {len(r.get('history') or [])} epochs{frm}."]


def build_report(run_dir: str | Path, samples_per_class: int = 4, seed: int = 0) -> Path:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` for one finished run."""
    from ..train.synthetic import epoch_manifest
    from .fairness import group_section, to_html, to_markdown
    from .selection import selection_section

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "metrics.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    real = Manifest.read(run_dir / "data" / "real.parquet")
    train = Manifest.read(run_dir / "data" / "train.parquet")
    pdir = run_dir / "plots"
    figs = _figures(run_dir, summary, real, epoch_manifest(train.split("train")), pdir, samples_per_class, seed)
    header, rows = metrics_rows([summary])
    intro = _intro(run_dir, summary, cfg, real)
    sel_intro, sel_tables, sel_png = selection_section(run_dir)
    if sel_png is not None:
        figs.insert(0, ("Selection: kept (left) vs rejected (right) candidates", sel_png))
    g_blocks, g_figs = group_section(run_dir, summary, cfg, real, train, pdir)
    cfg_text = yaml.safe_dump(cfg, sort_keys=False)

    md = ["# synaug report: " + summary["name"], "", *[f"- {x}" for x in intro], "",
          "## Test metrics (%)", "", _md_table(header, rows), ""]
    for title, h, r in sel_tables:
        md += [f"## {title}", "", *[f"- {x}" for x in sel_intro], "", _md_table(h, r), ""]
    for title, p in figs:
        md += [f"## {title}", "", f"![{title}]({p.relative_to(run_dir).as_posix()})", ""]
    md += to_markdown(g_blocks, g_figs, run_dir)
    md += ["## Resolved config", "", "```yaml", cfg_text.rstrip(), "```", ""]
    write_text_atomic(run_dir / "report.md", "\n".join(md))

    body = [f"<h1>synaug report: {html.escape(summary['name'])}</h1>",
            '<div class="note">' + "<br>".join(html.escape(x.replace("**", "")) for x in intro) + "</div>",
            "<h2>Test metrics (%)</h2>", _html_table(header, rows)]
    for title, h, r in sel_tables:
        body += [f"<h2>{html.escape(title)}</h2>", "<p>" + "<br>".join(html.escape(x) for x in sel_intro) + "</p>",
                 _html_table(h, r)]
    for title, p in figs:
        body += [f"<h2>{html.escape(title)}</h2>", _img(p)]
    body += to_html(g_blocks, g_figs)
    body += ["<h2>Resolved config</h2>", f"<pre>{html.escape(cfg_text)}</pre>"]
    _write_html(run_dir / "report.html", summary["name"], body)
    return run_dir / "report.html"


def _figures(run_dir: Path, summary: dict, real: Manifest, tr: Manifest, pdir: Path,
             samples_per_class: int, seed: int) -> list[tuple[str, Path]]:
    """The run's plots (counts, class x group cells, samples, per-class accuracy, confusion matrices)."""
    figs: list[tuple[str, Path]] = []
    real_part = tr.with_source("real").class_counts(None)
    syn_part = tr.with_source("synthetic").class_counts(None)
    figs.append(("Training set before / after uniformization",
                 plots.counts_before_after(real.classes, real_part, syn_part, pdir / "counts.png")))
    if real.groups:
        figs.append(("Real training images per class x group",
                     plots.cell_heatmap(real.cell_counts("train"), real.classes, real.groups,
                                        pdir / "cells_before.png", "real train, class x group")))
        figs.append(("Training images per class x group after uniformization",
                     plots.cell_heatmap(tr.cell_counts(None), real.classes, real.groups,
                                        pdir / "cells_after.png", "train after uniformization")))
    if (tr.df["source"] == "synthetic").any() and real.num_classes <= 20:
        rng = np.random.RandomState(seed)
        pick = {}
        for src in ("real", "synthetic"):
            part = tr.with_source(src)
            paths = part.abspaths()
            lab = part.df["label"].to_numpy()
            pick[src] = {c: [paths[i] for i in rng.permutation(np.flatnonzero(lab == c))[:samples_per_class]]
                         for c in range(real.num_classes)}
        figs.append(("Real (left) vs synthetic (right) samples",
                     plots.sample_grid(real.classes, pick["real"], pick["synthetic"], pdir / "samples.png",
                                       samples_per_class)))
    acc = {}
    for stage, res in summary["results"].items():
        pcs = res["per_class"]
        acc[stage] = np.array([np.nan if pcs.get(c) is None else pcs[c] for c in real.classes], dtype=float)
    figs.append(("Per-class test accuracy",
                 plots.per_class_accuracy(real.classes, np.asarray(summary["real_train_counts"]), acc,
                                          pdir / "per_class.png")))
    for stage in summary["results"]:
        cm = run_dir / "eval" / ("train" if stage == "trained" else "finetune") / "confusion.png"
        if cm.is_file():
            figs.append((f"Confusion matrix ({stage})", cm))
    return figs


def _intro(run_dir: Path, summary: dict, cfg: dict, real: Manifest) -> list[str]:
    """The report's opening lines: what ran, what was added, by which generator, how it trained."""
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in summary.get("timings_s", {}).items())
    intro = [f"Run **{summary['name']}** — {cfg.get('description', '')}".rstrip(" —"),
             *random_weights_warnings(summary),
             f"Synthetic images added: {summary['synthetic']}. Generator: {summary.get('generator', '')}.",
             f"Real training counts per class: {named_counts(real.classes, summary['real_train_counts'])}; "
             f"after uniformization: {named_counts(real.classes, summary['train_counts_after'])}.",
             "Many/medium/few buckets use the real training counts before uniformization "
             "(>100 / 20-100 / <20). The test split was used only for this evaluation.",
             f"Stage wall times (when each stage last ran): {timing or 'not recorded'}"
             + (f"; this invocation ran {', '.join(summary['ran_s'])}." if summary.get("ran_s") else
                "; this invocation ran none (all cached).")]
    return (intro + _how_trained(run_dir / "train" / "summary.json")
            + _how_finetuned(run_dir / "finetune" / "finetune.json"))


def _write_html(path: Path, title: str, body: list[str]) -> None:
    write_text_atomic(path, f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                            f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>")


def _checked_labels(run_dirs: list[Path], labels: Sequence[str] | None) -> list[str]:
    """One distinct label per run folder, each folder given once (else a one-line error)."""
    from ..errors import SynaugError

    seen = set()
    for r in run_dirs:
        if r.resolve() in seen:
            raise SynaugError(f"run folder {r} is given twice")
        seen.add(r.resolve())
    labels = list(labels) if labels is not None else run_labels(run_dirs)
    if len(labels) != len(run_dirs):
        raise SynaugError(f"{len(labels)} labels for {len(run_dirs)} runs: give one label per run")
    if len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise SynaugError(f"label {dup!r} is given to two runs: labels must be distinct")
    return labels


def _classes_by_name(run_dirs: list[Path], summaries: list[dict]) -> tuple[list[str], dict[str, list[int]]]:
    """Class names in the first run's order, then any class only later runs have; per class, the
    real training count of each run that has it."""
    classes: list[str] = []
    counts: dict[str, list[int]] = {}
    for r, s in zip(run_dirs, summaries):
        names = Manifest.read(r / "data" / "real.parquet").classes
        for name, n in zip(names, s["real_train_counts"]):
            if name not in counts:
                classes.append(name)
                counts[name] = []
            counts[name].append(int(n))
    return classes, counts


def compare(run_dirs: Sequence[str | Path], out_dir: str | Path, title: str = "comparison",
            notes: Sequence[str] = (), labels: Sequence[str] | None = None,
            groups: Sequence[str] | None = None) -> Path:
    """Comparison table (every stage of every run) and per-class bars of each run's final model.

    Runs are keyed by their folder: ``labels`` name them (default: :func:`run_labels`, the
    folder names made distinct), so runs of one config (same ``name``, e.g. a ``--set``
    sweep) stay apart. Per-class numbers are matched by class *name*: a class only some runs
    have is empty for the others, never another class's number. ``groups`` (one name per run,
    e.g. the config of each seed of a sweep) adds a ``mean ± std`` row per group and stage.
    """
    out_dir = Path(out_dir)
    run_dirs = [Path(r) for r in run_dirs]
    labels = _checked_labels(run_dirs, labels)
    summaries = [json.loads((r / "metrics.json").read_text()) for r in run_dirs]
    header, rows = metrics_rows(summaries, labels)
    if groups is not None:
        rows += mean_std_rows(summaries, groups, header[2:])
    notes = [*notes, *[f"{lab}: {w}" for lab, s in zip(labels, summaries) for w in random_weights_warnings(s)]]
    gens = [[lab, s["name"], str(r), s.get("generator", ""), str(s["synthetic"])]
            for lab, s, r in zip(labels, summaries, run_dirs)]
    gen_header = ["run", "config name", "folder", "generator", "synthetic images"]
    classes, counts = _classes_by_name(run_dirs, summaries)
    per = {lab: _per_class(s) for lab, s in zip(labels, summaries)}
    acc = {lab: np.array([per[lab].get(c, np.nan) for c in classes], dtype=float) for lab in labels}
    ref = np.array([counts[c][0] for c in classes])
    same_counts = all(len(set(v)) == 1 and len(v) == len(summaries) for v in counts.values())
    bars = plots.per_class_accuracy(classes, ref, acc, out_dir / "plots" / "per_class_compare.png",
                                    show_counts=same_counts)
    pc_header = ["class", *[f"{lab} (%)" for lab in labels]]
    pc_rows = [[c, *[_pct(per[lab].get(c)) if c in per[lab] else "-" for lab in labels]] for c in classes]
    note = ("Per-class accuracy of each run's final stage, matched by class name"
            + ("" if same_counts else "; the runs' real training counts differ (bars sorted by the first "
               "run that has the class)") + ". '-': the run has no such class.")
    md = [f"# {title}", "", *[f"- {n}" for n in notes], "", "## Test metrics (%)", "",
          _md_table(header, rows), "", "## What produced the synthetic images", "",
          _md_table(gen_header, gens), "", "## Per-class test accuracy", "", note, "",
          _md_table(pc_header, pc_rows), "",
          f"![per-class]({bars.relative_to(out_dir).as_posix()})", ""]
    write_text_atomic(out_dir / "comparison.md", "\n".join(md))
    body = [f"<h1>{html.escape(title)}</h1>"]
    if notes:
        body.append('<div class="note">' + "<br>".join(html.escape(n) for n in notes) + "</div>")
    body += ["<h2>Test metrics (%)</h2>", _html_table(header, rows),
             "<h2>What produced the synthetic images</h2>", _html_table(gen_header, gens),
             "<h2>Per-class test accuracy</h2>", f"<p>{html.escape(note)}</p>", _img(bars),
             _html_table(pc_header, pc_rows)]
    _write_html(out_dir / "comparison.html", title, body)
    return out_dir / "comparison.html"
