"""Fit every unit of a dataset: resumable, sharded across processes, with an index at the end.

Output layout (``out_dir``)::

    fit.json          what decides the adapters (config, caption template); a different one is refused
    fit.yaml          the resolved config
    units/<key>/      one folder per adapter (see :mod:`synaug.generate.fit.loop`)
    adapters.json     class -> adapter file + sha256 + prompt words (written last, by rank 0)

Units are sharded as generation shards images: process ``r`` of ``w`` fits units ``r, r+w, ...``
(``torchrun`` / ``accelerate launch``); each unit depends only on its own images and seed, so
the adapters are the same whatever the number of processes.
"""
from __future__ import annotations

import gc
import hashlib
import json
import sys
from pathlib import Path
from typing import Sequence

from ...config import dump, save_resolved
from ...errors import SynaugError
from ...io import remove_temps, write_json_atomic
from ...manifest import Manifest
from ..dist import DistInfo, barrier
from .config import NON_RESULT_KEYS, FitConfig
from .data import Unit, check_template, few_shot_warnings, images_digest, make_units
from .loop import fit_unit, unit_done
from .store import AdapterSet, write_index

FIT_JSON = "fit.json"


def fingerprint(cfg: FitConfig, template: str, task: str) -> dict:
    """What decides every adapter besides its images (device, checkpoint interval excluded)."""
    conf = {k: v for k, v in dump(cfg).items() if k not in NON_RESULT_KEYS}
    digest = hashlib.sha256(json.dumps([conf, template, task], sort_keys=True).encode()).hexdigest()
    return {"version": 1, "digest": digest, "config": conf, "template": template, "task": task}


def unit_digest(fp: dict, unit: Unit) -> str:
    return hashlib.sha256(f"{fp['digest']}|{unit.key}|{images_digest(unit)}".encode()).hexdigest()[:32]


def check_same_fit(out_dir: Path, fp: dict) -> list[str]:
    """Config keys that differ from the fit already in ``out_dir`` (empty: same, or none there)."""
    f = out_dir / FIT_JSON
    if not f.is_file():
        return []
    try:
        old = json.loads(f.read_text())
    except json.JSONDecodeError:
        return []  # written atomically: only a hand-edited file is bad; it is rewritten
    if old.get("digest") == fp["digest"]:
        return []
    a, b = old.get("config", {}), fp["config"]
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    for k in ("template", "task"):
        if old.get(k) != fp[k]:
            changed.append(k)
    return changed or ["(format)"]


def prepare_units(real: Manifest, cfg: FitConfig, classes: Sequence[str] | None, template: str,
                  task: str) -> tuple[list[Unit], list[str]]:
    """Units and few-shot warnings; raises before any model loads on a class with no image."""
    check_template(template, task)
    units = make_units(real, cfg.per, classes)
    return units, few_shot_warnings(units, classes)


def fit(real: Manifest, cfg: FitConfig, out_dir: str | Path, classes: Sequence[str] | None = None,
        template: str = "a photo of {class}", task: str = "plain", progress: bool = True,
        dist: DistInfo | None = None, check_only: bool = False) -> AdapterSet | dict:
    """Fit adapters on the real training images of ``real`` and return them.

    Parameters
    ----------
    real : Manifest
        Only its ``split == "train"``, ``source == "real"`` rows are read.
    cfg : FitConfig
    out_dir : path
        Rerunning with the same config resumes (finished units are kept, a unit cut mid-way
        continues from its last checkpoint).
    classes : list of str, optional
        Classes that need an adapter (``per: class``: one unit each; ``per: dataset``: each must
        have images). Default: every class.
    template, task : str
        Caption template (``{class}``, ``{group}``) and the prompt task whose aliases it may use.
    dist : DistInfo, optional
        Process group from :func:`synaug.generate.dist.setup_distributed`: units are sharded.
    check_only : bool
        Load the model, print units and the memory estimate, return the estimate; fit nothing.
    """
    from ..diffusers_backend import resolve_device

    dist = dist or DistInfo()
    out_dir = Path(out_dir)
    units, warnings = prepare_units(real, cfg, classes, template, task)
    fp = fingerprint(cfg, template, task)
    changed = check_same_fit(out_dir, fp)
    if changed and not check_only:
        raise SynaugError(f"{out_dir} holds a fit with different {', '.join(changed)}; rerun with the same config "
                          "to resume, or use a new --out")
    device = resolve_device(cfg.device, dist.local_rank)
    model, res, arch, est = _load(cfg, device, units, warnings if dist.rank == 0 else None)
    if check_only:
        return est
    if dist.rank == 0:
        remove_temps(out_dir)  # top-level files are rank 0's; each unit cleans its own folder
        save_resolved(cfg, out_dir / "fit.yaml")
        write_json_atomic(out_dir / FIT_JSON, fp)
    mine = units[dist.rank::dist.world_size]
    tag = f" [rank {dist.rank}/{dist.world_size}]" if dist.world_size > 1 else ""
    for i, u in enumerate(mine):
        fit_unit(model, u, out_dir / "units" / u.key, unit_digest(fp, u), template, task, res, progress,
                 desc=f"fit {u.key} ({i + 1}/{len(mine)}){tag}")
    del model
    gc.collect()
    barrier(dist)
    if dist.rank == 0:
        _index(out_dir, cfg, fp, units, {"template": template, "task": task, "resolution": res, "arch": arch}, progress)
    barrier(dist)
    return AdapterSet.read(out_dir)


