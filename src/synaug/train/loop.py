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
from ..allocator import keep_freed_memory
from ..threads import ThreadGovernor, describe as describe_threads
from ..models import Classifier, create_model
from . import checkpoint as ckpt
from . import distributed as ddp
from .algorithms import Algorithm, DataInfo, build_algorithm
from .config import TrainConfig
from .data import ImageSet, refuse_test_rows, split_batches
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
    run = _Training(train_manifest, val_manifest, cfg or TrainConfig(), Path(out_dir))
    run.restore(resume)
    run.train(callbacks)
    return run.finish()


def _inputs(train_manifest: Manifest, val_manifest: Optional[Manifest]) -> tuple[Manifest, Optional[Manifest]]:
    """The training rows and the model-selection rows (None: keep the last epoch); test rows refused."""
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
    return train_m, val_m


def _init_model(cfg: TrainConfig, num_classes: int, device) -> Classifier:
    torch.manual_seed(seed_for(cfg.seed, 0xA11))  # model init independent of data-side draws
    model = build_model(cfg, num_classes)
    if cfg.synthetic.separate_bn:
        syn.split_batchnorm(model)  # same state-dict keys: checkpoints stay plain models
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def _meta(train_m: Manifest, cfg: TrainConfig) -> dict:
    """What every saved model carries besides its weights."""
    real = train_m.df["source"] == "real"
    aug = cfg.augment
    return {"classes": train_m.classes, "groups": train_m.groups,
            "train_class_counts": train_m.class_counts().tolist(),
            "real_train_class_counts": np.bincount(train_m.df.loc[real, "label"],
                                                   minlength=train_m.num_classes).tolist(),
            "train_cell_counts": train_m.cell_counts().tolist(),
            "real_train_cell_counts": train_m.select(real.to_numpy()).cell_counts().tolist(),
            "algorithm": cfg.algorithm.name, "mean": list(aug.mean), "std": list(aug.std),
            "image_size": cfg.data.image_size, "eval_resize": cfg.data.eval_resize, "stage": "train"}


