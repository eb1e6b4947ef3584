"""The training step of ``synaug train``: static shapes, no host synchronisation, and the same
code whether it runs eagerly, compiled (``torch.compile``) or captured as CUDA graphs.

Why: a ResNet-32 step on a GPU launches a few hundred tiny kernels; run eagerly from Python the
GPU idles between launches. Capturing the whole step (gather + crop/flip + normalise + Mixup /
CutMix + forward + loss + backward + optimizer) as a CUDA graph replays all of it with one
launch. That needs a step that (1) never waits for the device (no ``.item()``, no
``float(tensor)``, no data-dependent Python branch), (2) has the same shapes every step and
(3) reads every per-step input from fixed device buffers.

How:

* Every random choice of an epoch is drawn on the host at the epoch start (numpy generators
  seeded from ``(seed, epoch, rank)`` by the loop): the batch order, crop offsets and flips,
  per batch whether it is mixed and how (:func:`draw_mix_plan`). The choices are copied once
  into device tables; step ``k`` reads row ``k`` through a device counter that the step itself
  increments. Random streams therefore do not depend on the device or on the step mode.
* The loss and a non-finite count accumulate on the device; the host reads them every
  :data:`CHECK_EVERY` steps (divergence check, progress bar) and at the epoch end.
* Full batches share one shape; the last, smaller batch of an epoch runs the same function
  eagerly. Mixed and unmixed batches are two variants (two graphs), chosen on the host from
  the plan, so unmixed batches keep hard labels exactly as before.
* ``cuda_graph`` (config): ``auto`` captures on a CUDA device when the run is single-process,
  not fp16 (the GradScaler reads an overflow flag on the host every step; use bf16) and the
  algorithm's state is updated in place (stateless algorithms, or ``graph_safe = True``).
  Graphs are captured again at every epoch start (the learning rate and the algorithm's
  epoch-dependent choices are fixed inside a graph). Before a variant is first captured after an
  optimizer is built, it runs :data:`WARMUP_STEPS` times eagerly on a side stream, as PyTorch
  requires (lazy optimizer state, cuBLAS / cuDNN set-up and, with ``compile``, compilation and
  autotuning must not happen inside a capture); a variant first met late in an epoch (e.g. the
  unmixed one under CutMix's ``cutmix_prob``) is warmed up then, before its capture.
  Captures use the thread-local error mode: the pin-memory thread of the streaming loader may
  allocate pinned host memory meanwhile, which the global mode turns into a failed capture.
  ``auto`` leaves epochs of fewer than :data:`MIN_GRAPH_STEPS` full batches eager (the captures
  would cost what they save).
* ``train.synthetic`` options read per-row inputs the same way: a row's synthetic flag comes
  from a device table (:class:`synaug.train.synthetic.SyntheticRows`), is mixed like its label,
  and gives its loss weight, label smoothing and batch-norm route on the device.
* ``compile`` wraps the forward half (data → logits / targets) in ``torch.compile``; it
  composes with the graphs (inductor's own CUDA graphs are then left off).

Eager, compiled and graphed steps make the same random choices; eager and graphed steps run
the same kernels, compiled ones fuse them (tests/test_train_step.py states the tolerances).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SynaugError
from .config import MixConfig, TrainConfig
from .data import crop_flip_at
from .precision import autocast, resolve_amp
from .synthetic import SyntheticRows, weighted_mean

#: batch kinds in a mix plan
NONE, MIXUP, CUTMIX = 0, 1, 2
#: the host reads the device accumulators (loss, divergence) every this many steps
CHECK_EVERY = 50
#: eager steps of each variant (mixed / unmixed) before its first CUDA-graph capture with an
#: optimizer (side stream, as documented in PyTorch's CUDA-graph notes: lazy state such as momentum
#: buffers must exist, and torch.compile must have compiled, before capture)
WARMUP_STEPS = 3
#: ``cuda_graph: auto`` captures only epochs with at least this many full batches: a capture
#: costs about as much host time as several eager steps (one traced step, instantiation, a
#: sync and a garbage collection), twice per epoch with mixed and unmixed batches
MIN_GRAPH_STEPS = 32


# ---------------------------------------------------------------------------- random plans
def cutmix_box(lam: float, cx: int, cy: int, H: int, W: int) -> tuple[int, int, int, int]:
    """The box CutMix pastes, as CutMix's reference computes it (``rand_bbox`` in
    clovaai/CutMix-PyTorch train.py): sides ``int(H * sqrt(1 - lam))`` / ``int(W * ...)``,
    centred on ``(cx, cy)`` with half-sides rounded down, clipped to the image.

    Returns ``(r0, r1, c0, c1)``: rows ``r0:r1`` (dimension 2) and columns ``c0:c1`` (dimension 3).
    """
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(H * cut), int(W * cut)
    r0, r1 = np.clip(cx - ch // 2, 0, H), np.clip(cx + ch // 2, 0, H)
    c0, c1 = np.clip(cy - cw // 2, 0, W), np.clip(cy + cw // 2, 0, W)
    return int(r0), int(r1), int(c0), int(c1)


@dataclass
class MixPlan:
    """Per-batch mixing choices of one epoch (host arrays, one entry per batch)."""

    kind: np.ndarray       # (S,) NONE / MIXUP / CUTMIX
    lab_w: np.ndarray      # (S,) weight of a row's own label (Mixup: lam; CutMix: 1 - box area share)
    img_w: np.ndarray      # (S,) weight of a row's own pixels outside the box (Mixup: lam; else 1)
    box: np.ndarray        # (S, 4) r0, r1, c0, c1 of the pasted box (empty unless CutMix)
    pair: list             # (b,) partner position of every row of the batch (identity when unmixed)


def draw_mix_plan(rng: np.random.Generator, sizes: list[int], hw: tuple[int, int], mix: MixConfig,
                  active: bool) -> MixPlan:
    """Draw how every batch of an epoch is mixed.

    Per batch, in this order: offered for mixing with probability ``mix.prob``; with both
    mixers on, Mixup or CutMix uniformly (as ``torchvision.transforms.v2.RandomChoice``);
    CutMix then applies with probability ``mix.cutmix_prob`` (``r < cutmix_prob`` in CutMix's
    reference); ``lam ~ Beta(alpha, alpha)``; partners by a random permutation of the batch
    (as both reference implementations, ``torch.randperm``); CutMix's box centre uniform over
    rows, then columns, and the label weight corrected to the pasted area.
    """
    H, W = hw
    S = len(sizes)
    kind = np.zeros(S, np.int64)
    lab_w = np.ones(S, np.float32)
    img_w = np.ones(S, np.float32)
    box = np.zeros((S, 4), np.int64)
    pair = []
    mixers = [k for k, on in ((MIXUP, mix.mixup), (CUTMIX, mix.cutmix)) if on]
    for s, b in enumerate(sizes):
        p = np.arange(b)
        if active and mixers and rng.random() < mix.prob:
            choice = mixers[0] if len(mixers) == 1 else mixers[int(rng.integers(len(mixers)))]
            if choice == MIXUP:
                lam = float(rng.beta(mix.mixup_alpha, mix.mixup_alpha))
                p = rng.permutation(b)
                kind[s], lab_w[s], img_w[s] = MIXUP, lam, lam
            elif rng.random() < mix.cutmix_prob:
                lam = float(rng.beta(mix.cutmix_alpha, mix.cutmix_alpha))
                p = rng.permutation(b)
                r0, r1, c0, c1 = cutmix_box(lam, int(rng.integers(H)), int(rng.integers(W)), H, W)
                kind[s], box[s] = CUTMIX, (r0, r1, c0, c1)
                lab_w[s] = 1.0 - (r1 - r0) * (c1 - c0) / (H * W)
        pair.append(p)
    return MixPlan(kind, lab_w, img_w, box, pair)


def mix_batch(x: torch.Tensor, lab: torch.Tensor, pair: torch.Tensor, img_w: torch.Tensor,
              lab_w: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup / CutMix of a batch with tensor parameters (no host synchronisation).

    ``x_i <- box ? x_pair(i) : img_w * x_i + (1 - img_w) * x_pair(i)`` and
    ``lab_i <- lab_w * lab_i + (1 - lab_w) * lab_pair(i)``: Mixup is ``img_w = lab_w = lam``
    with an empty box, CutMix ``img_w = 1`` with the box ``(r0, r1, c0, c1)``.
    ``img_w``/``lab_w`` are 1-element tensors, ``box`` a 4-element long tensor.
    """
    H, W = x.shape[-2:]
    xp = x.index_select(0, pair)
    rows = torch.arange(H, device=x.device)
    cols = torch.arange(W, device=x.device)
    inbox = (((rows >= box[0]) & (rows < box[1]))[:, None] & ((cols >= box[2]) & (cols < box[3]))[None, :])
    w = img_w.to(x.dtype).view(1, 1, 1, 1)
    x = torch.where(inbox, xp, x * w + xp * (1 - w))
    lw = lab_w.to(lab.dtype).view(1, 1)
    return x, lab * lw + lab.index_select(0, pair) * (1 - lw)


