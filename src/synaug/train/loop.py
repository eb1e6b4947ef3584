"""Step 2 of SYNAuG: train encoder f and head g on the uniformized set, with batch Mixup.

``train_model`` is the engine behind ``synaug train``: it trains, validates (model
selection on the *validation* split only), checkpoints every epoch and resumes from the
last complete epoch; a resumed run ends with the same weights as an uninterrupted one
(fixed seeds, same device), because every random stream is re-seeded from
``(seed, epoch, rank)`` at the start of each epoch. The step itself (``synaug.train.step``)
never waits for the device: on a GPU it is replayed as CUDA graphs (``cuda_graph: auto``).
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..config import dump, save_resolved
from ..errors import SynaugError
from ..io import remove_temps, write_json_atomic
from ..manifest import Manifest
from ..threads import ThreadGovernor, describe as describe_threads
from ..models import Classifier, create_model
from . import checkpoint as ckpt
from . import distributed as ddp
from .algorithms import Algorithm, DataInfo, build_algorithm
from .config import TrainConfig
from .data import ImageSet, epoch_order, refuse_test_rows, split_batches
from .evaluate import cell_ids, predict_logits, resolve_device
from .optim import build_optimizer, lr_at, set_lr
from .precision import resolve_amp, resolve_compile
from .step import TrainStep, choose_mode
from . import synthetic as syn

# temp names synaug.io.atomic_path gives the files a run writes (".<name>.<random>.tmp")
_OWN_TEMP = re.compile(r"^\.(epoch_\d+(\.state)?\.safetensors|best_\d+\.safetensors|model\.safetensors|"
                       r"last\.json|history\.json|summary\.json|config\.yaml)\.[^.]+\.tmp$")
# config keys that may change between a run and its resumption
_RESUME_IGNORED = {"progress", "keep_checkpoints", "eval_every"}
_RESUME_IGNORED_DATA = {"num_workers", "cache_dir", "eval_batch_size"}


@dataclass
class TrainResult:
    """What :func:`train_model` returns."""

    model: Classifier            # the selected model (best val epoch, else last), eval mode
    checkpoint: Path             # its weights: ``out_dir / "model.safetensors"``
    history: list[dict]          # one row per epoch: lr, loss, img/s, val metrics
    best_epoch: Optional[int]    # selected epoch (None when there is no val split)
    out_dir: Path


def seed_for(*parts: int) -> int:
    """A 63-bit seed derived from integers (independent streams per purpose/epoch/rank)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def manifest_fingerprint(m: Manifest) -> str:
    h = hashlib.sha256()
    for col in ("source", "path", "label", "group"):
        h.update("\n".join(map(str, m.df[col].tolist())).encode())
    return h.hexdigest()[:16]


def build_model(cfg: TrainConfig, num_classes: int) -> Classifier:
    head = cfg.model.head
    if head == "auto":
        head = "cosine" if cfg.algorithm.name == "ldam_drw" else "linear"
    kw: dict = {"head": head, **cfg.model.kwargs}
    if cfg.model.width is not None:
        kw["width"] = cfg.model.width
    if cfg.model.cifar_stem:
        kw["cifar_stem"] = True
    if cfg.model.pretrained:
        kw["pretrained"] = True
    try:
        return create_model(cfg.model.name, num_classes, **kw)
    except TypeError as e:
        raise SynaugError(f"model {cfg.model.name!r}: unsupported option ({e})") from None