class _Training:
    """One call of :func:`train_model`: data, model and state, then stage by stage (restore,
    train, finish). Every rank builds one; rank 0 alone writes files."""

    def __init__(self, train_manifest: Manifest, val_manifest: Optional[Manifest], cfg: TrainConfig,
                 out_dir: Path):
        self.cfg, self.out_dir = cfg, out_dir
        self.device = ddp.local_device(resolve_device(cfg.device))
        self.rank, self.world = ddp.init(self.device)
        self.train_m, self.val_m = _inputs(train_manifest, val_manifest)
        syn.check(cfg, cfg.algorithm.name)
        seed_everything(cfg.seed)
        aug, m = cfg.augment, self.train_m
        self.train_set = ImageSet(m, cfg.data, "training", self.device, cfg.channels_last, aug.mean, aug.std)
        self.color = _color_match(self.train_set, m, cfg)
        self.val_set = (ImageSet(self.val_m, cfg.data, "model selection", self.device, cfg.channels_last,
                                 aug.mean, aug.std) if self.val_m is not None and self.rank == 0 else None)
        info = DataInfo(m.df["label"].to_numpy(), m.df["group"].to_numpy(), m.num_classes, m.num_groups,
                        cfg.epochs)
        self.algo = build_algorithm(cfg.algorithm, info, self.device)
        self.total_epochs = cfg.epochs + self.algo.extra_epochs()
        self.model = _init_model(cfg, m.num_classes, self.device)
        self.meta, self.cfg_dump, self.fingerprint = _meta(m, cfg), dump(cfg), manifest_fingerprint(m)
        self.start, self.history = 0, []
        self.best = {"epoch": None, "value": None, "metric": cfg.select_metric}
        self.optimizer = _optimizer_for(self.model, "main", cfg, self.algo)
        self.step: Optional[TrainStep] = None
        self.governor: Optional[ThreadGovernor] = None

    def phase(self, epoch: int) -> str:
        return "main" if epoch < self.cfg.epochs else "head"

    def restore(self, resume: bool) -> None:
        """Continue from ``last.json`` (when ``resume`` and present), else start the folder afresh."""
        cfg, out_dir = self.cfg, self.out_dir
        if self.rank == 0:  # half-written files of a run killed inside an atomic write
            remove_temps(out_dir, owned=_OWN_TEMP.match)
        last = ckpt.read_last(out_dir) if resume else None
        if last is None:
            if self.rank == 0:
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / "last.json").unlink(missing_ok=True)  # --no-resume: never point at an old run
                save_resolved(cfg, out_dir / "config.yaml")
            return
        if _check_resume(last, cfg, self.fingerprint, out_dir) == "extend" and self.rank == 0:
            save_resolved(cfg, out_dir / "config.yaml")
        self.model.load_state_dict(ckpt.load_file_state(out_dir / last["weights"]))
        self.start = int(last["epoch"]) + 1
        self.history, self.best = last["history"], last["best"]
        if self.start >= self.total_epochs:
            return
        ph = self.phase(self.start)
        self.optimizer = _optimizer_for(self.model, ph, cfg, self.algo)
        if last["phase"] == ph:
            self.algo.load_state_dict(ckpt.load_training_state(out_dir / last["state"], last["optimizer"],
                                                               self.optimizer, self.device))
        else:  # first head-phase epoch: fresh head optimizer, keep algorithm state
            self.algo.load_state_dict(ckpt.load_training_state_algo(out_dir / last["state"]))

    def train(self, callbacks: Sequence[Callable[[dict], None]]) -> None:
        """The epochs left: precision, compile and step mode decided once, then one epoch at a time."""
        cfg, dev = self.cfg, self.device
        self.amp, self.amp_why = resolve_amp(cfg.amp, dev)
        per_epoch = syn.rows_per_epoch(self.train_m)   # fewer than all rows when synthetic rows rotate
        steps_left = (per_epoch // (cfg.batch_size * self.world)) * (self.total_epochs - self.start)
        compiled, compile_why = resolve_compile(cfg.compile, dev, steps_left)
        if self.amp == "bf16-emulated" and compiled:
            compiled, compile_why = False, "compile: off: amp bf16-emulated runs eagerly (a dispatch mode)"
        self.scaler = torch.amp.GradScaler(dev.type) if self.amp == "fp16" else None
        mode, mode_why = choose_mode(cfg, dev, self.world, self.algo, self.amp)
        self.plan = {"mode": mode, "why": mode_why, "compile": compiled, "compile_why": compile_why}
        self.governor = ThreadGovernor(passive_collapses=self.amp == "bf16") if dev.type == "cpu" else None
        if dev.type == "cpu":
            keep_freed_memory()
        for epoch in range(self.start, self.total_epochs):
            row = self._epoch(epoch)
            for cb in callbacks:
                cb(row)

    def _epoch(self, epoch: int) -> dict:
        cfg, ph = self.cfg, self.phase(epoch)
        if epoch == self.start or (ph == "head" and self.phase(epoch - 1) == "main"):
            self._begin_phase(epoch, ph)
        lr = (lr_at(epoch, cfg.optim.lr, cfg.epochs, cfg.schedule) if ph == "main"
              else self.algo.head_lr(epoch - cfg.epochs, cfg.optim.lr))
        set_lr(self.optimizer, lr)
        row = _train_epoch(self.step, self.model, self.algo, self.train_set, cfg, epoch, self.total_epochs, ph,
                           self.rank, self.world)
        self.algo.after_epoch(self.model, epoch)
        row["lr"] = lr
        row["phase"] = ph
        if self.governor is not None:
            row["threads"] = torch.get_num_threads()
            self.governor.check(log=tqdm_write if cfg.progress and self.rank == 0 else None)
        self._validate(epoch, row)
        self.history.append(row)
        if cfg.progress and self.rank == 0:
            _log_epoch(row, self.total_epochs)
        if self.rank == 0:
            _write_epoch(self.out_dir, self.model, self.optimizer, self.algo, self.meta, epoch, ph, self.history,
                         self.best, self.cfg_dump, self.fingerprint, self.world, self.scaler)
        ddp.barrier()
        return row

    def _begin_phase(self, epoch: int, ph: str) -> None:
        if epoch != self.start:
            self.optimizer = _optimizer_for(self.model, ph, self.cfg, self.algo)
        net = _prepare(self.model, ph, self.device)
        self.algo.start_phase(self.model, ph)
        if self.step is None:
            p = self.plan
            self.step = TrainStep(net, self.model, self.optimizer, self.algo, self.train_set, self.cfg, self.device,
                                  self.scaler, p["mode"], amp=self.amp, compile_=p["compile"])
            self.step.mode_why = p["why"]
        self.step.net = net
        self.step.set_optimizer(self.optimizer)

    def _validate(self, epoch: int, row: dict) -> None:
        """Model selection on the validation split (rank 0 evaluates, all ranks agree)."""
        if self.val_set is None and not (self.val_m is not None and self.world > 1):
            return
        if (epoch + 1) % self.cfg.eval_every != 0 and epoch != self.total_epochs - 1:
            return
        metric, value = self.cfg.select_metric, None
        if self.rank == 0:
            logits = predict_logits(self.model, self.val_set, self.cfg.data.eval_batch_size, amp=self.amp)
            value = _select_value(metric, logits, self.val_m)
            row["val_top1"] = _select_value("top1", logits, self.val_m)
            row[f"val_{metric}"] = value
        value = ddp.broadcast(value)
        if self.best["value"] is None or value > self.best["value"]:
            # a new file per best epoch; last.json (written with the epoch) is the only pointer to it
            self.best.update(epoch=epoch, value=value, weights=f"best_{epoch:04d}.safetensors")
            if self.rank == 0:
                ckpt.save_model(self.model, self.out_dir / self.best["weights"], {**self.meta, "epoch": epoch})

    def finish(self) -> TrainResult:
        """The selected model (best validation epoch, else the last) as ``model.safetensors``, the
        history and ``summary.json``; every rank returns it."""
        cpu_info = {**describe_threads(), **(self.governor.summary() if self.governor is not None else {})}
        if self.device.type == "cpu":
            cpu_info["malloc"] = keep_freed_memory()   # the process's state (set once, in train)
        if self.governor is not None:
            self.governor.close()  # the threads it took away are given back for what runs next
        in_sync = ddp.parameters_in_sync(self.model) if self.world > 1 else None
        if self.rank == 0:
            self._write_final(in_sync, cpu_info)
        ddp.barrier()
        final = ckpt.load_model(self.out_dir / "model.safetensors", self.device).eval()
        return TrainResult(final, self.out_dir / "model.safetensors", self.history, self.best["epoch"], self.out_dir)

    def _write_final(self, in_sync: Optional[bool], cpu_info: dict) -> None:
        cfg, out_dir, best = self.cfg, self.out_dir, self.best
        last = ckpt.read_last(out_dir)
        if last is None:
            raise SynaugError(f"no completed epoch in {out_dir}")
        final = ckpt.load_model(out_dir / (best["weights"] if best["epoch"] is not None else last["weights"]),
                                self.device)
        ckpt.save_model(final, out_dir / "model.safetensors",
                        {**self.meta, "epoch": final.meta.get("epoch"), "selected_by": (
                            f"val {cfg.select_metric}" if best["epoch"] is not None else "last epoch")})
        write_json_atomic(out_dir / "history.json", self.history)
        m = self.train_m
        write_json_atomic(out_dir / "summary.json", {
            "epochs": self.total_epochs, "best_epoch": best["epoch"], "best_value": best["value"],
            "select_metric": cfg.select_metric if best["epoch"] is not None else None,
            "num_train": len(m), "num_val": len(self.val_m) if self.val_m is not None else 0,
            "train_sources": m.df["source"].value_counts().to_dict(), "world_size": self.world,
            **_rotation(m),
            "device": str(self.device), "data_mode": self.train_set.mode, "ranks_in_sync": in_sync,
            **({"synthetic": {**dump(cfg.synthetic), "color_match_stats": self.color}} if cfg.synthetic.active
               else {}),
            "step": self._step_info(), "amp": {"requested": cfg.amp, "used": self.amp, "why": self.amp_why},
            "cpu": cpu_info})

    def _step_info(self) -> dict:
        s, p = self.step, self.plan
        if s is None:  # nothing left to train (a finished run resumed)
            return {"mode": p["mode"], "why": p["why"], "compile": p["compile"], "compile_why": p["compile_why"],
                    "graph_captures": 0, "graph_capture_s": 0.0}
        return {"mode": s.mode, "why": s.mode_why, "compile": s.compiled,
                "compile_why": s.compile_why or p["compile_why"], "graph_captures": s.captures, "graph_capture_s": round(s.capture_s, 3)}


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
    order = syn.epoch_order(train_set, cfg.synthetic, epoch, cfg.epochs, cfg.batch_size, order_gen,
                            algo.sample_weights())
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


def _rotation(m: Manifest) -> dict:
    """What a rotating selection makes of the epochs (``summary.json``); empty when none."""
    r = syn.rounds_of(m)
    if r is None:
        return {}
    return {"synthetic_rounds": int(r.max()) + 1, "rows_per_epoch": syn.rows_per_epoch(m),
            "rotation": "each epoch: every real row and the synthetic rows of round epoch mod synthetic_rounds"}


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