def one_hot(ids: torch.Tensor, k: int) -> torch.Tensor:
    """Float one-hot rows without the range check (``F.one_hot`` reads the max on the host)."""
    return (ids[:, None] == torch.arange(k, device=ids.device)).float()


# ---------------------------------------------------------------------------- step modes
def graph_safe(algo) -> bool:
    """True when ``algo`` may run inside a CUDA graph: stateless, or declares ``graph_safe``
    (its per-step state is updated in place, so replays see it)."""
    from .algorithms import Algorithm

    flag = getattr(algo, "graph_safe", None)
    if flag is not None:
        return bool(flag)
    return type(algo).state_dict is Algorithm.state_dict and type(algo).load_state_dict is Algorithm.load_state_dict


def choose_mode(cfg: TrainConfig, device: torch.device, world: int, algo,
                amp: Optional[str] = None) -> tuple[str, str]:
    """``("graph" | "eager", why)`` from ``cfg.cuda_graph`` and what the run allows (``amp``: the
    resolved precision, default ``cfg.amp``)."""
    amp = cfg.amp if amp is None else amp
    if cfg.cuda_graph == "off":
        return "eager", "cuda_graph: off"
    why = []
    if device.type != "cuda":
        why.append(f"device {device.type} (CUDA graphs need a CUDA device)")
    if world > 1:
        why.append("multi-process (DDP) training")
    if amp == "fp16":
        why.append("amp fp16 (its GradScaler reads an overflow flag every step; use amp: bf16)")
    if not graph_safe(algo):
        why.append(f"algorithm {algo.name} keeps per-step state outside the graph")
    if why:
        if cfg.cuda_graph == "on":
            raise SynaugError("cuda_graph: on is not possible here: " + "; ".join(why))
        return "eager", "; ".join(why)
    if cfg.cuda_graph == "on":
        return "graph", "CUDA graphs (cuda_graph: on)"
    return "graph", f"CUDA graphs for epochs of >= {MIN_GRAPH_STEPS} full batches (cuda_graph: auto)"


