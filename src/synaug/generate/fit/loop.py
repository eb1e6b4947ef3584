"""Fit one unit (a class, or the whole dataset): resumable, with a progress bar.

Folder of a unit (``OUT/units/<key>/``)::

    checkpoint.safetensors      while fitting: adapter + optimizer + step (atomic, every save_every)
    prior/<class>/<i>.png       dreambooth_lora with prior_preservation: the base model's class images
    pytorch_lora_weights.safetensors | learned_embeds*.safetensors   the adapter
    images.parquet              the real images it learned from (a Manifest; ``draws`` = times seen)
    adapter.json                config, files + sha256, losses; written last: the unit is done
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ...config import dump
from ...io import remove_temps, write_bytes_atomic, write_json_atomic
from ...manifest import Manifest
from ...prompts import display_name
from ..base import derive_seed, png_bytes
from . import checkpoint as ckpt
from .config import NON_RESULT_KEYS
from .data import ImageBank, Order, Unit, caption, safe_name, subject
from .model import FitModel, make_adapter
from .step import Batch, diffusion_loss, fixed_draw_loss

RECORD = "adapter.json"
IMAGES = "images.parquet"
EVAL_DRAWS = 8


def unit_done(unit_dir: Path, digest: str) -> dict | None:
    """The unit's record if it finished with this digest and its files are intact."""
    from .store import sha256_file

    f = unit_dir / RECORD
    if not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
    except json.JSONDecodeError:
        return None
    if rec.get("digest") != digest:
        return None
    for c, entry in rec["classes"].items():
        p = unit_dir / entry["file"]
        if not p.is_file() or sha256_file(p) != entry["sha256"]:
            return None
    return rec


