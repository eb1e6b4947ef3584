"""Training-step throughput: our step in fp32 / bf16, eager / compiled (/ CUDA graphs) vs pure
compute vs a per-sample PIL DataLoader, ONE run, ratios printed.

Methods (same model, batch size, Mixup + SGD step; ``ours-*`` is ``synaug.train.step.TrainStep``,
the step ``synaug train`` runs, one epoch of ``--batches`` batches per round):

* ``ours-fp32``            the step run eagerly in fp32 (the old default: ``amp: off``,
                           ``compile: false``): decoded uint8 tensor in memory, gather + crop/flip +
                           normalise + Mixup on the device, no host sync per step;
* ``ours-fp32-compiled``   the same with ``compile: true`` (torch.compile of the forward half);
* ``ours-bf16`` / ``ours-bf16-compiled``  under bf16 autocast (``amp: bf16``);
* ``ours-graph``           (CUDA) the whole step replayed as CUDA graphs (``cuda_graph: auto``);
* ``compute`` / ``compute-bf16``  the limit: model step alone on pre-loaded, pre-normalised
                           tensors, Mixup by two tensor ops, eager, fp32 / bf16 autocast;
                           ``compute-graph`` (CUDA) the same captured as one CUDA graph;
* ``pil-wN``               per-sample PIL decode + torchvision transforms in a DataLoader with N
                           workers, torchvision v2 MixUp (``--pil-workers``).

The new defaults (``amp: auto``, ``compile: auto``) resolve per machine
(``synaug.train.precision``); the script prints what they resolve to on this machine for a long
run and the ratio of that method to the old default (``ours-fp32``). The methods run in
interleaved rounds (after one warm-up round) so that load from other processes hits all alike;
ratios are medians of per-round ratios. On a CPU without bf16 units the bf16 methods run ~12x
slower than fp32 (reference kernels): ``--no-bf16`` leaves them out.

    .venv/bin/python benchmarks/bench_train.py [--device cpu|cuda] [--rounds 3] [--batches 10]
        [--batch 128] [--no-compile] [--no-bf16] [--pil-workers 0 2]

Uses the shared CIFAR-10 JPEGs (32x32) when available, else generated PNGs (--toy).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _images(n: int, toy: bool, tmp: Path):
    if not toy:
        try:
            from synaug.data import load_dataset

            m = load_dataset("shared-cifar10")
            m = m.select((m.df["split"] == "train").to_numpy())
            keep = np.zeros(len(m), bool)
            keep[np.random.default_rng(0).choice(len(m), n, replace=False)] = True
            return m.select(keep), "CIFAR-10 JPEG"
        except Exception as e:  # no shared data on this machine
            print(f"(shared CIFAR-10 unavailable: {e}; using generated PNGs)")
    from synaug.train.toydata import make_toy_manifest

    return make_toy_manifest(tmp, [n // 10] * 10, size=32, seed=0), "generated PNG"


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _model(name, C, dev):
    from synaug.models import create_model

    torch.manual_seed(0)
    return create_model(name, C).to(dev).to(memory_format=torch.channels_last)


class Ours:
    """synaug's step (TrainStep) in one mode; one call = one epoch of ``--batches`` batches."""

    def __init__(self, manifest, args, cache, dev, cuda_graph="off", compile_=False, amp="off"):
        from synaug.train.algorithms import DataInfo, build_algorithm
        from synaug.train.config import TrainConfig
        from synaug.train.data import ImageSet
        from synaug.train.optim import build_optimizer
        from synaug.train.step import TrainStep, choose_mode

        self.cfg = TrainConfig.model_validate({
            "batch_size": args.batch, "progress": False, "cuda_graph": cuda_graph, "compile": compile_, "amp": amp,
            "data": {"cache_dir": str(cache), "mode": "memory"}, "model": {"name": args.model}})
        self.dev = dev
        t0 = time.perf_counter()
        self.images = ImageSet(manifest, self.cfg.data, "training", dev, True)
        self.decode_s = time.perf_counter() - t0
        C = manifest.num_classes
        self.model = _model(args.model, C, dev)
        info = DataInfo(manifest.df["label"].to_numpy(), manifest.df["group"].to_numpy(), C, 0, 1)
        algo = build_algorithm(self.cfg.algorithm, info, dev)
        opt = build_optimizer(self.model.parameters(), self.cfg.optim)
        mode, _ = choose_mode(self.cfg, dev, 1, algo, amp)
        self.step = TrainStep(self.model, self.model, opt, algo, self.images, self.cfg, dev, None, mode,
                              amp=amp, compile_=compile_)
        self.step.set_optimizer(opt)
        self.epoch = 0
        t0 = time.perf_counter()
        self()                      # first epoch: compilation / warm-up / first captures
        self.first_s = time.perf_counter() - t0

    def __call__(self) -> float:
        from synaug.train.data import split_batches

        self.epoch += 1
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.epoch))
        chunks = split_batches(order, self.cfg.batch_size)
        self.model.train()
        _sync(self.dev)
        t0 = time.perf_counter()
        _, n = self.step.run_epoch(self.epoch, chunks, np.random.default_rng(self.epoch),
                                   np.random.default_rng(self.epoch + 1000), torch.Generator(), True)
        _sync(self.dev)
        return n / (time.perf_counter() - t0)