def _load(cfg: FitConfig, device: str, units: list[Unit], warnings: list[str] | None):
    """The model, training side, architecture and memory estimate; the preflight lines are
    printed when ``warnings`` is given (rank 0)."""
    from ..diffusers_backend import native_size
    from .apply import unet_arch
    from .memory import GiB, describe, device_free, estimate
    from .model import FitModel, load_fit_pipeline

    model = FitModel(load_fit_pipeline(cfg, device), cfg, device)
    res = cfg.resolution or native_size(model.pipe)
    if warnings is None:
        return model, res, unet_arch(model.pipe), {}
    for w in warnings:
        print(f"synaug: warning: {w}", file=sys.stderr)
    est = estimate(model, res, max(len(u.classes) for u in units) if cfg.per == "dataset" else 1)
    free = device_free(device)
    print(describe(est, free), file=sys.stderr)
    if free is not None and est["total"] > free:
        print(f"synaug: warning: the fit may not fit in the {free / GiB:.1f} GiB free on {device}: set "
              "gradient_checkpointing: true, a smaller batch_size or resolution, or mixed_precision fp16",
              file=sys.stderr)
    print(f"fit: {len(units)} adapter(s), {cfg.method} per {cfg.per}, {cfg.steps} steps each, {res} px, "
          f"batch {cfg.batch_size}, on {device}", file=sys.stderr)
    return model, res, unet_arch(model.pipe), est


def _index(out_dir: Path, cfg: FitConfig, fp: dict, units: list[Unit], about: dict, progress: bool) -> None:
    from ..diffusers_backend import model_label

    records = []
    for u in units:
        rec = unit_done(out_dir / "units" / u.key, unit_digest(fp, u))
        if rec is None:
            raise SynaugError(f"fit: adapter {u.key} is not finished (another process?); rerun the same command")
        records.append(rec)
    header = {"version": 1, "method": cfg.method, "per": cfg.per, "model": cfg.model,
              "model_label": model_label(cfg.model), **about, "identifier": cfg.identifier, "digest": fp["digest"],
              "config": fp["config"]}
    index = write_index(out_dir, header, records)
    if progress:
        print_summary(index)


def print_summary(index: dict) -> None:
    from rich.table import Table

    from ...term import console

    t = Table(title=f"fitted adapters: {index['method']} per {index['per']} ({index['model_label']})")
    for col in ("adapter", "classes", "steps", "loss before", "loss after"):
        t.add_column(col, justify="right" if col not in ("adapter", "classes") else "left")
    per_unit: dict[str, list[str]] = {}
    for c, e in index["classes"].items():
        per_unit.setdefault(e["unit"], []).append(c)
    for key, u in index["units"].items():
        names = per_unit.get(key, [])
        t.add_row(key, ", ".join(names[:4]) + (" ..." if len(names) > 4 else ""), str(u["steps"]),
                  f"{u['fixed_draw_loss_before']:.4f}", f"{u['fixed_draw_loss_after']:.4f}")
    console(sys.stderr).print(t)
    print("loss before/after: mean noise-prediction loss on 8 fixed draws (same images, noise and timesteps)",
          file=sys.stderr)