def resume_decision(last: dict, cfg: TrainConfig, fingerprint: str) -> tuple[str, str]:
    """Can a run folder whose ``last.json`` is ``last`` continue under ``cfg``?

    Returns ``(action, reason)``: ``"resume"`` (same config and data), ``"extend"`` (only
    ``epochs`` changed and every epoch done would have run identically under the new value:
    same learning rates, still in the main phase; e.g. more epochs of a multistep or
    constant schedule) or ``"restart"`` (anything else; ``reason`` says what differs).
    """
    def strip(d):
        d = {k: v for k, v in d.items() if k not in _RESUME_IGNORED}
        d["data"] = {k: v for k, v in d.get("data", {}).items() if k not in _RESUME_IGNORED_DATA}
        return d

    if last.get("train_fingerprint") != fingerprint:
        return "restart", "the training rows differ"
    old, new = strip(last["config"]), strip(dump(cfg))
    if old == new:
        return "resume", "same config and training rows"
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed != ["epochs"]:
        return "restart", f"the config differs in {', '.join(changed)}"
    done = int(last["epoch"]) + 1
    was = int(old["epochs"])
    if done > cfg.epochs or any(h.get("phase", "main") != "main" for h in last.get("history", [])):
        return "restart", f"{done} epochs were done (of {was}); epochs is now {cfg.epochs}"
    from .config import ScheduleConfig

    sched = ScheduleConfig.model_validate(old["schedule"])
    lr = float(old["optim"]["lr"])
    if any(lr_at(e, lr, was, sched) != lr_at(e, lr, cfg.epochs, sched) for e in range(done)):
        return "restart", (f"the {sched.name} schedule gives the {done} epochs done other learning rates "
                           f"with epochs {cfg.epochs} than with {was}")
    return "extend", f"epochs {was} -> {cfg.epochs}: the {done} epochs done are kept (same learning rates)"


def _check_resume(last: dict, cfg: TrainConfig, fingerprint: str, out_dir: Path) -> str:
    action, reason = resume_decision(last, cfg, fingerprint)
    if action == "restart":
        what = "on a different training manifest" if reason == "the training rows differ" else \
            f"with a different config ({reason})"
        raise SynaugError(f"{out_dir} holds a run {what}; use another --out "
                          f"or start over with --no-resume")
    return action


def _select_value(metric: str, logits: torch.Tensor, val: Manifest) -> float:
    y = val.df["label"].to_numpy()
    pred = logits.argmax(1).numpy()
    if metric == "top1":
        return float((pred == y).mean())
    ids = y if metric == "mean_class" else cell_ids(y, val.df["group"].to_numpy(), val.num_groups)
    accs = [float((pred[ids == k] == y[ids == k]).mean()) for k in np.unique(ids)]
    return float(np.mean(accs)) if metric == "mean_class" else float(np.min(accs))