class _PILSet(torch.utils.data.Dataset):
    def __init__(self, manifest):
        from torchvision import transforms as T

        self.paths = manifest.abspaths()
        self.labels = manifest.df["label"].tolist()
        self.tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                             T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB")), self.labels[i]


class PIL:
    """The reference loop: per-sample PIL DataLoader + torchvision v2 MixUp + SGD, eager."""

    def __init__(self, manifest, args, workers, dev):
        from torchvision.transforms import v2

        self.C, self.dev = manifest.num_classes, dev
        self.model = _model(args.model, self.C, dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
        self.mixer = v2.MixUp(alpha=1.0)
        self.loader = torch.utils.data.DataLoader(_PILSet(manifest), batch_size=args.batch, shuffle=True,
                                                  num_workers=workers, persistent_workers=workers > 0,
                                                  pin_memory=dev.type == "cuda")

    def __call__(self) -> float:
        self.model.train()
        _sync(self.dev)
        n, t0 = 0, time.perf_counter()
        for x, y in self.loader:
            x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
            x, t = self.mixer(x, F.one_hot(y, self.C).float())
            loss = F.cross_entropy(self.model(x.contiguous(memory_format=torch.channels_last)), t)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            n += len(y)
        _sync(self.dev)
        return n / (time.perf_counter() - t0)


class Compute:
    """The model step alone on pre-loaded normalised tensors (Mixup as two tensor ops)."""

    def __init__(self, args, C, dev, graph=False, bf16=False):
        self.dev, self.C, self.steps, self.bf16 = dev, C, args.batches, bf16
        self.model = _model(args.model, C, dev)
        g = torch.Generator(device="cpu").manual_seed(0)
        self.x = torch.randn(args.batch, 3, 32, 32, generator=g).to(dev).contiguous(memory_format=torch.channels_last)
        self.t = F.one_hot(torch.randint(0, C, (args.batch,), generator=g), C).float().to(dev)
        self.perm = torch.randperm(args.batch, generator=g).to(dev)
        self.lam = torch.full((1,), 0.7, device=dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
        self.model.train()
        self.graph = None
        if graph:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    self._step()
            torch.cuda.current_stream().wait_stream(s)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._step()

    def _step(self):
        x = self.x * self.lam + self.x.index_select(0, self.perm) * (1 - self.lam)
        t = self.t * self.lam + self.t.index_select(0, self.perm) * (1 - self.lam)
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=self.graph is None):
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def __call__(self) -> float:
        _sync(self.dev)
        t0 = time.perf_counter()
        for _ in range(self.steps):
            self.graph.replay() if self.graph is not None else self._step()
        _sync(self.dev)
        return self.steps * self.x.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, default=10, help="batches per round and method")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", default="resnet32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--pil-workers", type=int, nargs="*", default=[], help="PIL DataLoader references (e.g. 0 2)")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled methods (cold start 20-60 s each)")
    ap.add_argument("--no-bf16", action="store_true", help="leave out the bf16 methods")
    ap.add_argument("--toy", action="store_true", help="generated PNGs instead of CIFAR-10")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from synaug.allocator import keep_freed_memory
    from synaug.train.precision import resolve_amp, resolve_compile

    # the process state `synaug train` runs in, for every method alike (benchmarks/bench_allocator.py
    # compares it with glibc's defaults)
    print(f"malloc: {keep_freed_memory()['why']}")

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    tmp = Path(tempfile.mkdtemp(prefix="synaug-bench-"))
    manifest, kind = _images(args.batches * args.batch, args.toy, tmp)
    C = manifest.num_classes
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU, {torch.get_num_threads()} threads"
    amp, amp_why = resolve_amp("auto", dev)
    comp, comp_why = resolve_compile("auto", dev, 10 ** 6)
    default = f"ours-{'bf16' if amp == 'bf16' else 'fp32'}{'-compiled' if comp else ''}"
    print(f"torch {torch.__version__}, {name}, {args.model}, batch {args.batch}, {len(manifest)} {kind} images "
          f"per round, {args.rounds} rounds + 1 warm-up")
    print(f"new defaults on this machine, long run: {amp_why}; {comp_why} -> {default}")
    precisions = ["off"] + ([] if args.no_bf16 else ["bf16"])
    train = {}
    for prec in precisions:
        tag = "fp32" if prec == "off" else prec
        train[f"ours-{tag}"] = Ours(manifest, args, tmp / "cache", dev, amp=prec)
        if not args.no_compile:
            train[f"ours-{tag}-compiled"] = Ours(manifest, args, tmp / "cache", dev, compile_=True, amp=prec)
    if cuda:
        train["ours-graph"] = Ours(manifest, args, tmp / "cache", dev, cuda_graph="on", amp=amp)
    train["compute"] = Compute(args, C, dev)
    if cuda:
        train["compute-graph"] = Compute(args, C, dev, graph=True)
    if not args.no_bf16:
        train["compute-bf16"] = Compute(args, C, dev, bf16=True)
    for w in args.pil_workers:
        train[f"pil-w{w}"] = PIL(manifest, args, w, dev)
    for k, v in train.items():
        if isinstance(v, Ours):
            print(f"{k}: first epoch (compile / warm-up / captures) {v.first_s:.1f} s")
    runs = {k: [] for k in train}
    for r in range(args.rounds + 1):
        for k, fn in train.items():
            v = fn()
            if r:
                runs[k].append(v)
    print(f"decode {len(manifest)} images to a uint8 tensor: {train['ours-fp32'].decode_s:.2f} s")
    for k, v in train.items():
        if isinstance(v, Ours) and v.step.captures:
            print(f"{k}: {v.step.captures} CUDA-graph captures in {v.epoch} epochs, {v.step.capture_s:.2f} s "
                  f"({v.step.capture_s / v.step.captures * 1e3:.0f} ms each)")
    print()
    print(f"{'images/s':<28}{'median':>10}{'best':>10}")
    for k, v in runs.items():
        print(f"  {k:<26}{statistics.median(v):10.1f}{max(v):10.1f}")

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True))

    print("\nratios (median of per-round ratios):")
    lines = []
    if default in train and default != "ours-fp32":
        lines.append((f"new default ({default}) / old default (ours-fp32)", ratio(default, "ours-fp32"), "x"))
    for k in train:
        if k.startswith("ours-") and k != "ours-fp32":
            lines.append((f"{k} / ours-fp32", ratio(k, "ours-fp32"), "x"))
    ceiling = "compute-graph" if cuda else "compute"
    for k in train:
        if k.startswith("ours-"):
            lines.append((f"{k} / {ceiling} (share of the limit)", ratio(k, ceiling), ""))
    if cuda:
        lines.append(("compute-graph / compute (launch overhead)", ratio("compute-graph", "compute"), "x"))
    if "compute-bf16" in train:
        lines.append(("compute-bf16 / compute", ratio("compute-bf16", "compute"), "x"))
    for k in train:
        if k.startswith("pil"):
            lines.append((f"ours-fp32 / {k}", ratio("ours-fp32", k), "x"))
    for label, v, unit in lines:
        print(f"  {label:<48}{v:7.2f}{unit}")


if __name__ == "__main__":
    main()