class CudaCapture:
    """Captures a step as a CUDA graph (private memory pool shared by this epoch's graphs)."""

    def __init__(self):
        self.pool = None

    def new_epoch(self) -> None:
        self.pool = torch.cuda.graph_pool_handle()

    def warmup(self, fn: Callable[[], None], steps: int) -> None:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(steps):
                fn()
        torch.cuda.current_stream().wait_stream(s)

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        g = torch.cuda.CUDAGraph()
        # thread_local: the streaming DataLoader's pin-memory thread may call cudaHostAlloc while
        # this thread captures; the default (global) mode would invalidate the capture for it
        with torch.cuda.graph(g, pool=self.pool, capture_error_mode="thread_local"):
            fn()
        return g.replay


# ---------------------------------------------------------------------------- the step
class _Tables:
    """Device buffers of one group of equal-size batches (fixed addresses across epochs)."""

    def __init__(self, S: int, b: int, device):
        z = lambda *shape, dtype=torch.long: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        self.S, self.b = S, b
        self.idx, self.oy, self.ox, self.pair = z(S, b), z(S, b), z(S, b), z(S, b)
        self.flip = z(S, b, dtype=torch.bool)
        self.img_w, self.lab_w = z(S, dtype=torch.float32), z(S, dtype=torch.float32)
        self.box = z(S, 4)
        self.counter = z(1)

    def load(self, rows: dict[str, np.ndarray]) -> None:
        for k, v in rows.items():
            getattr(self, k).copy_(torch.from_numpy(np.ascontiguousarray(v)))
        self.counter.zero_()