def train_model(train_manifest: Manifest, val_manifest: Optional[Manifest] = None,
                cfg: Optional[TrainConfig] = None, out_dir: str | Path = "runs/train", *,
                resume: bool = True, callbacks: Sequence[Callable[[dict], None]] = ()) -> TrainResult:
    """Train a classifier (encoder f + head g) on the ``train`` rows of ``train_manifest``.

    Parameters
    ----------
    train_manifest : Manifest
        Training rows (real and synthetic, ``split == "train"``); ``val`` rows in it are used
        for model selection when ``val_manifest`` is None. Test rows are refused.
    val_manifest : Manifest, optional
        Rows for model selection (best epoch by ``cfg.select_metric``). Test rows are refused.
        Without any validation rows the last epoch is kept.
    cfg : TrainConfig, optional
        Defaults: the CIFAR-LT recipe with Mixup on.
    out_dir : path
        Run folder: checkpoints, ``last.json``, ``model.safetensors``, ``history.json``.
    resume : bool
        Continue from ``out_dir/last.json`` when present (same config and data required).
    callbacks : sequence of callables
        Called with each epoch's history row after its checkpoint is written.

    Returns
    -------
    TrainResult
    """
    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    device = ddp.local_device(resolve_device(cfg.device))
    rank, world = ddp.init(device)
    refuse_test_rows(train_manifest, "training")
    train_m = train_manifest.split("train")
    if len(train_m) == 0:
        raise SynaugError("the training manifest has no split == 'train' rows")
    if val_manifest is not None:
        refuse_test_rows(val_manifest, "model selection")
        val_m = val_manifest
    else:
        val_m = train_manifest.split("val")
    val_m = val_m if len(val_m) else None
    if val_m is not None and val_m.classes != train_m.classes:
        raise SynaugError("validation and training manifests have different classes")

    syn.check(cfg, cfg.algorithm.name)
    seed_everything(cfg.seed)
    aug = cfg.augment
    train_set = ImageSet(train_m, cfg.data, "training", device, cfg.channels_last, aug.mean, aug.std)
    color = _color_match(train_set, train_m, cfg)
    val_set = (ImageSet(val_m, cfg.data, "model selection", device, cfg.channels_last, aug.mean, aug.std)
               if val_m is not None and rank == 0 else None)
    C = train_m.num_classes
    info = DataInfo(train_m.df["label"].to_numpy(), train_m.df["group"].to_numpy(), C,
                    train_m.num_groups, cfg.epochs)
    algo = build_algorithm(cfg.algorithm, info, device)
    total_epochs = cfg.epochs + algo.extra_epochs()

    torch.manual_seed(seed_for(cfg.seed, 0xA11))  # model init independent of data-side draws
    model = build_model(cfg, C)
    if cfg.synthetic.separate_bn:
        syn.split_batchnorm(model)  # same state-dict keys: checkpoints stay plain models
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    real = train_m.df["source"] == "real"
    meta = {"classes": train_m.classes, "groups": train_m.groups,
            "train_class_counts": train_m.class_counts().tolist(),
            "real_train_class_counts": np.bincount(train_m.df.loc[real, "label"], minlength=C).tolist(),
            "train_cell_counts": train_m.cell_counts().tolist(),
            "real_train_cell_counts": train_m.select(real.to_numpy()).cell_counts().tolist(),
            "algorithm": cfg.algorithm.name, "mean": list(aug.mean), "std": list(aug.std),
            "image_size": cfg.data.image_size, "eval_resize": cfg.data.eval_resize, "stage": "train"}
    cfg_dump = dump(cfg)
    fingerprint = manifest_fingerprint(train_m)

    # ------------------------------------------------------------- state / resume
    phase = lambda e: "main" if e < cfg.epochs else "head"  # noqa: E731
    start, history, best = 0, [], {"epoch": None, "value": None, "metric": cfg.select_metric}
    optimizer = _optimizer_for(model, "main", cfg, algo)
    if rank == 0:  # half-written files of a run killed inside an atomic write
        remove_temps(out_dir, owned=_OWN_TEMP.match)
    last = ckpt.read_last(out_dir) if resume else None
    if last is not None:
        if _check_resume(last, cfg, fingerprint, out_dir) == "extend" and rank == 0:
            save_resolved(cfg, out_dir / "config.yaml")
        state = ckpt.load_file_state(out_dir / last["weights"])
        model.load_state_dict(state)
        start = int(last["epoch"]) + 1
        history, best = last["history"], last["best"]
        if start < total_epochs:
            optimizer = _optimizer_for(model, phase(start), cfg, algo)
            if last["phase"] == phase(start):
                algo_state = ckpt.load_training_state(out_dir / last["state"], last["optimizer"], optimizer, device)
                algo.load_state_dict(algo_state)
            else:  # first head-phase epoch: fresh head optimizer, keep algorithm state
                algo.load_state_dict(ckpt.load_training_state_algo(out_dir / last["state"]))
    elif rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "last.json").unlink(missing_ok=True)  # --no-resume: never point at an old run
        save_resolved(cfg, out_dir / "config.yaml")

    amp, amp_why = resolve_amp(cfg.amp, device)
    steps_left = (len(train_m) // (cfg.batch_size * world)) * (total_epochs - start)
    compiled, compile_why = resolve_compile(cfg.compile, device, steps_left)
    if amp == "bf16-emulated" and compiled:
        compiled, compile_why = False, "compile: off: amp bf16-emulated runs eagerly (a dispatch mode)"
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    mode, mode_why = choose_mode(cfg, device, world, algo, amp)
    governor = ThreadGovernor() if device.type == "cpu" else None
    step: Optional[TrainStep] = None
    for epoch in range(start, total_epochs):
        ph = phase(epoch)
        if epoch == start or (ph == "head" and phase(epoch - 1) == "main"):
            if epoch != start:
                optimizer = _optimizer_for(model, ph, cfg, algo)
            net = _prepare(model, ph, device)
            algo.start_phase(model, ph)
            if step is None:
                step = TrainStep(net, model, optimizer, algo, train_set, cfg, device, scaler, mode,
                                 amp=amp, compile_=compiled)
                step.mode_why = mode_why
            step.net = net
            step.set_optimizer(optimizer)
        lr = (lr_at(epoch, cfg.optim.lr, cfg.epochs, cfg.schedule) if ph == "main"
              else algo.head_lr(epoch - cfg.epochs, cfg.optim.lr))
        set_lr(optimizer, lr)
        row = _train_epoch(step, model, algo, train_set, cfg, epoch, total_epochs, ph, rank, world)
        algo.after_epoch(model, epoch)
        row["lr"] = lr
        row["phase"] = ph
        if governor is not None:
            row["threads"] = torch.get_num_threads()
            governor.check(log=tqdm_write if cfg.progress and rank == 0 else None)
        # model selection on the validation split (rank 0 evaluates, all ranks agree)
        if val_set is not None or (val_m is not None and world > 1):
            if (epoch + 1) % cfg.eval_every == 0 or epoch == total_epochs - 1:
                value = None
                if rank == 0:
                    logits = predict_logits(model, val_set, cfg.data.eval_batch_size, amp=amp)
                    value = _select_value(cfg.select_metric, logits, val_m)
                    row["val_top1"] = _select_value("top1", logits, val_m)
                    row[f"val_{cfg.select_metric}"] = value
                value = ddp.broadcast(value)
                if best["value"] is None or value > best["value"]:
                    # a new file per best epoch; last.json (written below) is the only pointer to it
                    best.update(epoch=epoch, value=value, weights=f"best_{epoch:04d}.safetensors")
                    if rank == 0:
                        ckpt.save_model(model, out_dir / best["weights"], {**meta, "epoch": epoch})
        history.append(row)
        if cfg.progress and rank == 0:
            _log_epoch(row, total_epochs)
        if rank == 0:
            _write_epoch(out_dir, model, optimizer, algo, meta, epoch, ph, history, best, cfg_dump,
                         fingerprint, world, scaler)
        ddp.barrier()
        for cb in callbacks:
            cb(row)

    # ------------------------------------------------------------- final model
    cpu_info = {**describe_threads(), **(governor.summary() if governor is not None else {})}
    if governor is not None:
        governor.close()  # the threads it took away are given back for what runs next
    in_sync = ddp.parameters_in_sync(model) if world > 1 else None
    last = ckpt.read_last(out_dir) if rank == 0 else None
    if rank == 0:
        if last is None:
            raise SynaugError(f"no completed epoch in {out_dir}")
        src = out_dir / (best["weights"] if best["epoch"] is not None else last["weights"])
        final = ckpt.load_model(src, device)
        ckpt.save_model(final, out_dir / "model.safetensors",
                        {**meta, "epoch": final.meta.get("epoch"), "selected_by": (
                            f"val {cfg.select_metric}" if best["epoch"] is not None else "last epoch")})
        write_json_atomic(out_dir / "history.json", history)
        write_json_atomic(out_dir / "summary.json", {
            "epochs": total_epochs, "best_epoch": best["epoch"], "best_value": best["value"],
            "select_metric": cfg.select_metric if best["epoch"] is not None else None,
            "num_train": len(train_m), "num_val": len(val_m) if val_m is not None else 0,
            "train_sources": train_m.df["source"].value_counts().to_dict(), "world_size": world,
            "device": str(device), "data_mode": train_set.mode, "ranks_in_sync": in_sync,
            **({"synthetic": {**dump(cfg.synthetic), "color_match_stats": color}} if cfg.synthetic.active else {}),
            "step": {"mode": step.mode if step else mode, "why": step.mode_why if step else mode_why,
                     "compile": step.compiled if step else compiled,
                     "compile_why": (step.compile_why or compile_why) if step else compile_why,
                     "graph_captures": step.captures if step else 0,
                     "graph_capture_s": round(step.capture_s, 3) if step else 0.0},
            "amp": {"requested": cfg.amp, "used": amp, "why": amp_why},
            "cpu": cpu_info})
    ddp.barrier()
    final = ckpt.load_model(out_dir / "model.safetensors", device).eval()
    return TrainResult(final, out_dir / "model.safetensors", history, best["epoch"], out_dir)


# ---------------------------------------------------------------------- pieces
def _optimizer_for(model: Classifier, ph: str, cfg: TrainConfig, algo: Algorithm):
    if ph == "main":
        model.requires_grad_(True)
        return build_optimizer(model.parameters(), cfg.optim)
    model.encoder.requires_grad_(False)
    model.head.requires_grad_(True)
    o = algo.head_phase_optim()
    return build_optimizer(model.head.parameters(), cfg.optim, o.get("lr"), o.get("weight_decay"))


def _prepare(model: Classifier, ph: str, device) -> torch.nn.Module:
    if ph == "head":
        model.encoder.requires_grad_(False)
    return ddp.wrap(model, device)  # cfg.compile is applied by TrainStep to the whole forward


def _train_epoch(step: TrainStep, model, algo, train_set, cfg, epoch, total_epochs, ph, rank, world) -> dict:
    from tqdm.auto import tqdm

    # every random stream of this epoch derives from (seed, epoch[, rank]): exact resumption
    order_gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, 1))
    aug_seed, mix_seed = seed_for(cfg.seed, epoch, 2, rank), seed_for(cfg.seed, epoch, 3, rank)
    torch.manual_seed(mix_seed)  # torch's global stream (dropout in timm models, ...) as well
    share = syn.share_at(cfg.synthetic, epoch, cfg.epochs)
    order = (epoch_order(len(train_set), order_gen, algo.sample_weights()) if share is None else
             syn.share_order(train_set.synthetic.numpy() > 0, share, cfg.batch_size, order_gen))
    chunks = split_batches(order, cfg.batch_size, rank, world)
    step.net.train()
    if ph == "head":
        model.encoder.eval()  # frozen encoder: BatchNorm statistics stay fixed
    bar = tqdm(total=sum(len(c) for c in chunks), desc=f"epoch {epoch + 1}/{total_epochs}", unit="img",
               disable=not cfg.progress or rank != 0, leave=False, dynamic_ncols=True)

    def on_step(n: int, mean_loss: Optional[float]) -> None:
        bar.update(n)
        if mean_loss is not None:  # read from the device accumulators every few steps only
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)

    t0 = time.perf_counter()
    loss_sum, seen = step.run_epoch(epoch, chunks, np.random.default_rng(aug_seed), np.random.default_rng(mix_seed),
                                    torch.Generator().manual_seed(aug_seed), ph == "main", on_step)
    bar.close()
    secs = time.perf_counter() - t0
    return {"epoch": epoch, "loss": loss_sum / max(seen, 1), "images": seen * world,
            "seconds": secs, "img_per_s": seen * world / max(secs, 1e-9)}


