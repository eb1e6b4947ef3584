#!/usr/bin/env python
"""Reproduce the paper's findings at CPU scale, with several seeds, and write docs/results.md.

A thin driver over :data:`synaug.experiments.EXPERIMENTS` (one module per paper experiment).
Every run is ``synaug.run.run`` on a config built from ``configs/*-cpu.yaml`` (the ``small``
scale is exactly those files; ``tiny`` shrinks them to a smoke test), so each run is cached,
resumable after a kill, and writes its own report under ``--out``.

    .venv/bin/python benchmarks/reproduce_cpu.py --scale small     # each experiment's own seeds
    .venv/bin/python benchmarks/reproduce_cpu.py --scale tiny --seeds 0 --only fig5 probe \\
        --out /tmp/rep --results /tmp/rep/results.md

Findings in the results file are computed from the measured numbers; nothing is hard-coded
except the paper's own values (each experiment module's ``PAPER``).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEEDS = (0, 1, 2)


def _seed_summary(seeds: dict[str, list[int]]) -> str:
    by: dict[tuple, list[str]] = {}
    for name, ss in seeds.items():
        by.setdefault(tuple(ss), []).append(name)
    if len(by) == 1:
        return ", ".join(map(str, next(iter(by))))
    return "; ".join(f"{', '.join(map(str, ss))} for {', '.join(names)}" for ss, names in by.items())


def write_results(path: Path, sections: dict, setups: list[str], scale: str, seeds: dict[str, list[int]],
                  times: dict, total: float, argv: list[str], out: Path, old: str | None = None) -> None:
    """Write the results file; with ``old`` (``--merge``), only this invocation's sections replace
    theirs in it (:func:`synaug.experiments.results_file.merge`)."""
    import torch

    from synaug.experiments import experiment
    from synaug.experiments.results_file import header
    from synaug.io import write_text_atomic

    from synaug.provenance import commit as code_commit

    commit = code_commit()
    lines = [
        "# SYNAuG at CPU scale: measured results", "",
        *header("benchmarks/reproduce_cpu.py", f"python benchmarks/reproduce_cpu.py {' '.join(argv)}",
                f"commit {commit}; scale **{scale}**"
                + (" (a smoke test: 1 epoch, a few hundred images — the numbers mean nothing)" if scale == "tiny" else "")
                + f"; seeds {_seed_summary(seeds)} (mean ± sample std over seeds; paired across the rows of an "
                "experiment: the same long-tailed and synthetic draw per seed)."),
        f"- Machine: {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}. Total wall time of this invocation: {total / 60:.1f} min "
        "(runs cached by an earlier invocation count only their cache check here; per-experiment times below are "
        "the runs' own compute times, summed over every invocation: a later invocation that finds a run cached adds "
        "only its check of a few seconds).", "",
        "**What made the synthetic images.** Every SYNAuG row of the CIFAR-10 experiments uses real Stable Diffusion "
        "1.4 outputs: the 49,080 generated images of the ten CIFAR-10 classes in CIFAKE (`../shared/data/cifake/"
        "sd14.tar`, dataset `shared-sd14`). No diffusion weights exist on this machine, so the images are taken from "
        "that pre-generated pool (without replacement, per class) instead of being generated here; their prompts "
        "are unknown. The paper's web-crawled baseline is stood in for by held-out real CIFAR-10 training images. "
        "Each section says which pool its synthetic rows came from. The numbers are CIFAR-10 at CPU scale, not the "
        "paper's CIFAR-100 at 200 epochs: the paper's values stand beside ours to compare the direction of each "
        "finding.", "",
        "## Setup", "", *setups, ""]
    for name, body in sections.items():
        lines += [f"## {experiment(name).TITLE}", "", *body, "",
                  f"Wall time: {times[name]:.0f} s for {len(seeds[name])} seed(s) ({times[name] / 60:.1f} min; runs shared "
                  "with another experiment are counted in each).", ""]
    lines += ["## Where the runs are", "",
              f"Each run folder (config, manifests, checkpoints, metrics, report.html) is under "
              f"`{out}/{scale}/seed<N>/<run>/`.", ""]
    text = "\n".join(lines)
    if old is not None:
        from synaug.experiments.results_file import merge

        text = merge(old, text)
    write_text_atomic(path, text)


def main(argv: list[str] | None = None) -> int:
    from synaug.threads import configure

    configure()  # the CLI's thread count and OpenMP wait policy, set before torch starts
    from synaug.experiments import ALIASES, EXPERIMENTS, OPTIONAL, experiment, run_specs
    from synaug.experiments.common import SCALES, Context, Pending, Runner

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds of every experiment (default: each experiment's own, SEEDS in its module, "
                        "else 0 1 2)")
    p.add_argument("--scale", choices=SCALES, default="small")
    p.add_argument("--only", nargs="+", default=None, metavar="EXP",
                   help=f"experiments to run: {', '.join(EXPERIMENTS)} (aliases: {', '.join(ALIASES)}); "
                        f"not run unless named: {', '.join(OPTIONAL)}")
    p.add_argument("--out", default=str(ROOT / "runs" / "reproduce"), help="folder for all run folders")
    p.add_argument("--results", default=str(ROOT / "docs" / "results.md"),
                   help="markdown file to write (plots go next to it)")
    p.add_argument("--merge", action="store_true",
                   help="update only the sections of the experiments run in an existing --results file (the "
                        "others and the header kept; one 'Updated by' line added)")
    p.add_argument("--cached-only", action="store_true",
                   help="run nothing: report from the finished runs; an experiment that can mark rows pending "
                        "(gap) does so, the others' sections are left out (kept with --merge)")
    args = p.parse_args(argv)
    only = EXPERIMENTS if not args.only else tuple(dict.fromkeys(ALIASES.get(e, e) for e in args.only))
    bad = [e for e in only if e not in EXPERIMENTS + OPTIONAL]
    if bad:
        p.error(f"unknown experiment {bad[0]!r} (choose from {', '.join(EXPERIMENTS + OPTIONAL)} or "
                f"{', '.join(ALIASES)})")
    out, results = Path(args.out), Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    mods = {name: experiment(name) for name in EXPERIMENTS + OPTIONAL if name in only}
    specs = run_specs(args.scale, tuple(mods))
    reuse = {k: v for m in mods.values() for k, v in getattr(m, "REUSE", {}).items() if k in specs}
    runner_of: dict[int, Runner] = {}   # one per seed, shared by the experiments that use it
    sections, times, setups, seeds_of = {}, {}, [], {}
    for name, mod in mods.items():
        print(f"\n##### {name}", flush=True)
        seeds_of[name] = list(args.seeds if args.seeds is not None else getattr(mod, "SEEDS", DEFAULT_SEEDS))
        runners = [runner_of.setdefault(s, Runner(out, args.scale, s, specs, reuse, args.cached_only))
                   for s in seeds_of[name]]
        ctx = Context(args.scale, seeds_of[name], results.parent, specs)
        for line in (mod.setup(args.scale) if hasattr(mod, "setup") else []):
            if line not in setups:
                setups.append(line)
        try:
            sections[name], extra = mod.analyse(runners, ctx)
        except Pending as e:  # --cached-only: this experiment cannot be reported yet
            print(f"{name}: not reported ({e})", flush=True)
            seeds_of.pop(name)
            continue
        times[name] = extra + sum(r.seconds(n) for r in runners for n in dict.fromkeys(mod.runs(args.scale)))
    total = time.perf_counter() - t_start
    old = results.read_text() if args.merge and results.is_file() else None
    write_results(results, sections, setups, args.scale, seeds_of, times, total, argv, out, old)
    print(f"\nwrote {results} ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
