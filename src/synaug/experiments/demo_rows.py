"""More rows beside ``synaug demo``'s four, paired by seed: the paper recipe (``sd14``) or the
``synaug-plus`` preset (``plus``) with options of the gap experiment (:data:`synaug.experiments.gap.OPTIONS`)
on top, run into each seed's demo folder and compared there.

The gap experiment (:mod:`synaug.experiments.gap`) needs its own fixed rows and every option at
every seed before its section renders (~6 h from nothing); this one measures a few new rows on a
host where only the demo has run: ``synaug demo --seed S --out runs/demo-sS`` gives the CE, paper,
preset and held-out-real rows of seed ``S`` (the same configurations as the gap experiment's, run
with ``amp: auto``: fp32 on a CPU without bf16 units), and a row ``plus+select_rotate`` is the demo's
``synaug-plus`` config with that option's overrides, in ``runs/demo-sS/plus+select_rotate``. Same
long-tailed draw, training seed and image draw as the demo's rows of that seed: differences are paired.

Every run is also scored on its seed's recipe-validation set (:mod:`synaug.experiments.recipe_val`:
2,000 held-out real images, the same for every row of a seed), and the table names the row that
set prefers among the paper recipe, the preset and the new rows: the choice is made there, never on test.

Driver: ``benchmarks/demo_rows.py``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from ..demo import REFERENCE_EPOCHS
from ..errors import SynaugError
from . import recipe_val, records
from .common import compare, fmt, mean_std, shot, top1
from .gap import FINETUNE_ONLY, GOAL, OPTIONS, effect, gap_closed, overlay, preset_options, val_score

BASES = {"sd14": "synaug-sd14", "plus": "synaug-plus"}
FIXED = {"ce": "CE (long-tailed real data)", "synaug-sd14": "paper recipe, SD 1.4 images",
         "synaug-plus": "synaug-plus preset", "synaug-pool": "paper recipe, held-out REAL images (reference)"}


def parse(row: str) -> tuple[str, list[str]]:
    """``plus+select_rotate`` -> (``synaug-plus``, [``select_rotate``])."""
    base, *opts = row.split("+")
    if base not in BASES or not opts or any(o not in OPTIONS for o in opts):
        raise ValueError(f"row {row!r}: write BASE+OPTION[+OPTION], BASE one of {', '.join(BASES)}, "
                         f"OPTION one of {', '.join(OPTIONS)}")
    return BASES[base], opts


def row_config(row: str, seed: int, epochs: int = REFERENCE_EPOCHS) -> dict:
    """The demo's config (at ``epochs``) of the row's base at ``seed`` with the options' overrides."""
    from ..demo import variants
    from ..runconfig import deep_merge

    base, opts = parse(row)
    cfg = deep_merge(copy.deepcopy(variants(epochs, False, seed)[base]), overlay("small", opts))
    cfg.update({"name": row, "description": f"{FIXED[base]} + " + ", ".join(OPTIONS[o][1] for o in opts)})
    return cfg


def run_row(row: str, seed: int, demo_dir: Path, epochs: int = REFERENCE_EPOCHS) -> dict:
    """Run (or resume) one row of one seed in ``demo_dir`` (cached like any ``synaug run``)."""
    from ..run import load_run_config, run
    from .common import seed_from

    if not (demo_dir / "synaug-sd14" / "metrics.json").is_file():
        raise SynaugError(f"{demo_dir}: no finished demo here (run: synaug demo --seed {seed} --epochs {epochs} "
                          f"--out {demo_dir})")
    src = training_source(row, demo_dir)
    if src is not None:   # only step 3 differs: its training is that row's (the stage keys re-check it)
        seed_from(src, demo_dir / row)
    return run(load_run_config(None, base=row_config(row, seed, epochs)), demo_dir / row)


def trained_twin(row: str) -> str | None:
    """The row whose training ``row`` shares: ``X+ft_blocks`` trains as ``X`` (an option of
    :data:`~synaug.experiments.gap.FINETUNE_ONLY` only changes step 3); None for a row without one."""
    base, opts = parse(row)
    rest = [o for o in opts if o not in FINETUNE_ONLY]
    if len(rest) == len(opts):
        return None
    return "+".join([row.split("+")[0], *rest]) if rest else base