def _color_match(train_set: ImageSet, train_m: Manifest, cfg: TrainConfig) -> Optional[dict]:
    """``train.synthetic.color_match``: synthetic images take the real images' colour statistics
    (in place, on the decoded training images only; validation and test images are untouched)."""
    mode = cfg.synthetic.color_match
    if mode == "off":
        return None
    if train_set.images is None:
        raise SynaugError("train.synthetic.color_match works on the in-memory data path; these images are "
                          "streamed (set train.data.mode: memory)")
    return syn.color_match_(train_set.images, train_set.synthetic.numpy() > 0, train_m.df["label"].to_numpy(),
                            mode, cfg.synthetic.color_match_min_real)


def tqdm_write(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(msg)


def _log_epoch(row: dict, total: int) -> None:
    from tqdm.auto import tqdm

    val = "".join(f" {k} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
    tqdm.write(f"epoch {row['epoch'] + 1}/{total} [{row['phase']}] loss {row['loss']:.4f} lr {row['lr']:.3g} "
               f"{row['img_per_s']:.0f} img/s{val}")


def _write_epoch(out_dir, model, optimizer, algo, meta, epoch, ph, history, best, cfg_dump,
                 fingerprint, world, scaler) -> None:
    wname = f"epoch_{epoch:04d}.safetensors"
    sname = f"epoch_{epoch:04d}.state.safetensors"
    ckpt.save_model(model, out_dir / wname, {**meta, "epoch": epoch})
    opt_info = ckpt.save_training_state(out_dir / sname, optimizer, algo.state_dict())
    record = {"epoch": epoch, "phase": ph, "weights": wname, "state": sname, "optimizer": opt_info,
              "scheduler": {"kind": "epoch-function", "lr": history[-1]["lr"]},
              "scaler": scaler.state_dict() if scaler is not None else None,
              "history": history, "best": best, "config": cfg_dump,
              "train_fingerprint": fingerprint, "world_size": world}
    ckpt.write_last(out_dir, record)
    # drop older epoch files (the pointer already moved on)
    keep = {f"epoch_{e:04d}" for e in range(epoch - cfg_dump["keep_checkpoints"] + 1, epoch + 1)}
    keep.add(Path(best.get("weights") or "-").name.split(".")[0])
    for p in [*out_dir.glob("epoch_*.safetensors"), *out_dir.glob("best_*.safetensors")]:
        if p.name.split(".")[0] not in keep:
            p.unlink(missing_ok=True)