class TrainStep:
    """Runs the epochs of :func:`synaug.train.loop.train_model` (see the module docstring).

    Parameters
    ----------
    net, model : nn.Module
        The module called (DDP-wrapped or not) and the plain classifier.
    optimizer, algo, images, cfg, device, scaler
        As in the loop.
    mode : {"eager", "graph"}
        From :func:`choose_mode`.
    capture : object, optional
        The graph capturer (default :class:`CudaCapture`); tests pass a CPU stand-in.
    """

    def __init__(self, net, model, optimizer, algo, images, cfg: TrainConfig, device, scaler=None,
                 mode: str = "eager", capture=None, amp: Optional[str] = None, compile_=None):
        self.net, self.model, self.optimizer, self.algo = net, model, optimizer, algo
        # resolved precision / compilation (the loop resolves cfg's "auto"; default: as configured)
        self.amp = amp if amp is not None else resolve_amp(cfg.amp, device)[0]
        self.compiled = compile_ if compile_ is not None else (cfg.compile if cfg.compile != "auto" else False)
        self.compile_why = ""                          # set when an automatic compile falls back
        self.images, self.cfg, self.device, self.scaler = images, cfg, device, scaler
        self.mode = mode
        self.mode_why = ""                             # set by the loop / a failed capture
        self.capture = capture if capture is not None else (CudaCapture() if mode == "graph" else None)
        self.C = model.num_classes
        self.K = algo.num_loss_groups
        self.hw = images.image_hw
        self.memory = images.mode == "memory"
        self.stats = torch.zeros(2, dtype=torch.float64, device=device)  # loss * rows, non-finite losses
        self.syn = SyntheticRows(cfg.synthetic, images, model)  # train.synthetic (per-row, off by default)
        self._tables: dict[str, _Tables] = {}
        self._inp: dict[str, torch.Tensor] = {}    # streaming path: the current batch
        self._static: dict[str, torch.Tensor] = {} # ... and the fixed buffers graphs read it from
        self._warm: dict[bool, int] = {}           # warm-up steps per variant since the optimizer was built
        self._epoch = 0
        self.captures = 0                          # graphs captured (reported by benchmarks)
        self.capture_s = 0.0                       # ... and the host time they took
        fwd = self._forward
        if self.compiled:
            mode_ = None if self.compiled in (True, "default") else (
                "max-autotune-no-cudagraphs" if mode == "graph" else "max-autotune")
            import torch._dynamo as dynamo

            # variants: full / last batch x mixed / unmixed x main / head phase
            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 16)
            fwd = torch.compile(self._forward, dynamic=False, mode=mode_)
        self._fwd = fwd

    def set_optimizer(self, optimizer) -> None:
        """A new optimizer (head phase): graphs are warmed up again before the next capture."""
        self.optimizer = optimizer
        self._warm = {}
        if self.mode == "graph":
            for g in optimizer.param_groups:
                if "capturable" in g:   # Adam / AdamW keep their step count on the device
                    g["capturable"] = True
                    for p in g["params"]:
                        st = optimizer.state.get(p, {})
                        if torch.is_tensor(st.get("step")):
                            st["step"] = st["step"].to(p.device, torch.float32)

    # ---------------------------------------------------------------- one step
    def _forward(self, group: str, mixed: bool):
        """Data -> (logits, targets, group targets): the part ``compile`` compiles."""
        t = self._tables[group]
        k = t.counter
        if self.memory:
            idx = t.idx.index_select(0, k).view(-1)
            x = self.images.images.index_select(0, idx.to(self.images.images.device))
            a = self.cfg.augment
            if a.crop_padding > 0 or a.flip:
                x = crop_flip_at(x.to(self.device), t.oy.index_select(0, k).view(-1),
                                  t.ox.index_select(0, k).view(-1), t.flip.index_select(0, k).view(-1),
                                  a.crop_padding)
            x = self.images.norm(x.to(self.device))
            y = self.images.on_device("labels").index_select(0, idx)
            g = self.images.on_device("groups").index_select(0, idx)
            s = self.syn.rows(idx)
        else:
            x, y, g = self._inp["x"], self._inp["y"], self._inp["g"]
            s = self._inp.get("s")
        gm = one_hot(self.algo.loss_group_ids(y, g), self.K) if self.K else None
        if not mixed:
            self.syn.route(s)
            logits = self._logits(x)
            return logits, self.syn.targets(y, s, self.C), gm, self.syn.weights(s)
        lab = self.syn.labels(one_hot(y, self.C), s)
        if gm is not None:
            lab = torch.cat([lab, gm], 1)
        if s is not None:  # a row's synthetic share is mixed like its label
            lab = torch.cat([lab, s[:, None]], 1)
        x, lab = mix_batch(x, lab, t.pair.index_select(0, k).view(-1), t.img_w.index_select(0, k),
                           t.lab_w.index_select(0, k), t.box.index_select(0, k).view(-1))
        if s is not None:
            s, lab = lab[:, -1], lab[:, :-1]
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.syn.route(s)
        return (self._logits(x), lab[:, :self.C], (lab[:, self.C:] if gm is not None else None),
                self.syn.weights(s))

    def _logits(self, x):
        # graphs need autocast's weight-cast cache off (PyTorch CUDA-graph notes)
        with autocast(self.amp, self.device, cache_enabled=self.mode != "graph"):
            return self.net(x)

    def _forward_any(self, group: str, mixed: bool):
        """The (compiled) forward; a failed automatic compile goes on eagerly with a warning."""
        if self._fwd is self._forward or self.cfg.compile != "auto":
            return self._fwd(group, mixed)
        try:
            return self._fwd(group, mixed)
        except Exception as e:  # inductor / dynamo errors have many types
            import warnings

            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            warnings.warn(f"torch.compile of the training step failed ({first}); continuing eagerly")
            self._fwd, self.compiled = self._forward, False
            self.compile_why = f"compile: auto -> off: compilation failed ({first})"
            return self._fwd(group, mixed)

    def _step(self, group: str, mixed: bool) -> None:
        epoch = self._epoch
        self.syn.bind(self._tables[group].b, self.device)
        logits, targets, gm, w = self._forward_any(group, mixed)
        if w is None:
            loss = self.algo.loss(logits.float(), targets, gm, epoch)
        else:  # train.synthetic.loss_weight: weighted mean of the per-row losses
            loss = weighted_mean(self.algo.row_loss(logits.float(), targets, gm, epoch), w)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            with autocast(self.amp, self.device) if self.amp == "bf16-emulated" else nullcontext():
                loss.backward()  # the emulation rounds the backward too; autocast needs no context
            self.optimizer.step()
        self.algo.after_step(self.model, epoch)
        loss = loss.detach().double()
        self.stats.add_(torch.stack([loss * targets.shape[0], (~torch.isfinite(loss)).double()]))
        self._tables[group].counter.add_(1)

    # ---------------------------------------------------------------- one epoch
    def _group_tables(self, chunks: list[torch.Tensor]) -> list[tuple[str, int, int]]:
        """``(group, first, stop)`` spans of equal-size batches: all but maybe the last are full."""
        b = len(chunks[0])
        S = sum(1 for c in chunks if len(c) == b)
        spans = [("full", 0, S)]
        if S < len(chunks):
            spans.append(("tail", S, len(chunks)))
        for name, lo, hi in spans:
            bb = len(chunks[lo])
            t = self._tables.get(name)
            if t is None or (t.S, t.b) != (hi - lo, bb):
                self._tables[name] = _Tables(hi - lo, bb, self.device)
        return spans

    def run_epoch(self, epoch: int, chunks: list[torch.Tensor], aug_rng: np.random.Generator,
                  mix_rng: np.random.Generator, stream_gen: torch.Generator, mix_active: bool,
                  on_step: Optional[Callable[[int, Optional[float]], None]] = None) -> tuple[float, int]:
        """Train one epoch on ``chunks`` (this rank's row numbers per batch).

        Returns ``(sum of loss x rows, rows)``. Raises :class:`SynaugError` on a non-finite loss
        (checked every :data:`CHECK_EVERY` steps and at the end). ``on_step(rows, mean_loss)``
        is called after each step (``mean_loss`` only where the host read the accumulators).
        """
        self._epoch = epoch
        sizes = [len(c) for c in chunks]
        if not sizes:
            return 0.0, 0
        plan = draw_mix_plan(mix_rng, sizes, self.hw, self.cfg.mix, mix_active)
        spans = self._group_tables(chunks)
        a = self.cfg.augment
        for name, lo, hi in spans:
            rows: dict[str, np.ndarray] = {
                "pair": np.stack(plan.pair[lo:hi]), "img_w": plan.img_w[lo:hi], "lab_w": plan.lab_w[lo:hi],
                "box": plan.box[lo:hi]}
            if self.memory:
                idx = torch.stack(chunks[lo:hi]).numpy()
                rows["idx"] = idx
                p = a.crop_padding
                rows["oy"] = aug_rng.integers(0, 2 * p + 1, idx.shape)
                rows["ox"] = aug_rng.integers(0, 2 * p + 1, idx.shape)
                rows["flip"] = aug_rng.random(idx.shape) < 0.5 if a.flip else np.zeros(idx.shape, bool)
            self._tables[name].load(rows)
        self.stats.zero_()
        S_full = spans[0][2]
        graphs: dict[bool, Callable[[], None]] = {}
        graphed = self.mode == "graph" and (self.cfg.cuda_graph == "on" or S_full >= MIN_GRAPH_STEPS)
        if graphed:
            self.capture.new_epoch()
        data = (None if self.memory else
                iter(self.images.stream_batches(chunks, a, stream_gen)))
        seen = 0
        for i, n in enumerate(sizes):
            mixed = bool(plan.kind[i] != NONE)
            group = "full" if i < S_full else "tail"
            if data is not None:
                self._load_batch(next(data), group)
            if not (graphed and self.mode == "graph" and group == "full" and self._graph_step(mixed, graphs)):
                self._step(group, mixed)
            seen += n
            last = i == len(sizes) - 1
            mean = None
            if (i + 1) % CHECK_EVERY == 0 or last:
                loss_sum, bad = self.stats.tolist()
                if bad:
                    raise SynaugError(f"training diverged at epoch {epoch + 1} ({int(bad)} non-finite loss(es) "
                                      f"by step {i + 1}); lower optim.lr")
                mean = loss_sum / seen
            if on_step is not None:
                on_step(n, mean)
        return float(self.stats[0]), seen

    def _graph_step(self, mixed: bool, graphs: dict[bool, Callable[[], None]]) -> bool:
        """A full-batch step of a graphed epoch: a side-stream warm-up until this variant is warm,
        then its graph (captured at its first use in the epoch). False: run it eagerly (the
        capture failed under ``cuda_graph: auto``)."""
        if self._warm.get(mixed, 0) < WARMUP_STEPS:
            self.capture.warmup(lambda: self._step("full", mixed), 1)
            self._warm[mixed] = self._warm.get(mixed, 0) + 1
            return True
        if mixed not in graphs:
            replay = self._capture(mixed)
            if replay is None:
                return False
            graphs[mixed] = replay
        graphs[mixed]()
        return True

    def _capture(self, mixed: bool) -> Optional[Callable[[], None]]:
        """Capture the full-batch step; if that fails, ``cuda_graph: auto`` goes on eagerly
        (the failed capture ran nothing: parameters, statistics and counters are as before)."""
        t0 = time.perf_counter()
        try:
            replay = self.capture.capture(lambda: self._step("full", mixed))
        except Exception as e:  # capture errors come as RuntimeError / AcceleratorError / ...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if self.cfg.cuda_graph == "on":
                raise SynaugError(f"CUDA graph capture of the training step failed ({first}); "
                                  f"use cuda_graph: auto or off") from None
            import warnings

            warnings.warn(f"CUDA graph capture of the training step failed ({first}); continuing eagerly")
            self.mode, self.mode_why = "eager", f"capture failed: {first}"
            return None
        self.captures += 1
        self.capture_s += time.perf_counter() - t0
        return replay

    def _load_batch(self, batch, group: str) -> None:
        """Streaming path: the DataLoader's batch becomes the step's input (copied into fixed
        buffers when a graph reads it)."""
        new = {"x": batch.x, "y": batch.y, "g": batch.g, **self.syn.stream_rows(batch)}
        if self.mode != "graph" or group != "full":
            self._inp = new
            return
        st = self._static
        if not st or st["x"].shape != batch.x.shape:
            st = self._static = {k: v.clone() for k, v in new.items()}
        else:
            for k, v in new.items():
                st[k].copy_(v, non_blocking=True)
        self._inp = st