def training_source(row: str, demo_dir: Path) -> Path | None:
    """A trained run in ``demo_dir`` whose training ``row`` shares: its :func:`trained_twin`, else a
    sibling row that differs from ``row`` only in step-3 options (``X+ft_blocks`` for ``X+ft_stage``),
    else the demo's preset run when ``row`` is the preset's training with another step 3."""
    twin = trained_twin(row)
    if twin is None:
        return None
    base, opts = parse(row)
    same = lambda o: sorted(x for x in o if x not in FINETUNE_ONLY)  # noqa: E731
    names = [twin] + sorted(d.name for d in demo_dir.iterdir() if d.is_dir() and "+" in d.name and d.name != row)
    for n in names:
        try:
            ok = n == twin or (parse(n)[0] == base and same(parse(n)[1]) == same(opts))
        except ValueError:   # a folder that is not a row
            continue
        if ok and (demo_dir / n / "stages" / "train.json").is_file():
            return demo_dir / n
    preset = demo_dir / BASES["plus"]
    if base == BASES["sd14"] and same(opts) == same(preset_options()) and (preset / "stages" / "train.json").is_file():
        return preset
    return None


def collect(run_dir: Path) -> dict:
    """Top-1, shots, validation score, recipe-validation score (NaN for a run that trained on its
    images or has no held-out pool) and wall time (sum of the stages) of a finished run."""
    m = json.loads((run_dir / "metrics.json").read_text())
    rv = (recipe_val.fields(run_dir) if (run_dir / "data" / "heldout.parquet").is_file()
          else {"rval": float("nan"), "rval_set": None})
    return {"top1": top1(m), **{b: shot(m, b) for b in ("many", "medium", "few")},
            "val": val_score(run_dir), "rval": rv["rval"], "rval_set": rv["rval_set"],
            "minutes": sum(m["timings_s"].values()) / 60}


def check_paired(got: dict, seeds: list[int]) -> None:
    """Every row of a seed was scored on the same recipe-validation images (else the ranking compares
    different sets: an error, not a table)."""
    for s in seeds:
        sets = {g[s]["rval_set"] for g in got.values() if s in g and g[s]["rval_set"]}
        if len(sets) > 1:
            raise SynaugError(f"seed {s}: the rows' recipe-validation sets differ ({', '.join(sorted(sets))}); "
                              "their held-out pools or seeds are not the same")


def choice(got: dict, seeds: list[int], rows: list[str]) -> str | None:
    """The row with the highest mean recipe-validation score among the paper recipe, the preset and
    ``rows`` (None when any of them has no score)."""
    cands = ["synaug-sd14", "synaug-plus", *rows]
    means = {n: mean_std([got[n][s]["rval"] for s in seeds])[0] for n in cands}
    if any(v != v for v in means.values()):   # NaN: a row with no score at any seed
        return None
    return max(cands, key=lambda n: means[n])


def config_of(name: str, seed: int, epochs: int = REFERENCE_EPOCHS) -> dict | None:
    """The configuration a demo row (fixed or ``BASE+OPTION``) runs at ``seed``; None for no row."""
    from ..demo import variants

    if name in FIXED:
        return variants(epochs, False, seed)[name]
    try:
        return row_config(name, seed, epochs)
    except ValueError:
        return None


def config_digest(name: str, seed: int, epochs: int = REFERENCE_EPOCHS) -> str | None:
    """:func:`~synaug.experiments.records.config_sha` of the resolved configuration the row runs today."""
    return _today(name, seed, epochs)[0]


def today_amp(name: str, seed: int, epochs: int = REFERENCE_EPOCHS) -> str | None:
    """The precision the row's training would use on this machine (its ``train.amp`` resolved for the
    CPU: ``auto`` is fp32 on CPUs; ``$SYNAUG_CPU_BF16=1`` opts in to bf16)."""
    return _today(name, seed, epochs)[1]


def _today(name: str, seed: int, epochs: int = REFERENCE_EPOCHS) -> tuple[str | None, str | None, str]:
    """``(configuration digest, precision, why)`` of the row as it runs today, from one config load."""
    import torch

    from ..config import dump
    from ..run import load_run_config
    from ..train.precision import resolve_amp

    raw = config_of(name, seed, epochs)
    if raw is None:
        return None, None, ""
    cfg = load_run_config(None, base=raw)
    amp, why = resolve_amp(cfg.train.amp, torch.device("cpu"))
    return records.config_sha(json.loads(json.dumps(dump(cfg)))), amp, why


def record_runs(demo_dirs: dict[int, Path], rows: list[str], epochs: int = REFERENCE_EPOCHS) -> list[dict]:
    """A record (:mod:`synaug.experiments.records`) of every finished run folder of the fixed rows and
    ``rows``, addressed by the configuration it ran with (its ``config.yaml``), not by today's."""
    out = []
    for n in list(FIXED) + rows:
        for s, d in sorted(demo_dirs.items()):
            if (d / n / "metrics.json").is_file():
                sha = records.folder_sha(d / n)
                label = n if sha == config_digest(n, s, epochs) else f"{n} (an earlier configuration)"
                out.append({"config_sha": sha, "amp": records.folder_amp(d / n), "seed": s, "row": label,
                            "metrics": collect(d / n),
                            "provenance": records.run_provenance(d / n)})
    return out


