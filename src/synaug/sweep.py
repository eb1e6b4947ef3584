"""``synaug sweep CONFIG... --seeds 0 1 2``: many small runs at once, gathered into one report.

One ResNet-32 run uses a small fraction of a modern GPU (and of a many-core CPU), so a sweep
over configs x seeds runs several ``synaug run`` processes side by side, ``--per-device`` of
them on every device, each in its own run folder ``OUT/<config>-s<seed>`` (cached and
resumable like any ``synaug run``: rerunning the sweep continues where it stopped). Then the
finished runs are compared in ``OUT/comparison.{html,md}``.

Device assignment: every run gets one device. A CUDA device is handed to the run by
``CUDA_VISIBLE_DEVICES`` (inside the run it is ``cuda:0``, which ``device: auto`` picks); on
the CPU the cores are split between the concurrent runs (``SYNAUG_THREADS`` = cores / runs at
once, unless set). Run seeds: ``--set seed=S`` on the run config, which seeds generation,
training and fine-tuning unless a stage sets its own seed.

Outputs: ``OUT/<run>/`` (each run), ``OUT/logs/<run>.log`` (its output), ``OUT/sweep.json`` (runs,
devices, exit codes, wall times), ``OUT/comparison.{html,md}`` (a row per run, and per config
and stage the mean ± std over its seeds; the same table is printed).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import SynaugError
from .io import write_json_atomic


@dataclass
class Job:
    """One run of a sweep."""

    name: str                      # run folder name (and the run's ``name``)
    config: str                    # run config file
    seed: int
    overrides: list[str]           # --set values, the sweep's own last
    device: Optional[str] = None   # assigned when started
    returncode: Optional[int] = None
    started: Optional[float] = None
    ended: Optional[float] = None
    log: Optional[str] = None
    extra: dict = field(default_factory=dict)
    group: str = ""                # the config's name in the comparison (its seeds' mean ± std)


def plan_jobs(configs: Sequence[str], seeds: Sequence[int], overrides: Sequence[str] = ()) -> list[Job]:
    """configs x seeds, named ``<config stem>-s<seed>`` (made unique when two stems clash)."""
    if not configs:
        raise SynaugError("sweep: give at least one run config")
    if not seeds:
        raise SynaugError("sweep: give at least one seed (--seeds 0 1 2)")
    if len(set(seeds)) != len(seeds):
        raise SynaugError(f"sweep: repeated seeds in {list(seeds)}")
    stems: dict[str, int] = {}
    jobs = []
    for c in configs:
        stem = Path(c).stem
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:
            stem = f"{stem}-{stems[stem]}"
        for s in seeds:
            name = f"{stem}-s{s}"
            jobs.append(Job(name, str(c), int(s), [*overrides, f"seed={s}", f"name={name}"], group=stem))
    return jobs


def default_devices() -> list[str]:
    """Every visible CUDA device, else the CPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return ["cpu"]


