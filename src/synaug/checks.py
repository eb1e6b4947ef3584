"""Checks of a whole run config before any stage runs (``synaug run``).

:func:`check_config` needs no data (paths exist, the model builds, the backend has what it
needs); :func:`check_data` runs on the prepared real data and the plan, before generation or
training, and refuses what would otherwise fail late (e.g. fine-tuning a class that has no
real training image, after the whole training). Both raise :class:`SynaugError` and return
warnings (plain strings) for configs that run but probably not as meant.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import SynaugError
from .manifest import Manifest

if TYPE_CHECKING:
    from collections import Counter

    from .plan import Plan
    from .runconfig import RunConfig
    from .train.config import TrainConfig

# modifiers values that name shipped lists, not files
_MODIFIER_NAMES = {"auto", "none", "cifar10", "cifar100"}


def _exists(value: str | None, key: str, kind: str = "file or folder") -> None:
    if value and not Path(value).exists():
        raise SynaugError(f"{key}: {kind} not found: {value}")


def train_warnings(cfg: "TrainConfig", prefix: str = "train.") -> list[str]:
    """Configs that train, but probably not as meant (``prefix``: where the keys live)."""
    out = []
    s = cfg.schedule
    late = [m for m in s.milestone_epochs(cfg.epochs) if m >= cfg.epochs] if s.name == "multistep" else []
    if late:
        out.append(f"{prefix}schedule.milestones: epoch {late[0]} is past the last epoch ({prefix}epochs is "
                   f"{cfg.epochs}), so the learning rate never drops there; give the milestones as fractions of "
                   f"the run (e.g. [0.8, 0.9], the default) or as epochs below {cfg.epochs}")
    alg = cfg.algorithm
    if alg.name == "ldam_drw" and cfg.epochs <= alg.ldam.drw_epoch:
        out.append(f"ldam_drw: epochs is {cfg.epochs} but deferred re-weighting starts at epoch "
                   f"{alg.ldam.drw_epoch} (algorithm.ldam.drw_epoch), so it never starts: this trains "
                   f"LDAM without DRW; set algorithm.ldam.drw_epoch below epochs (the recipe: 160 of 200)")
    return out


def check_model(cfg: "TrainConfig") -> None:
    """Build the configured model once (2 classes, CPU): unknown names and options fail here."""
    from .train.loop import build_model

    try:
        build_model(cfg, 2)
    except SynaugError as e:
        raise SynaugError(f"train.model: {e}") from None


def _check_sizes(cfg: "RunConfig", sizes: "Counter | None", generating: bool) -> None:
    """Without ``train.data.image_size`` every image must have one size (the real ones, and the
    generated ones at ``generate.resolution``): else say which sizes were found and what fixes it."""
    from .data.files import describe_sizes

    if not sizes or cfg.train.data.image_size is not None:
        return
    (w, h), n = sizes.most_common(1)[0]
    if len(sizes) > 1:
        raise SynaugError(f"the real images have {len(sizes)} sizes: {describe_sizes(sizes)}; set "
                          f"train.data.image_size (e.g. {max(w, h)}) to resize them all to one size")
    res = cfg.generate.resolution if generating else None
    if res is not None and (w, h) != (res, res):
        fix = f"set generate.resolution: {w} to match, or " if w == h else ""
        raise SynaugError(f"the real images are all {w}x{h} ({n}) but generated images will be {res}x{res}: "
                          f"{fix}set train.data.image_size to resize everything")


def check_options(cfg: "RunConfig") -> None:
    """The options beyond the paper (``train.synthetic``, ``finetune.train_blocks``,
    ``generate.select``) against the rest of the config."""
    from .train.finetune import last_blocks
    from .train.loop import build_model
    from .train.synthetic import check as check_synthetic

    check_synthetic(cfg.train, cfg.train.algorithm.name)
    if cfg.finetune is not None and cfg.finetune.train_blocks:
        last_blocks(build_model(cfg.train, 2).encoder, cfg.finetune.train_blocks)
    g = cfg.generate
    if g is not None and g.select.active and g.select.needs_scorer and g.select.scorer.model == "checkpoint":
        _exists(g.select.scorer.path, "generate.select.scorer.path", "checkpoint")


def check_config(cfg: "RunConfig") -> list[str]:
    """Everything about ``cfg`` that can be checked without reading the data."""
    from .data import list_datasets

    d = cfg.data
    if bool(d.manifest) == bool(d.dataset):
        raise SynaugError("data: give exactly one of 'dataset' or 'manifest'")
    if d.manifest:
        _exists(d.manifest, "data.manifest", "manifest file or image folder")
    elif d.dataset not in list_datasets():
        raise SynaugError(f"data.dataset: unknown dataset {d.dataset!r} (known: {', '.join(list_datasets())})")
    _exists(d.root, "data.root", "folder")
    check_model(cfg.train)
    check_options(cfg)
    g = cfg.generate
    if g is not None:
        if g.backend == "pool":
            pc = g.pool
            if bool(pc.manifest) == bool(pc.dataset):
                raise SynaugError("generate.pool: give exactly one of 'manifest' (a manifest file, an image "
                                  "folder, or 'heldout') or 'dataset' (a dataset name, e.g. shared-sd14)")
            if pc.dataset and pc.dataset not in list_datasets():
                raise SynaugError(f"generate.pool.dataset: unknown dataset {pc.dataset!r} "
                                  f"(known: {', '.join(list_datasets())})")
            if pc.manifest == "heldout":
                if d.imbalance_factor is None and d.heldout_fraction is None:
                    raise SynaugError("generate.pool.manifest 'heldout' needs data.imbalance_factor (the images "
                                      "the long-tail draw left out) or data.heldout_fraction")
            else:
                _exists(pc.manifest, "generate.pool.manifest", "manifest file or image folder")
            _exists(pc.root, "generate.pool.root", "folder")
        else:
            if not g.model:
                raise SynaugError(f"generate.model: backend {g.backend} needs a diffusion model "
                                  "(a Hugging Face id or a local folder)")
            if g.model.startswith(("/", "./", "../", "~")):
                _exists(g.model, "generate.model", "model folder")
        _exists(g.prompts, "generate.prompts", "file")
        if g.modifiers not in _MODIFIER_NAMES:
            _exists(g.modifiers, "generate.modifiers", "file")
    warnings = train_warnings(cfg.train)
    if cfg.finetune is not None and cfg.finetune.mode == "dfr" and d.val_per_class == 0:
        warnings.append("finetune.mode dfr chooses C on the val split; data.val_per_class is 0, so the data "
                        "must bring its own val rows")
    return warnings


def check_data(cfg: "RunConfig", real: Manifest, plan: "Plan | None", train_real: Manifest,
               sizes: "Counter | None" = None) -> list[str]:
    """Checks against the prepared data: class coverage of the plan, generation and fine-tuning,
    image sizes.

    ``real`` is the prepared real data (train/val/test), ``train_real`` its real rows that
    training keeps after the plan (replacement plans drop some), ``sizes`` the (width,
    height) counts of the real images (:func:`synaug.data.files.check_manifest_images`).
    """
    from .train.algorithms import DataInfo, build_algorithm

    warnings: list[str] = []
    tr = train_real.split("train")
    real_counts = tr.class_counts(None)
    planned = np.zeros(real.num_classes, dtype=int)
    gen_on = cfg.generate is not None and plan is not None
    if gen_on:
        for c in plan.cells:
            planned[c.label] += c.synthetic
    # fine-tuning (step 3) draws only real training images of every class
    if cfg.finetune is not None:
        ft = cfg.finetune
        missing = [real.classes[c] for c in np.flatnonzero(real_counts == 0)]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SynaugError(f"class {missing[0]!r}{more} has no real training image, and fine-tuning "
                              "(finetune:) draws only real images of every class: add real images of it, or "
                              "remove the finetune section")
        if ft.balance_by == "cell" and (tr.groups is None or (tr.df["group"] < 0).any()):
            raise SynaugError("finetune.balance_by: cell needs data with a group for every training row")
    empty = [real.classes[c] for c in np.flatnonzero(real_counts + planned == 0)]
    if empty:
        warnings.append(f"class {empty[0]!r}" + (f" and {len(empty) - 1} more" if len(empty) > 1 else "")
                        + " will have no training image at all (no real image, none generated)")
    # the training algorithm's own requirements (groups, counts), on the real training rows
    info = DataInfo(tr.df["label"].to_numpy(), tr.df["group"].to_numpy(), tr.num_classes, tr.num_groups,
                    cfg.train.epochs)
    try:
        import torch

        build_algorithm(cfg.train.algorithm, info, torch.device("cpu"))
    except SynaugError as e:
        raise SynaugError(f"train.algorithm: {e}") from None
    _check_sizes(cfg, sizes, gen_on and plan.total_synthetic > 0)
    if gen_on and cfg.generate.backend == "img2img" and cfg.generate.img2img.mode == "intra":
        guides = train_real.df[(train_real.df["split"] == cfg.generate.img2img.split)
                               & (train_real.df["source"] == "real")]["class_name"]
        for c in plan.cells:
            if c.synthetic and c.class_name not in set(guides):
                raise SynaugError(f"generate.img2img: class {c.class_name!r} needs {c.synthetic} images but has no "
                                  f"real {cfg.generate.img2img.split} image to guide them (mode intra)")
    return warnings
