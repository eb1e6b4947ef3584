"""The scorer of :mod:`synaug.generate.select`: a model synaug trains itself (no pretrained
weights are needed), as the ``scorer`` stage of ``synaug run``.

* ``round1`` (default): the run's ``train`` section on the real rows plus the first-needed
  candidates of every cell (exactly the images a run without selection trains on), then its
  head fine-tuned as the run's ``finetune`` section says: round 1 of the feedback loop. It has
  seen synthetic images of every class, so it is the scorer meant for the few-shot classes.
* ``real``: the same on the real rows only (a long-tailed model: few-shot scores are weak).
* ``checkpoint``: a given model file whose classes are the plan's.

The stage is cached (key: candidates, scorer, train and finetune sections) and resumable: the
training continues from its checkpoints in ``scorer/train`` after a kill.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..manifest import Manifest
from ..plan import Plan
from .config import ScorerConfig

DESCRIPTIONS = {
    "round1": "round-1 SYNAuG model (the run's training on real + the first-needed candidates of every cell, "
              "i.e. a random selection{ft})",
    "real": "model trained on the real training rows only{ft} (long-tailed: weak on few-shot classes)",
}


def scorer_stage(st, cfg, sc: ScorerConfig, plan: Plan, cands: Manifest, train_real: Manifest, sdir: Path,
                 k_up: str) -> dict:
    """Train (or resume, or find cached) the scorer; returns ``{"path", "description", "key"}``."""
    from ..config import dump
    from ..stages import file_digest, fingerprint

    if sc.model == "checkpoint":
        from ..train.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(sc.path)
        return {"path": path, "description": f"the given checkpoint {path}", "key": file_digest(path)}
    tcfg = cfg.train if sc.epochs is None else cfg.train.model_copy(update={"epochs": sc.epochs})
    ft = cfg.finetune if sc.finetune else None
    key = fingerprint(k_up, "scorer", dump(sc), dump(tcfg), dump(ft) if ft is not None else None)
    final = sdir / "model.safetensors"
    desc = DESCRIPTIONS[sc.model].format(ft=f", head fine-tuned ({ft.mode})" if ft is not None else "")
    desc += f", {tcfg.epochs} epochs; {sdir}"

    def run():
        _train_scorer(sc, tcfg, ft, plan, cands, train_real, sdir, key)

    st.run("scorer", key, [final], run, note=_resume_note(sdir / "train", key))
    return {"path": final, "description": desc, "key": key}


def _resume_note(tdir: Path, key: str) -> str:
    from ..train.checkpoint import read_last

    last = read_last(tdir) if tdir.is_dir() else None
    if last is None or _upstream(tdir) not in (None, key):
        return ""
    return f"resuming the scorer's training after epoch {int(last['epoch']) + 1}"


def _upstream(tdir: Path):
    try:
        return json.loads((tdir / "inputs.json").read_text()).get("upstream")
    except (OSError, json.JSONDecodeError):
        return None


def _train_scorer(sc: ScorerConfig, tcfg, ft, plan: Plan, cands: Manifest, train_real: Manifest, sdir: Path,
                  key: str) -> None:
    from ..io import write_json_atomic
    from ..train import finetune_last_layer, load_checkpoint, save_model, train_model
    from .candidates import first_rows

    tdir = sdir / "train"
    if _upstream(tdir) not in (None, key):  # made from other candidates / config: start over
        shutil.rmtree(tdir)
    tdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(tdir / "inputs.json", {"upstream": key})
    parts = [train_real.split("train", "val")]
    if sc.model == "round1":
        parts.append(first_rows(cands, plan))
    rows = Manifest.concat(parts) if len(parts) > 1 else parts[0]
    model = train_model(rows.split("train"), rows.split("val"), tcfg, tdir, resume=True).model
    if ft is not None:
        model = finetune_last_layer(load_checkpoint(tdir / "model.safetensors"), train_real.split("train", "val"),
                                    ft, sdir / "finetune")
    save_model(model, sdir / "model.safetensors", {k: v for k, v in getattr(model, "meta", {}).items()
                                                   if k != "spec"} | {"stage": "scorer", "scorer": sc.model})


def score_images(path: Path, m: Manifest, tcfg) -> tuple[np.ndarray, np.ndarray]:
    """The scorer's log-probability of each row's own class (its confidence; a log, so that
    confident scores do not all round to 1 or 0) and its L2-normalised encoder features."""
    import torch
    import torch.nn.functional as F

    from ..models import CosineLinear
    from ..train import load_checkpoint
    from ..train.data import ImageSet
    from ..train.evaluate import predict_logits, resolve_device

    device = resolve_device(tcfg.device)
    model = load_checkpoint(path, device)
    meta = getattr(model, "meta", {}) or {}
    mean, std = meta.get("mean", tcfg.augment.mean), meta.get("std", tcfg.augment.std)
    images = ImageSet(m, tcfg.data, "scoring", device, tcfg.channels_last, tuple(mean), tuple(std))
    feats = predict_logits(model, images, tcfg.data.eval_batch_size, features=True)
    with torch.inference_mode():
        logits = model.head.cpu()(feats)
        if isinstance(model.head, CosineLinear):
            logits = logits * 30.0  # LDAM's scale: the head was trained with it
        labels = torch.as_tensor(m.df["label"].to_numpy(dtype=np.int64, copy=True))
        logp = logits.double().log_softmax(1)[torch.arange(len(m)), labels]
    return logp.numpy(), F.normalize(feats.float(), dim=1).numpy()