def _finished(d: Path) -> dict[Path, tuple[str, str]]:
    """``{run folder: (configuration digest, precision)}`` of the finished runs in a demo folder."""
    if not d.is_dir():
        return {}
    runs = [r for r in sorted(d.iterdir()) if (r / "metrics.json").is_file() and (r / "config.yaml").is_file()]
    return {r: (records.folder_sha(r), records.folder_amp(r)) for r in runs}


def gather(demo_dirs: dict[int, Path], names: list[str], recs: list[dict] | None = None,
           epochs: int = REFERENCE_EPOCHS):
    """``{row: {seed: metrics}}``: each row at each seed is the finished run whose configuration digest
    is the one the row has today, trained in the precision the row would use here — a run folder of
    the seed's demo folder (any name), else a record. Also the records used and a line for each folder
    of the row's name made with another configuration or precision."""
    index = records.by_key(recs or [])
    got: dict[str, dict] = {n: {} for n in names}
    used, dropped = [], []
    for s, d in demo_dirs.items():
        folders, taken = _finished(d), set()
        wants = {n: _today(n, s, epochs)[:2] for n in names}   # one config load per row and seed
        for n in names:
            want = wants[n]
            same = [r for r, k in folders.items() if k == want]
            run = d / n if d / n in same else (same[-1] if same else None)   # its own folder first
            if run is not None:
                taken.add(run)
                got[n][s] = collect(run)
            elif want in index:
                got[n][s] = index[want]["metrics"]
                used.append(index[want])
        dropped += [f"{d / n} ({_why_not(folders[d / n], wants[n], n)})" for n in names
                    if d / n in folders and d / n not in taken]
    return got, used, dropped


def _why_not(have: tuple[str, str], want: tuple[str, str], name: str) -> str:
    if have[0] != want[0]:
        return f"made with another configuration than today's {name}"
    return f"trained in {_AMP.get(have[1], have[1])}, where {name} trains in {_AMP.get(want[1], want[1])} here"


def _precision_line(seed: int, epochs: int) -> str:
    _, amp, why = _today("ce", seed, epochs)
    return f"{_AMP.get(amp, amp)} ({why})"


_AMP = {"off": "fp32", "bf16": "bf16", "bf16-emulated": "emulated bf16", "fp16": "fp16"}


def _record_lines(used: list[dict], dropped: list[str]) -> list[str]:
    md = []
    if used:
        by = {}
        for r in used:
            p = r.get("provenance", {})
            made = p.get("stages", {}).get("train", "unknown")
            made = made if made != "unknown" else f"unknown (recorded at {p.get('commit')})"
            by.setdefault((made, p.get("cpu"), p.get("date")), set()).add(r["seed"])
        md.append("Runs taken from records (no folder of their configuration on this machine; same configuration "
                  "digest as today's row): "
                  + "; ".join(f"seed{'s' if len(v) > 1 else ''} {', '.join(map(str, sorted(v)))} — trained by commit "
                              f"{c}, {cpu}, recorded {d}" for (c, cpu, d), v in sorted(by.items(), key=lambda x: min(x[1])))
                  + ".")
    if dropped:
        md.append("Run folders left out: " + "; ".join(dropped) + ".")
    return md