class UnitFit:
    """Everything one unit's fit needs: images, captions, order, prior images."""

    def __init__(self, model: FitModel, unit: Unit, unit_dir: Path, template: str, task: str, res: int):
        cfg = model.cfg
        self.model, self.unit, self.dir, self.cfg, self.res = model, unit, unit_dir, cfg, res
        df = unit.rows.df
        self.captions = [caption(template, task, subject(cfg.method, c, cfg.identifier), g)
                         for c, g in zip(df["class_name"], df["group_name"])]
        self.bank = ImageBank(unit.paths(), res)
        self.order = Order(len(self.bank), cfg.batch_size, cfg.seed, unit.key)
        self.draws = np.zeros(len(self.bank), dtype=np.int64)
        self.template, self.task = template, task
        self.prior = None

    # ---------------------------------------------------------------- prior preservation
    def make_prior(self, progress: bool) -> None:
        """DreamBooth's class images: ``num_class_images`` per class from the base model with the
        class prompt (no identifier), made before the adapter exists; resumable per image."""
        import torch
        from tqdm.auto import tqdm

        cfg, pipe = self.cfg, self.model.pipe
        paths, caps, todo = [], [], []
        for c in self.unit.classes:
            prompt = caption(self.template, self.task, display_name(c))
            for i in range(cfg.num_class_images):
                p = self.dir / "prior" / safe_name(c) / f"{i:05d}.png"
                paths.append(p)
                caps.append(prompt)
                if not _decodes(p):
                    todo.append((p, prompt, derive_seed(cfg.seed, self.unit.key, i, f"prior|{c}")))
        bar = tqdm(total=len(paths), initial=len(paths) - len(todo), unit="img", desc=f"prior {self.unit.key}",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        for s in range(0, len(todo), cfg.batch_size):
            chunk = todo[s: s + cfg.batch_size]
            gens = [torch.Generator("cpu").manual_seed(seed) for _, _, seed in chunk]
            with torch.inference_mode():
                out = pipe(prompt=[p for _, p, _ in chunk], num_inference_steps=cfg.prior_steps, generator=gens,
                           height=self.res, width=self.res, output_type="pil").images
            for (p, _, _), img in zip(chunk, out):
                write_bytes_atomic(p, png_bytes(img.convert("RGB")))
            bar.update(len(chunk))
        bar.close()
        self.prior = (ImageBank(paths, self.res), caps, Order(len(paths), cfg.batch_size, cfg.seed, self.unit.key,
                                                              purpose="fit-prior-order"))

    # ---------------------------------------------------------------- one step
    def batch(self, step: int, gen) -> Batch:
        import torch

        cfg = self.cfg
        idx = self.order.indices(step)
        np.add.at(self.draws, idx, 1)
        flips = (torch.rand(len(idx), generator=gen) < 0.5).tolist() if cfg.random_flip else [False] * len(idx)
        pixels, caps = [self.bank.batch(idx, flips)], [self.captions[i] for i in idx]
        if self.prior is not None:
            bank, pcaps, order = self.prior
            pidx = order.indices(step)
            pflips = (torch.rand(len(pidx), generator=gen) < 0.5).tolist() if cfg.random_flip else [False] * len(pidx)
            pixels.append(bank.batch(pidx, pflips))
            caps += [pcaps[i] for i in pidx]
        return Batch(torch.cat(pixels), caps, len(idx))

    def replay_draws(self, steps: int) -> None:
        """Counts of a resumed fit's earlier steps (the order is a function of the step)."""
        for s in range(steps):
            np.add.at(self.draws, self.order.indices(s), 1)


def _decodes(p: Path) -> bool:
    from PIL import Image

    if not p.is_file():
        return False
    try:
        with Image.open(p) as im:
            im.load()
        return True
    except Exception:  # a damaged file is made again
        return False


def fit_unit(model: FitModel, unit: Unit, unit_dir: Path, digest: str, template: str, task: str, res: int,
             progress: bool = True, desc: str = "fit") -> dict:
    """Fit (or resume, or skip when done) one unit; returns its record (``adapter.json``)."""
    remove_temps(unit_dir)  # a unit belongs to one process at a time: every temp file in it is stale
    done = unit_done(unit_dir, digest)
    if done is not None:
        return done
    cfg = model.cfg
    uf = UnitFit(model, unit, unit_dir, template, task, res)
    if cfg.prior_preservation:
        uf.make_prior(progress)
    adapter = make_adapter(model, unit)
    try:
        return _train(uf, adapter, digest, progress, desc)
    finally:
        adapter.close()


def _train(uf: UnitFit, adapter, digest: str, progress: bool, desc: str) -> dict:
    import torch
    from tqdm.auto import tqdm

    model, cfg, unit = uf.model, uf.cfg, uf.unit
    params = adapter.params()
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay, eps=1e-8)
    scaler = torch.amp.GradScaler("cuda") if model.needs_scaler else None
    path = uf.dir / ckpt.CHECKPOINT
    meta = ckpt.read_meta(path)
    if meta is not None and meta.get("digest") == digest:
        meta = ckpt.load(path, params, opt, scaler)
        uf.replay_draws(meta["step"])
    else:
        meta = {"digest": digest, "step": 0, "losses": [],
                "loss_before": fixed_draw_loss(model, adapter, uf.bank, uf.captions, cfg.seed, unit.key, EVAL_DRAWS,
                                               cfg.batch_size)}
    losses = list(meta["losses"])
    bar = tqdm(total=cfg.steps, initial=meta["step"], unit="step", desc=desc, disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for step in range(meta["step"], cfg.steps):
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, unit.key, step, "fit-step"))
            loss = diffusion_loss(model, adapter, uf.batch(step, gen), gen, cfg.prior_loss_weight)
            _update(loss, params, opt, scaler, cfg.max_grad_norm)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                ckpt.save(path, step + 1, params, opt, scaler, {**meta, "losses": losses})
    finally:
        bar.close()
    after = fixed_draw_loss(model, adapter, uf.bank, uf.captions, cfg.seed, unit.key, EVAL_DRAWS, cfg.batch_size)
    return _finish(uf, adapter, digest, losses, meta["loss_before"], after)


def _update(loss, params: dict, opt, scaler, max_norm) -> None:
    import torch

    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)


def _finish(uf: UnitFit, adapter, digest: str, losses: list, before: float, after: float) -> dict:
    from .store import sha256_file

    cfg, unit, d = uf.cfg, uf.unit, uf.dir
    files = adapter.save(d)
    rows = unit.rows.df.copy()
    rows["draws"] = uf.draws
    Manifest(rows, unit.rows.classes, unit.rows.roots, unit.rows.groups).write(d / IMAGES)
    rec = {"version": 1, "unit": unit.key, "digest": digest, "method": cfg.method, "kind": adapter.kind,
           "config": {k: v for k, v in dump(cfg).items() if k not in NON_RESULT_KEYS},
           "classes": {c: {"file": files[c], "sha256": sha256_file(d / files[c]),
                           "subject": subject(cfg.method, c, cfg.identifier),
                           "images": int((rows["class_name"] == c).sum())} for c in unit.classes},
           "images": IMAGES, "steps": cfg.steps, "resolution": uf.res, "template": uf.template,
           "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
           "loss_mean_last10": float(np.mean(losses[-10:])) if losses else None,
           "fixed_draw_loss_before": before, "fixed_draw_loss_after": after,
           "prior_images": len(uf.prior[0]) if uf.prior is not None else 0}
    write_json_atomic(d / "losses.json", losses)
    write_json_atomic(d / RECORD, rec)  # last: the unit is done
    (d / ckpt.CHECKPOINT).unlink(missing_ok=True)
    return rec