def device_env(device: str, concurrent_on_cpu: int, base: Optional[dict] = None) -> dict:
    """The environment a run on ``device`` starts with."""
    env = dict(os.environ if base is None else base)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # each run is a single process
        env.pop(k, None)
    if device.startswith("cuda"):
        index = device.split(":", 1)[1] if ":" in device else "0"
        visible = env.get("CUDA_VISIBLE_DEVICES")
        if visible:  # index into what the sweep itself was given
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            index = ids[int(index)] if int(index) < len(ids) else index
        env["CUDA_VISIBLE_DEVICES"] = index
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
        if "SYNAUG_THREADS" not in env:
            env["SYNAUG_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, concurrent_on_cpu)))
    return env


def run_command(job: Job, out_dir: Path) -> list[str]:
    """``synaug run CONFIG --out OUT/<name> --set ...`` in this interpreter."""
    cmd = [sys.executable, "-m", "synaug.cli", "run", job.config, "--out", str(out_dir / job.name)]
    for o in job.overrides:
        cmd += ["--set", o]
    return cmd


def schedule(jobs: list[Job], out_dir: Path, devices: Sequence[str], per_device: int,
             command: Callable[[Job, Path], list[str]] = run_command, poll_s: float = 0.2,
             log: Callable[[str], None] = print) -> list[Job]:
    """Run ``jobs`` as subprocesses, at most ``per_device`` at a time on every device.

    A job goes to the device with the fewest running jobs (first listed on ties); its output
    goes to ``out_dir/logs/<name>.log``. A failed job does not stop the others.
    """
    if per_device < 1:
        raise SynaugError("sweep: --per-device must be at least 1")
    if not devices:
        raise SynaugError("sweep: no device to run on")
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cpu_slots = per_device * sum(1 for d in devices if not d.startswith("cuda"))
    pending = list(jobs)
    running: dict[str, list[tuple[Job, subprocess.Popen, object]]] = {d: [] for d in devices}
    try:
        while pending or any(running.values()):
            for d in devices:
                still = []
                for job, proc, fh in running[d]:
                    if proc.poll() is None:
                        still.append((job, proc, fh))
                        continue
                    fh.close()
                    job.returncode, job.ended = proc.returncode, time.time()
                    log(f"[sweep] {job.name} on {d}: {'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'} "
                        f"in {job.ended - job.started:.0f} s")
                running[d] = still
            while pending:
                d = min(devices, key=lambda k: len(running[k]))
                if len(running[d]) >= per_device:
                    break
                job = pending.pop(0)
                job.device, job.started = d, time.time()
                job.log = str(logs / f"{job.name}.log")
                fh = open(job.log, "w")
                proc = subprocess.Popen(command(job, out_dir), env=device_env(d, cpu_slots), stdout=fh,
                                        stderr=subprocess.STDOUT)
                running[d].append((job, proc, fh))
                log(f"[sweep] {job.name} started on {d} (log: {job.log})")
            time.sleep(poll_s)
    except BaseException:
        for d in running:
            for _, proc, fh in running[d]:
                proc.terminate()
                fh.close()
        raise
    return jobs


def sweep(configs: Sequence[str], seeds: Sequence[int], out_dir: str | Path, overrides: Sequence[str] = (),
          per_device: int = 1, devices: Optional[Sequence[str]] = None, title: Optional[str] = None,
          log: Callable[[str], None] = print) -> dict:
    """Run configs x seeds concurrently and compare the finished runs (see the module docstring).

    Returns the ``sweep.json`` record. Raises :class:`SynaugError` when a config is invalid
    (before anything starts) or when no run finished.
    """
    from .runconfig import load_run_config

    out_dir = Path(out_dir)
    jobs = plan_jobs(configs, seeds, overrides)
    for j in jobs:  # one-line config errors before any process starts
        load_run_config(j.config, j.overrides)
    devices = list(devices) if devices else default_devices()
    bad = [d for d in devices if not (d == "cpu" or d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()))]
    if bad:
        raise SynaugError(f"sweep: unknown device(s) {', '.join(bad)} (use cpu, cuda or cuda:N)")
    if any(d.startswith("cuda") for d in devices) and "cuda" not in " ".join(default_devices()):
        raise SynaugError("sweep: a CUDA device was asked for but no CUDA GPU is available")
    log(f"[sweep] {len(jobs)} runs on {', '.join(devices)}, {per_device} at a time per device")
    t0 = time.time()
    schedule(jobs, out_dir, devices, per_device, log=log)
    done = [j for j in jobs if j.returncode == 0 and (out_dir / j.name / "metrics.json").is_file()]
    record = {"configs": list(configs), "seeds": list(seeds), "overrides": list(overrides),
              "devices": devices, "per_device": per_device, "wall_s": time.time() - t0,
              "runs": [asdict(j) for j in jobs], "finished": [j.name for j in done]}
    failed = [j for j in jobs if j not in done]
    if done:
        record["comparison"] = str(gather([out_dir / j.name for j in done], out_dir,
                                          title or f"sweep: {', '.join(Path(c).stem for c in configs)}",
                                          [j.group or j.name for j in done]))
    write_json_atomic(out_dir / "sweep.json", record)
    if failed:
        msg = "; ".join(f"{j.name} (exit {j.returncode}, log {j.log})" for j in failed)
        if not done:
            raise SynaugError(f"sweep: no run finished: {msg}")
        log(f"[sweep] {len(failed)} run(s) failed: {msg}")
    return record


def gather(run_dirs: Sequence[Path], out_dir: Path, title: str, groups: Optional[Sequence[str]] = None) -> Path:
    """The one place a sweep builds its comparison report (``groups``: each run's config, whose
    seeds get a mean ± std row)."""
    from .report import compare

    return compare([str(r) for r in run_dirs], out_dir, title, groups=groups)


def print_comparison(record: dict, out_dir: Path) -> None:
    """The sweep's table in the terminal: every finished run, then each config's mean ± std."""
    import json

    from rich.table import Table

    from .report import mean_std_rows, metrics_rows
    from .term import console

    runs = [r for r in record["runs"] if r["name"] in record["finished"]]
    summaries = [json.loads((out_dir / r["name"] / "metrics.json").read_text()) for r in runs]
    header, rows = metrics_rows(summaries, [r["name"] for r in runs])
    rows += mean_std_rows(summaries, [r.get("group") or r["name"] for r in runs], header[2:])
    t = Table(title="test metrics (%; DP / EO / ED: gaps)")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        t.add_row(*r)
    console().print(t)


# ---------------------------------------------------------------------------- CLI
def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="run configs x seeds concurrently (several runs per device) and compare them",
        description="Run every CONFIG with every --seeds value as its own `synaug run` process, "
                    "--per-device of them at a time on each device, in OUT/<config>-s<seed>; "
                    "then write OUT/comparison.{html,md}. Rerunning resumes.")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="run config YAML(s)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="run seeds (default: 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run, e.g. --set train.epochs=5")
    p.add_argument("--per-device", type=int, default=1, help="runs at a time on each device (default 1)")
    p.add_argument("--devices", nargs="+", default=None,
                   help="devices to use (default: every visible CUDA GPU, else cpu), e.g. cuda:0 cuda:1")
    p.add_argument("--out", "-o", required=True, help="sweep folder")
    p.add_argument("--title", default=None, help="comparison title")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    rec = sweep(args.configs, args.seeds, args.out, args.overrides, args.per_device, args.devices, args.title)
    if rec["finished"]:
        print_comparison(rec, Path(args.out))
    print(f"finished {len(rec['finished'])}/{len(rec['runs'])} runs in {rec['wall_s']:.0f} s")
    if "comparison" in rec:
        print(f"comparison: {rec['comparison']}")
    return 0 if len(rec["finished"]) == len(rec["runs"]) else 1
