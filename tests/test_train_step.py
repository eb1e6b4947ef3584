"""The training step (synaug.train.step): Mixup / CutMix against their reference code, the mix
plan's probabilities, no host synchronisation per step, and eager == graphed == compiled.

Tolerances (fp32, CPU):
* graphed vs eager: bit-identical (the same kernels replayed). On the CPU the capture is emulated
  by ``EmulatedCapture`` below. A replay re-runs the step's Python, so equality alone would only
  check the bookkeeping; the emulation also fails where a real graph would go wrong: an object the
  step reads (inputs, tables, optimizer, parameters, optimizer state, lr, epoch) rebound between
  capture and replay, a replay whose ops read other tensors or values than the capture's, a
  captured step that never ran in a side-stream warm-up, a torch.compile compilation inside a
  capture. What it cannot show: CUDA's own capture rules (allocations, syncs, other threads) and
  kernel-level numerics, which ``benchmarks/check_step_gpu.py`` checks on a GPU;
* eager step vs a plain PyTorch step written from the references: |diff| <= 1e-5 on every
  parameter and buffer after one SGD step at lr 0.1 (measured 1.5e-6: the fused normalisation
  ``x * 1/(255 std) - mean/std`` and the soft-target CE only reorder float ops);
* compiled (torch.compile, inductor) vs eager: tests/test_train_loop.py
  (``test_torch_compile_step_matches_eager``, slow-marked: inductor's C++ build on this CPU).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters as dynamo_counters
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from synaug.errors import SynaugError
from synaug.train import TrainConfig
from synaug.train.algorithms import DataInfo, build_algorithm
from synaug.train.config import MixConfig
from synaug.train.data import ImageSet, split_batches
from synaug.train.loop import build_model
from synaug.train.optim import build_optimizer
from synaug.train.step import (CHECK_EVERY, CUTMIX, MIN_GRAPH_STEPS, MIXUP, NONE, WARMUP_STEPS, CudaCapture, TrainStep,
                               _Tables, choose_mode, cutmix_box, draw_mix_plan, mix_batch, one_hot)
from synaug.train.toydata import make_toy_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- references
def ref_rand_bbox(size, lam, cx, cy):
    """Transcription of ``rand_bbox`` in clovaai/CutMix-PyTorch train.py (the two
    ``np.random.randint`` draws passed in as ``cx``, ``cy``; ``np.int`` is ``int``)."""
    W = size[2]
    H = size[3]
    cut_rat = np.sqrt(1. - lam)
    cut_w = int(W * cut_rat)
    cut_h = int(H * cut_rat)
    bbx1 = np.clip(cx - cut_w // 2, 0, W)
    bby1 = np.clip(cy - cut_h // 2, 0, H)
    bbx2 = np.clip(cx + cut_w // 2, 0, W)
    bby2 = np.clip(cy + cut_h // 2, 0, H)
    return bbx1, bby1, bbx2, bby2


def ref_cutmix_batch(input, target, r, lam, rand_index, cx, cy, beta=1.0, cutmix_prob=0.5):
    """Transcription of the batch branch of ``train`` in clovaai/CutMix-PyTorch train.py:
    returns the mixed input and a ``loss(output)`` function, given the draws ``r``
    (``np.random.rand(1)``), ``lam`` (``np.random.beta``), ``rand_index`` (``torch.randperm``)
    and the box centre."""
    input = input.clone()
    if beta > 0 and r < cutmix_prob:
        target_a = target
        target_b = target[rand_index]
        bbx1, bby1, bbx2, bby2 = ref_rand_bbox(input.size(), lam, cx, cy)
        input[:, :, bbx1:bbx2, bby1:bby2] = input[rand_index, :, bbx1:bbx2, bby1:bby2]
        lam = 1 - ((bbx2 - bbx1) * (bby2 - bby1) / (input.size()[-1] * input.size()[-2]))
        return input, lambda output: F.cross_entropy(output, target_a) * lam + F.cross_entropy(output, target_b) * (1. - lam)
    return input, lambda output: F.cross_entropy(output, target)


def ref_mixup_data(x, y, lam, index):
    """Transcription of ``mixup_data`` + ``mixup_criterion`` in facebookresearch/mixup-cifar10
    train.py (``lam`` and ``index`` passed in)."""
    mixed_x = lam * x + (1 - lam) * x[index, :]
    y_a, y_b = y, y[index]
    return mixed_x, lambda pred: lam * F.cross_entropy(pred, y_a) + (1 - lam) * F.cross_entropy(pred, y_b)


@pytest.mark.parametrize("lam,cx,cy", [(0.3, 5, 9), (0.9, 0, 15), (0.05, 15, 0), (0.5, 8, 8), (0.999, 3, 3)])
def test_cutmix_matches_the_reference(lam, cx, cy):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 16, 16, generator=g)
    y = torch.randint(0, 4, (6,), generator=g)
    perm = torch.randperm(6, generator=g)
    ref_x, ref_loss = ref_cutmix_batch(x, y, 0.2, lam, perm, cx, cy)
    box = cutmix_box(lam, cx, cy, 16, 16)
    assert box == tuple(int(v) for v in np.array(ref_rand_bbox(x.size(), lam, cx, cy))[[0, 2, 1, 3]])
    area = (box[1] - box[0]) * (box[3] - box[2]) / 256
    ours_x, lab = mix_batch(x, one_hot(y, 4), perm, torch.tensor([1.0]), torch.tensor([1.0 - area]),
                            torch.tensor(box))
    assert torch.equal(ours_x, ref_x)
    out = torch.randn(6, 4, generator=g)
    assert F.cross_entropy(out, lab).item() == pytest.approx(ref_loss(out).item(), abs=1e-6)
    # r >= cutmix_prob: the reference leaves the batch alone
    same, _ = ref_cutmix_batch(x, y, 0.7, lam, perm, cx, cy)
    assert torch.equal(same, x)


def test_mixup_matches_the_reference():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 8, 8, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    perm = torch.randperm(8, generator=g)
    lam = 0.37
    ref_x, ref_loss = ref_mixup_data(x, y, lam, perm)
    ours_x, lab = mix_batch(x, one_hot(y, 5), perm, torch.tensor([lam]), torch.tensor([lam]),
                            torch.zeros(4, dtype=torch.long))
    assert torch.allclose(ours_x, ref_x, atol=1e-6)
    out = torch.randn(8, 5, generator=g)
    assert F.cross_entropy(out, lab).item() == pytest.approx(ref_loss(out).item(), abs=1e-6)


def test_mix_plan_probabilities():
    rng = np.random.default_rng(0)
    sizes = [16] * 4000

    def share(mix, active=True):
        p = draw_mix_plan(rng, sizes, (32, 32), mix, active)
        return {k: float(np.mean(p.kind == k)) for k in (NONE, MIXUP, CUTMIX)}, p

    s, p = share(MixConfig(mixup=False, cutmix=True))          # CutMix's CIFAR recipe: p = 0.5
    assert abs(s[CUTMIX] - 0.5) < 0.03 and s[MIXUP] == 0
    cut = p.kind == CUTMIX
    areas = (p.box[:, 1] - p.box[:, 0]) * (p.box[:, 3] - p.box[:, 2]) / 1024
    assert np.allclose(p.lab_w[cut], 1 - areas[cut]) and (p.img_w == 1).all()
    assert (p.lab_w[~cut] == 1).all() and (p.box[~cut] == 0).all()
    assert all(sorted(q.tolist()) == list(range(16)) for q in p.pair)   # partners: a permutation
    s, p = share(MixConfig())                                   # Mixup (default): every batch
    assert s[MIXUP] == 1.0 and abs(float(np.mean(p.lab_w)) - 0.5) < 0.02   # Beta(1, 1) mean
    assert np.array_equal(p.lab_w, p.img_w)
    s, _ = share(MixConfig(cutmix=True))                        # both: one picked uniformly
    assert abs(s[MIXUP] - 0.5) < 0.03 and abs(s[CUTMIX] - 0.25) < 0.03
    s, _ = share(MixConfig(cutmix=True, cutmix_prob=1.0, prob=0.5))
    assert abs(s[NONE] - 0.5) < 0.03 and abs(s[CUTMIX] - 0.25) < 0.03
    s, _ = share(MixConfig(), active=False)                     # head phase: never mixed
    assert s[NONE] == 1.0


# ---------------------------------------------------------------------------- the step
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("step")
    return make_toy_manifest(root, [30, 20, 14], size=16, seed=0), str(root / "cache")


def _cfg(cache, **over) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 16, "seed": 3, "model": {"width": 4}, "progress": False,
            "mix": {"mixup": True, "cutmix": True}, "data": {"cache_dir": cache}}
    base.update(over)
    return TrainConfig.model_validate(base)


class _OpRecorder(TorchDispatchMode):
    """Records what a CUDA graph freezes of one step: every op in order, for every tensor it
    reads that existed before the step its address, and every other argument's value (the
    learning rate reaches SGD as a Python float, frozen into a captured graph)."""

    def __init__(self):
        super().__init__()
        self.ops: list = []
        self._made: set = set()  # storages the step itself allocated (a graph's private pool)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins, read = [], set()
        for a in pytree.tree_leaves((args, kwargs)):
            if isinstance(a, torch.Tensor):
                key = a.untyped_storage().data_ptr() if a.numel() else None
                read.add(key)
                ins.append("new" if key in self._made or key is None else ("at", a.data_ptr(), tuple(a.shape)))
            elif isinstance(a, (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
                                torch.memory_format)):
                ins.append(a)
            else:
                ins.append(type(a).__name__)    # e.g. the profiler's record objects
        for o in pytree.tree_leaves(out):
            if isinstance(o, torch.Tensor) and o.numel() and o.untyped_storage().data_ptr() not in read:
                self._made.add(o.untyped_storage().data_ptr())
        self.ops.append((str(func), tuple(ins)))
        return out


def _bindings(step) -> dict:
    """The objects a graph captured from ``step`` reads (by identity) and the Python values frozen
    into it: inputs, the full-batch tables, optimizer, parameters and their state, lr, epoch."""
    t = step._tables["full"]
    opt = step.optimizer
    return {
        "inputs": [step.images.images, *step._inp.values()],
        "tables": [t, *(v for v in vars(t).values() if torch.is_tensor(v))],
        "optimizer": [opt, *(p for g in opt.param_groups for p in g["params"])],
        "optimizer state": [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)],
        "lr": [(g["lr"], g.get("momentum"), g.get("weight_decay")) for g in opt.param_groups],
        "epoch": [step._epoch],
        "network": [step.net, step.stats],
    }


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x is y or (not torch.is_tensor(x) and x == y) for x, y in zip(a, b))


class EmulatedCapture:
    """CPU stand-in for ``CudaCapture`` that fails where a real CUDA graph would go wrong.

    * ``warmup`` runs the step and records its ops; ``capture`` runs nothing (as CUDA capture
      does) but records the objects the step reads and the Python values frozen into a graph
      (:func:`_bindings`); a replay runs the recorded step again on the same buffers.
    * Before every replay the bindings must be the ones captured: a rebound input, table,
      optimizer, parameter, lr or epoch fails (a real graph would silently use the old one).
    * The first replay of a capture records its ops (``trace=True``): they must equal those of a
      warm-up (a step whose first run would have happened inside the capture — lazy optimizer
      state, a variant never warmed up — fails), and no torch.compile compilation may happen in
      it. Every later replay must run the same ops on tensors at the same addresses with the same
      values, or it fails (something the step reads was rebound, e.g. per-step state outside
      tensors updated in place).
    """

    def __init__(self, trace: bool = True):
        self.trace = trace
        self.step = None                  # set by _runner
        self.warmups = self.captures = self.replays = 0
        self.warmed: set = set()          # op sequences seen in warm-ups

    def new_epoch(self):
        pass

    def _run(self, fn):
        if not self.trace:
            fn()
            return None
        with _OpRecorder() as rec:
            fn()
        return rec.ops

    def warmup(self, fn, steps):
        for _ in range(steps):
            self.warmups += 1
            ops = self._run(fn)
            if ops is not None:
                self.warmed.add(tuple(name for name, _ in ops))

    def capture(self, fn):
        self.captures += 1
        bound = _bindings(self.step)
        ref = []

        def replay():
            self.replays += 1
            now = _bindings(self.step)
            for k in bound:
                if not _same(bound[k], now[k]):
                    raise AssertionError(f"graph replayed after its {k} was rebound")
            graphs_before = dynamo_counters["stats"]["unique_graphs"]
            ops = self._run(fn)
            if not ref:
                if dynamo_counters["stats"]["unique_graphs"] != graphs_before:
                    raise AssertionError("torch.compile compiled inside a CUDA-graph capture")
                if ops is not None and tuple(name for name, _ in ops) not in self.warmed:
                    raise AssertionError("captured a step that never ran in a warm-up (its first run was "
                                         "inside the capture)")
                ref.append(ops)
            elif ops is not None and ops != ref[0]:
                i = next((i for i, (a, b) in enumerate(zip(ref[0], ops)) if a != b), min(len(ops), len(ref[0])))
                raise AssertionError(f"replay differs from the capture at op {i} "
                                     f"({ref[0][i][0] if i < len(ref[0]) else 'end'}): it reads other tensors or values")
        return replay


def _runner(manifest, cfg, mode="eager", capture=None, algo="ce"):
    dev = torch.device("cpu")
    images = ImageSet(manifest, cfg.data, "training", dev, cfg.channels_last)
    info = DataInfo(manifest.df["label"].to_numpy(), manifest.df["group"].to_numpy(), manifest.num_classes, 0,
                    cfg.epochs)
    a = build_algorithm(cfg.algorithm.model_copy(update={"name": algo}), info, dev)
    torch.manual_seed(0)
    model = build_model(cfg, manifest.num_classes)
    model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model.parameters(), cfg.optim)
    step = TrainStep(model, model, opt, a, images, cfg, dev, None, mode, capture)
    step.set_optimizer(opt)
    if capture is not None:
        capture.step = step
    return step, model, images


def _epochs(step, images, cfg, epochs=2):
    losses = []
    for e in range(epochs):
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(e))
        chunks = split_batches(order, cfg.batch_size)
        step.model.train()
        torch.manual_seed(30 + e)  # as the loop does: in-process DataLoader transforms draw from it
        s, n = step.run_epoch(e, chunks, np.random.default_rng(10 + e), np.random.default_rng(20 + e),
                              torch.Generator().manual_seed(e), True)
        losses.append(s / n)
    return losses


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_graph_replay_equals_eager(toy):
    m, cache = toy
    cfg = _cfg(cache, batch_size=4, cuda_graph="on")   # Mixup + CutMix: mixed and unmixed batches
    eager, me, images = _runner(m, cfg)
    le = _epochs(eager, images, cfg)
    cap = EmulatedCapture()
    graphed, mg, images = _runner(m, cfg, "graph", cap)
    lg = _epochs(graphed, images, cfg)
    assert le == lg
    for (k, a), b in zip(me.state_dict().items(), mg.state_dict().values()):
        assert torch.equal(a, b), k
    # 64 rows / 4 = 16 full batches per epoch (no tail): every one ran as a side-stream warm-up or
    # a replay; each variant warms up WARMUP_STEPS times, once; the second epoch captures again
    # (its lr / epoch are fixed inside a graph) without warming up
    assert cap.warmups + cap.replays == 2 * 16 and cap.warmups == 2 * WARMUP_STEPS
    assert cap.captures == graphed.captures >= 3


def _late_unmixed_mix_seed(cfg, steps: int) -> int:
    """A mix-plan seed whose first WARMUP_STEPS batches are all mixed and whose later batches hold
    more than WARMUP_STEPS unmixed ones: the unmixed variant is first met after the warm-up."""
    for seed in range(200):
        kind = draw_mix_plan(np.random.default_rng(seed), [cfg.batch_size] * steps, (16, 16), cfg.mix, True).kind
        if (kind[:WARMUP_STEPS] != NONE).all() and (kind[WARMUP_STEPS:] == NONE).sum() > WARMUP_STEPS:
            return seed
    raise AssertionError("no such seed")  # pragma: no cover


def _one_epoch(step, images, cfg, mix_seed):
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    step.model.train()
    return step.run_epoch(0, split_batches(order, cfg.batch_size), np.random.default_rng(1),
                          np.random.default_rng(mix_seed), torch.Generator().manual_seed(0), True)


def test_a_variant_first_met_after_the_warm_up_is_warmed_up_before_its_capture(toy):
    """Mixup + CutMix (cutmix_prob 0.5): an unmixed batch may first come after the warm-up steps;
    capturing it then would run its first step (and its compilation) inside the capture."""
    m, cache = toy
    cfg = _cfg(cache, batch_size=2, cuda_graph="on")   # 32 full batches
    seed = _late_unmixed_mix_seed(cfg, 32)
    eager, me, images = _runner(m, cfg)
    cap = EmulatedCapture()
    graphed, mg, images_g = _runner(m, cfg, "graph", cap)
    assert _one_epoch(graphed, images_g, cfg, seed) == _one_epoch(eager, images, cfg, seed)
    assert _same_weights(me, mg)
    assert cap.warmups == 2 * WARMUP_STEPS and cap.captures == 2 and cap.replays == 32 - 2 * WARMUP_STEPS


@pytest.mark.slow  # dynamo tracing of two variants: ~10 s
def test_compiled_variants_compile_before_their_capture(toy, monkeypatch):
    """compile + graphs: every variant is compiled in a side-stream warm-up, never inside a capture
    (upstream torch.compile fails under graph capture). aot_eager: dynamo + AOTAutograd without
    inductor's C++ build, so the test stays fast; the emulation counts dynamo's compiled graphs."""
    import synaug.train.step as step_mod

    real = torch.compile
    monkeypatch.setattr(step_mod.torch, "compile", lambda fn, **kw: real(fn, backend="aot_eager", dynamic=False))
    m, cache = toy
    cfg = _cfg(cache, batch_size=2, cuda_graph="on", compile=True, model={"name": "resnet20", "width": 4})
    seed = _late_unmixed_mix_seed(cfg, 32)
    cap = EmulatedCapture(trace=False)
    graphed, _, images = _runner(m, cfg, "graph", cap)
    before = dynamo_counters["stats"]["unique_graphs"]
    _one_epoch(graphed, images, cfg, seed)
    assert dynamo_counters["stats"]["unique_graphs"] > before          # it did compile
    assert cap.captures == 2 and cap.replays == 32 - 2 * WARMUP_STEPS


def test_cuda_capture_uses_the_thread_local_error_mode(monkeypatch):
    """The streaming loader's pin-memory thread allocates pinned memory while the main thread
    captures; only the thread-local (or relaxed) capture mode tolerates that."""
    seen = {}

    class FakeGraph:
        def replay(self):
            pass

    class FakeGraphContext:
        def __init__(self, g, **kw):
            seen.update(kw)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", FakeGraphContext)
    ran = []
    CudaCapture().capture(lambda: ran.append(1))
    assert ran == [1] and seen.get("capture_error_mode") in ("thread_local", "relaxed")


def test_last_partial_batch_runs_eagerly_in_graph_mode(toy):
    m, cache = toy
    cfg = _cfg(cache, batch_size=24, cuda_graph="on", mix={"mixup": True})  # 64 rows: 2 x 24 + a tail of 16
    cap = EmulatedCapture()
    graphed, mg, images = _runner(m, cfg, "graph", cap)
    eager, me, _ = _runner(m, cfg)
    assert _epochs(graphed, images, cfg, 3) == _epochs(eager, images, cfg, 3)
    assert cap.warmups == WARMUP_STEPS and cap.replays == 3 * 2 - WARMUP_STEPS
    assert _same_weights(me, mg)


def _rebind(what: str, step, model, cfg) -> None:
    if what == "optimizer":      # a new optimizer without set_optimizer (and no new capture)
        step.optimizer = build_optimizer(model.parameters(), cfg.optim)
    elif what == "lr":           # a per-step schedule would do this; a graph keeps the old lr
        for g in step.optimizer.param_groups:
            g["lr"] *= 0.5
    elif what == "tables":
        old = step._tables["full"]
        new = _Tables(old.S, old.b, step.device)
        new.load({k: getattr(old, k).numpy() for k in ("idx", "oy", "ox", "pair", "flip", "img_w", "lab_w", "box")})
        new.counter.copy_(old.counter)
        step._tables["full"] = new
    elif what == "inputs":
        step.images.images = step.images.images.clone()
    elif what == "epoch":
        step._epoch += 1


@pytest.mark.parametrize("what", ["optimizer", "lr", "tables", "inputs", "epoch"])
def test_the_emulated_capture_fails_when_the_step_rebinds_what_a_graph_reads(toy, what):
    """The CPU emulation replays Python, so by itself it would follow a rebound object; it must
    fail instead, as a real graph would keep reading the captured one."""
    m, cache = toy
    cfg = _cfg(cache, batch_size=4, cuda_graph="on", mix={"mixup": True})
    step, model, images = _runner(m, cfg, "graph", EmulatedCapture())
    done = []

    def on_step(n, mean):
        done.append(n)
        if len(done) == WARMUP_STEPS + 2:       # after the capture and two replays
            _rebind(what, step, model, cfg)

    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match=f"graph replayed after its {what} was rebound"):
        step.run_epoch(0, split_batches(order, 4), np.random.default_rng(1), np.random.default_rng(2),
                       torch.Generator(), True, on_step)


def test_the_emulated_capture_fails_on_per_step_state_rebound_outside_the_step(toy):
    """group_dro re-binds its weights ``q`` every step (why ``choose_mode`` keeps it eager): forced
    into graph mode, the replays read another ``q`` than the capture did, which the op trace sees."""
    m, cache = toy
    cfg = _cfg(cache, batch_size=4, cuda_graph="on", mix={"mixup": True})
    step, _, images = _runner(m, cfg, "graph", EmulatedCapture(), algo="group_dro")
    with pytest.raises(AssertionError, match="replay differs from the capture"):
        _epochs(step, images, cfg, 1)


class FailingCapture(EmulatedCapture):
    def capture(self, fn):
        raise RuntimeError("operation not permitted when stream is capturing\nmore")


def test_a_failed_capture_falls_back_to_eager_unless_graphs_were_demanded(toy):
    m, cache = toy
    cfg = _cfg(cache, batch_size=2)              # 32 full batches: auto captures
    eager, me, images = _runner(m, cfg)
    graphed, mg, images = _runner(m, cfg, "graph", FailingCapture())
    with pytest.warns(UserWarning, match="capture of the training step failed"):
        assert _epochs(graphed, images, cfg) == _epochs(eager, images, cfg)
    assert graphed.mode == "eager" and graphed.mode_why.startswith("capture failed: operation not permitted")
    assert all(torch.equal(a, b) for a, b in zip(me.state_dict().values(), mg.state_dict().values()))
    strict, _, images = _runner(m, _cfg(cache, cuda_graph="on"), "graph", FailingCapture())
    with pytest.raises(SynaugError, match="CUDA graph capture of the training step failed"):
        _epochs(strict, images, cfg, 1)


def test_auto_leaves_short_epochs_eager(toy):
    m, cache = toy
    assert 4 < MIN_GRAPH_STEPS <= 32           # the premise of the two cases below
    short, long_ = EmulatedCapture(), EmulatedCapture()
    step, _, images = _runner(m, _cfg(cache), "graph", short)           # 4 full batches per epoch
    _epochs(step, images, _cfg(cache), 2)
    assert short.warmups == short.captures == 0
    cfg = _cfg(cache, batch_size=2)                                      # 32 full batches per epoch
    step, _, images = _runner(m, cfg, "graph", long_)
    _epochs(step, images, cfg, 1)
    assert long_.warmups == 2 * WARMUP_STEPS and long_.captures >= 1 and long_.replays == 32 - 2 * WARMUP_STEPS


def test_streaming_path_graph_replay_equals_eager(toy):
    # large-image path: batches come from a DataLoader and are copied into fixed buffers for graphs
    m, cache = toy
    cfg = _cfg(cache, batch_size=12, cuda_graph="on", mix={"mixup": True},
               data={"cache_dir": cache, "mode": "stream", "num_workers": 0})   # 5 x 12 + a tail of 4
    eager, me, images = _runner(m, cfg)
    assert images.mode == "stream" and images.image_hw == (16, 16)
    cap = EmulatedCapture()
    graphed, mg, images_g = _runner(m, cfg, "graph", cap)
    assert _epochs(eager, images, cfg, 2) == _epochs(graphed, images_g, cfg, 2)
    assert cap.replays == 2 * 5 - WARMUP_STEPS and graphed._static["x"].shape == (12, 3, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(me.state_dict().values(), mg.state_dict().values()))


def test_no_host_synchronisation_inside_an_epoch(toy, monkeypatch):
    m, cache = toy
    cfg = _cfg(cache, batch_size=4)              # 16 steps per epoch
    step, _, images = _runner(m, cfg)
    _epochs(step, images, cfg, 1)                # warm (lazy optimizer state)
    calls = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu"):
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            if self.device.type == "cpu" and self.numel() <= 2 and self.dtype == torch.float64:
                calls.append(_name)              # the accumulators
            elif self.device == step.device and _name != "numpy":
                calls.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(5))
    chunks = split_batches(order, cfg.batch_size)
    calls.clear()
    step.run_epoch(1, chunks, np.random.default_rng(1), np.random.default_rng(2), torch.Generator(), True)
    monkeypatch.undo()
    steps = len(chunks)
    # the host reads the device only every CHECK_EVERY steps and at the end (+ the final loss sum)
    assert steps == 16 and len(calls) <= steps // CHECK_EVERY + 2, calls


def test_eager_step_equals_a_plain_reference_step(toy):
    """One step = crop/flip + normalise + Mixup + CE + SGD, written out plainly from the same draws."""
    m, cache = toy
    cfg = _cfg(cache, mix={"mixup": True}, channels_last=False)
    step, model, images = _runner(m, cfg)
    ref = build_model(cfg, m.num_classes)
    ref.load_state_dict(model.state_dict())
    init = {k: v.detach().clone() for k, v in ref.named_parameters()}
    ref_opt = torch.optim.SGD(ref.parameters(), lr=cfg.optim.lr, momentum=0.9, weight_decay=cfg.optim.weight_decay)
    chunk = torch.arange(16)
    aug, mixr = np.random.default_rng(7), np.random.default_rng(8)
    step.model.train()
    step.run_epoch(0, [chunk], aug, mixr, torch.Generator(), True)
    # the same draws, in the same order, from fresh generators
    aug, mixr = np.random.default_rng(7), np.random.default_rng(8)
    plan = draw_mix_plan(mixr, [16], images.image_hw, cfg.mix, True)
    oy, ox = aug.integers(0, 9, (1, 16))[0], aug.integers(0, 9, (1, 16))[0]
    flip = (aug.random((1, 16)) < 0.5)[0]
    imgs = images.images[chunk].float()
    padded = F.pad(imgs, (4, 4, 4, 4))
    crops = torch.stack([padded[i, :, oy[i]:oy[i] + 16, ox[i]:ox[i] + 16] for i in range(16)])
    crops = torch.stack([c.flip(-1) if f else c for c, f in zip(crops, flip)])
    mean = torch.tensor(cfg.augment.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.augment.std).view(1, 3, 1, 1)
    x = (crops / 255.0 - mean) / std
    assert plan.kind[0] == MIXUP
    xm, loss_fn = ref_mixup_data(x, images.labels[chunk], float(plan.lab_w[0]), torch.from_numpy(plan.pair[0]))
    ref.train()
    loss = loss_fn(ref(xm))
    ref_opt.zero_grad()
    loss.backward()
    ref_opt.step()
    worst = max(float((a.float() - b.float()).abs().max()) for a, b in zip(model.state_dict().values(),
                                                                          ref.state_dict().values()))
    assert worst <= 1e-5, worst
    moved = max(float((a.detach() - b).abs().max()) for a, b in zip(ref.parameters(), init.values()))
    assert moved > 1e-3  # both really took a step


def test_divergence_is_reported(toy):
    m, cache = toy
    cfg = _cfg(cache, optim={"lr": 1e12})
    step, _, images = _runner(m, cfg)
    with pytest.raises(SynaugError, match="diverged at epoch 1"):
        _epochs(step, images, cfg, 2)


def test_step_mode_choice(toy):
    m, cache = toy
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    info = DataInfo(np.array([0, 1]), np.array([-1, -1]), 2, 0, 1)
    ce = build_algorithm(TrainConfig().algorithm, info, cpu)
    dro = build_algorithm(TrainConfig().algorithm.model_copy(update={"name": "group_dro"}), info, cpu)
    cfg = _cfg(cache)
    assert choose_mode(cfg, cuda, 1, ce)[0] == "graph"           # the default on a GPU
    assert choose_mode(cfg, cpu, 1, ce)[0] == "eager"
    assert choose_mode(cfg, cuda, 2, ce)[0] == "eager"           # DDP
    assert choose_mode(_cfg(cache, amp="fp16"), cuda, 1, ce)[0] == "eager"
    assert choose_mode(_cfg(cache, amp="bf16"), cuda, 1, ce)[0] == "graph"
    mode, why = choose_mode(cfg, cuda, 1, dro)
    assert mode == "eager" and "group_dro" in why                 # q is rebound every step
    assert choose_mode(_cfg(cache, cuda_graph="off"), cuda, 1, ce)[0] == "eager"
    with pytest.raises(SynaugError, match="cuda_graph: on is not possible here: device cpu"):
        choose_mode(_cfg(cache, cuda_graph="on"), cpu, 1, ce)