def table(demo_dirs: dict[int, Path], rows: list[str], recs: list[dict] | None = None,
          epochs: int = REFERENCE_EPOCHS) -> list[str]:
    """The markdown table and verdict lines: fixed rows, then ``rows``, paired by seed, every row at
    ``epochs`` (a run whose folder is absent may come from ``recs``, see :func:`gather`)."""
    names = list(FIXED) + rows
    got, used, dropped = gather(demo_dirs, names, recs, epochs)
    seeds = sorted(s for s in demo_dirs if all(s in got[n] for n in names))
    if not seeds:
        return ["(no seed has every row finished)", *_record_lines(used, dropped)]
    used = [r for r in used if r["seed"] in seeds]
    check_paired(got, seeds)
    col = lambda n, k: [got[n][s][k] for s in seeds]  # noqa: E731
    ce, real = col("ce", "top1"), col("synaug-pool", "top1")
    md = [f"Seeds {', '.join(map(str, seeds))} (each row at every one of them). Synthetic rows: Stable Diffusion 1.4 "
          "images of the CIFAR-10 classes (CIFAKE, the demo's pool); the reference row: held-out real CIFAR-10 "
          f"training images. Training precision of every row: {_precision_line(seeds[0], epochs)}.",
          *_record_lines(used, dropped), "",
          "| row | top-1 (%) | many | medium | few | val. mean-class (%) | recipe val. (%) | wall time (min) | "
          "gap closed (%) | top-1 − paper | top-1 − preset |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        t = col(n, "top1")
        diffs = [_diff(t, col(ref, "top1")) if n not in (ref, "ce", "synaug-pool") else ""
                 for ref in ("synaug-sd14", "synaug-plus")]
        gap = "–" if n == "ce" else fmt(gap_closed(t, ce, real), 1)
        md.append(f"| {FIXED.get(n, n)} | {fmt(t)} | " + " | ".join(fmt(col(n, b)) for b in ("many", "medium", "few"))
                  + f" | {fmt(col(n, 'val'))} | {fmt(col(n, 'rval'))} | {fmt(col(n, 'minutes'), 1)} | {gap} | "
                  f"{diffs[0]} | {diffs[1]} |")
    md += ["", *_choice_lines(got, seeds, rows, ce, real)]
    for n in ["synaug-plus", *rows]:
        for ref in ("synaug-sd14", "synaug-plus")[:1 if n == "synaug-plus" else 2]:
            d = [a - b for a, b in zip(col(n, "top1"), col(ref, "top1"))]
            md.append(f"- `{n}` vs {FIXED[ref]}: {effect(d)} — "
                      f"{compare(FIXED[ref], col(ref, 'top1'), n, col(n, 'top1'), 'top-1')[1]}.")
        g = gap_closed(col(n, "top1"), ce, real)
        above = sum(a > b for a, b in zip(col(n, "top1"), col("synaug-sd14", "top1")))
        ok = mean_std(g)[0] >= GOAL and above == len(seeds)
        md.append(f"- `{n}` against the issue's goal (≥ {GOAL:.0f} % of the gap, above the paper recipe in every "
                  f"seed): **{'met' if ok else 'NOT met'}** — {fmt(g, 1)} % closed (seed by seed "
                  f"{', '.join(f'{x:.1f}' for x in g)}), above the paper recipe in {above}/{len(seeds)} seeds.")
    return md


SECTION = "## The shipped recipe beside the demo — synaug-plus against the paper recipe, paired by seed"


def section(lines: list[str], command: str, note: str = "", title: str = "", epochs: int = REFERENCE_EPOCHS) -> str:
    """A results-file text (:mod:`synaug.experiments.results_file`) whose one section is the table
    ``lines``: merged into ``docs/results.md`` by ``benchmarks/demo_rows.py --results``. ``title``:
    the section's heading (default :data:`SECTION`; another title adds a section beside it, e.g.
    the same rows on other seeds or another CPU)."""
    from ..provenance import provenance
    from .results_file import header

    prov = provenance()
    return "\n".join([
        *header("benchmarks/demo_rows.py", command, f"commit {prov['commit']}; {prov['cpu']}; the demo's configuration "
                f"(CIFAR-10-LT IF 100, head 400, ResNet-32, {epochs} epochs, full test set)"), "",
        _heading(title), "", *([note, ""] if note else []), *lines, "", ""])


def _heading(title: str) -> str:
    return SECTION if not title else title if title.startswith("## ") else f"## {title}"


def _choice_lines(got, seeds, rows, ce, real) -> list[str]:
    pick = choice(got, seeds, rows)
    head = (f"- Recipe validation ({recipe_val.PER_CLASS} held-out real images per class per seed, the same for "
            "every row of a seed; the held-out-real reference trained on that pool: no score): ")
    if pick is None:
        return [head + "a candidate row has no score, no choice made."]
    t = [got[pick][s]["top1"] for s in seeds]
    return [head + f"prefers **{FIXED.get(pick, pick)}** ({fmt([got[pick][s]['rval'] for s in seeds])} %); "
            f"on test it closes {fmt(gap_closed(t, ce, real), 1)} % of the gap ({fmt(t)} top-1).",
            agreement(got, seeds)]


def agreement(got: dict, seeds: list[int]) -> str:
    """How well each validation score tracks test top-1 over every synthetic run of the table
    (Pearson r over rows x seeds; CE and the held-out-real reference left out)."""
    import numpy as np

    runs = [got[n][s] for n in got if n not in ("ce", "synaug-pool") for s in seeds]
    t = np.array([r["top1"] for r in runs])
    r = {k: float(np.corrcoef(t, [x[k] for x in runs])[0, 1]) if len(runs) > 2 else float("nan")
         for k in ("rval", "val")}
    return (f"- Agreement with test top-1 over the table's {len(runs)} synthetic runs (rows x seeds): recipe "
            f"validation r = {r['rval']:.2f}, the runs' own validation split r = {r['val']:.2f} (Pearson).")


def _diff(a: list[float], b: list[float]) -> str:
    d = [x - y for x, y in zip(a, b)]
    return f"{fmt(d)} ({sum(x > 0 for x in d)}/{len(d)})"


__all__ = ["parse", "row_config", "run_row", "trained_twin", "training_source", "collect", "check_paired", "choice",
           "agreement", "config_of", "record_runs", "gather", "table", "section", "SECTION"]
