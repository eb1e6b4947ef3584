"""Training-loop throughput: ours vs a per-sample PIL DataLoader vs pure compute, ONE run.

Methods (same model, same batch size, same Mixup + SGD step):

* ``ours``        synaug's training epoch (``loop._train_epoch``): decoded uint8 tensor in
                  memory, batched crop/flip, fused normalisation, channels_last;
* ``pil-wN``      the reference: per-sample PIL decode + torchvision RandomCrop / Flip /
                  ToTensor / Normalize in a ``DataLoader`` with N workers;
* ``compute``     the limit: the step alone on pre-loaded, pre-normalised float tensors
                  (channels_last; ``compute-contiguous`` shows the layout choice);
* ``compute-bf16`` the same step under ``torch.autocast(bfloat16)`` (``amp: bf16``);
* ``data-*``     the data side alone (batches + Mixup, no model), ours vs the DataLoaders;
* inference with ``inference_mode``: channels_last vs contiguous (and compiled with --compile).

The methods run in interleaved rounds (round-robin, after one warm-up round) so that load
from other processes hits all of them alike; the table shows the median and best round and
the ratios are medians of per-round ratios.

    .venv/bin/python benchmarks/bench_train.py [--rounds 3] [--batches 10] [--batch 128] [--compile]

Uses the shared CIFAR-10 JPEGs (32x32) when available, else generated PNGs (--toy).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def _images(n: int, toy: bool, tmp: Path):
    if not toy:
        try:
            import numpy as np

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


def _model(name, C, channels_last):
    from synaug.models import create_model

    torch.manual_seed(0)
    m = create_model(name, C)
    return m.to(memory_format=torch.channels_last) if channels_last else m


class Ours:
    def __init__(self, manifest, args, cache):
        from synaug.train.algorithms import DataInfo, build_algorithm
        from synaug.train.config import TrainConfig
        from synaug.train.data import ImageSet
        from synaug.train.loop import make_mixer
        from synaug.train.optim import build_optimizer

        self.cfg = TrainConfig.model_validate({"batch_size": args.batch, "progress": False,
                                               "data": {"cache_dir": str(cache), "mode": "memory"},
                                               "model": {"name": args.model}})
        self.dev = torch.device("cpu")
        t0 = time.perf_counter()
        self.images = ImageSet(manifest, self.cfg.data, "training", self.dev, True)
        self.decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ImageSet(manifest, self.cfg.data, "training", self.dev, True)
        self.cached_s = time.perf_counter() - t0
        C = manifest.num_classes
        self.model = _model(args.model, C, True)
        info = DataInfo(manifest.df["label"].to_numpy(), manifest.df["group"].to_numpy(), C, 0, 1)
        self.algo = build_algorithm(self.cfg.algorithm, info, self.dev)
        self.opt = build_optimizer(self.model.parameters(), self.cfg.optim)
        self.mixer = make_mixer(self.cfg)
        self.epoch = 0

    def __call__(self) -> float:
        from synaug.train.loop import _train_epoch

        self.epoch += 1
        row = _train_epoch(self.model, self.model, self.opt, self.algo, self.images, self.cfg, self.epoch,
                           self.epoch + 1, "main", self.mixer, None, self.dev, 0, 1)
        return row["img_per_s"]


class OursData:
    """Only the data side of ours: batches (gather, crop/flip, normalise) + Mixup, no model."""

    def __init__(self, ours: Ours):
        self.ours = ours

    def __call__(self) -> float:
        o = self.ours
        gen = torch.Generator().manual_seed(0)
        n, t0 = 0, time.perf_counter()
        for b in o.images.batches(torch.randperm(len(o.images), generator=gen), o.cfg.batch_size,
                                  o.cfg.augment, gen):
            o.mixer(b.x, F.one_hot(b.y, 10).float())
            n += len(b.y)
        return n / (time.perf_counter() - t0)


class PILData:
    """Only the data side of the reference loop: the DataLoader + Mixup, no model."""

    def __init__(self, pil: "PIL"):
        self.pil = pil

    def __call__(self) -> float:
        n, t0 = 0, time.perf_counter()
        for x, y in self.pil.loader:
            self.pil.mixer(x, F.one_hot(y, self.pil.C).float())
            n += len(y)
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
    def __init__(self, manifest, args, workers):
        from synaug.train.config import TrainConfig
        from synaug.train.loop import make_mixer

        self.C = manifest.num_classes
        self.model = _model(args.model, self.C, True)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
        self.mixer = make_mixer(TrainConfig())
        self.loader = torch.utils.data.DataLoader(_PILSet(manifest), batch_size=args.batch, shuffle=True,
                                                  num_workers=workers, persistent_workers=workers > 0)

    def __call__(self) -> float:
        self.model.train()
        n, t0 = 0, time.perf_counter()
        for x, y in self.loader:  # one epoch over the same images as ours, data wait included
            x, t = self.mixer(x, F.one_hot(y, self.C).float())
            loss = F.cross_entropy(self.model(x.contiguous(memory_format=torch.channels_last)), t)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            n += len(y)
        return n / (time.perf_counter() - t0)


class Compute:
    def __init__(self, args, C, channels_last, train=True, compile_=False, bf16=False):
        from synaug.train.config import TrainConfig
        from synaug.train.loop import make_mixer

        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = _model(args.model, C, channels_last)
        self.net = torch.compile(self.model) if compile_ else self.model
        self.xs = [torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=self.fmt) for _ in range(4)]
        self.ys = [torch.randint(0, C, (args.batch,)) for _ in range(4)]
        self.C, self.train, self.steps, self.bf16 = C, train, args.batches, bf16
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
        self.mixer = make_mixer(TrainConfig())
        t0 = time.perf_counter()
        self._step(0)
        self.first_s = time.perf_counter() - t0  # includes compilation when compiled

    def _step(self, i):
        if self.train:
            self.model.train()
            x, t = self.mixer(self.xs[i % 4], F.one_hot(self.ys[i % 4], self.C).float())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.net(x.contiguous(memory_format=self.fmt))
            loss = F.cross_entropy(logits.float(), t)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        else:
            self.model.eval()
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                self.net(self.xs[i % 4])

    def __call__(self) -> float:
        steps = self.steps if self.train else 3 * self.steps
        t0 = time.perf_counter()
        for i in range(steps):
            self._step(i)
        return steps * self.xs[0].shape[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=10, help="batches per round and method")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", default="resnet32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--pil-workers", type=int, nargs="*", default=[0, 2])
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (20-35 s cold start)")
    ap.add_argument("--toy", action="store_true", help="generated PNGs instead of CIFAR-10")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="synaug-bench-"))
    manifest, kind = _images(args.batches * args.batch, args.toy, tmp)
    C = manifest.num_classes
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.model}, batch {args.batch}, "
          f"{len(manifest)} {kind} images per round, fp32, {args.rounds} rounds + 1 warm-up")
    ours = Ours(manifest, args, tmp / "cache")
    train = {"ours": ours}
    for w in args.pil_workers:
        train[f"pil-w{w}"] = PIL(manifest, args, w)
    train["compute"] = Compute(args, C, True)
    data_only = {"data-ours": OursData(ours)}
    for w in args.pil_workers:
        data_only[f"data-pil-w{w}"] = PILData(train[f"pil-w{w}"])
    train["compute-contiguous"] = Compute(args, C, False)
    train["compute-bf16"] = Compute(args, C, True, bf16=True)
    infer = {"channels_last": Compute(args, C, True, train=False),
             "contiguous": Compute(args, C, False, train=False),
             "bf16+channels_last": Compute(args, C, True, train=False, bf16=True)}
    if args.compile:
        train["compute-compiled"] = Compute(args, C, True, compile_=True)
        infer["compiled+channels_last"] = Compute(args, C, True, train=False, compile_=True)
        print(f"torch.compile first step: train {train['compute-compiled'].first_s:.1f} s, "
              f"inference {infer['compiled+channels_last'].first_s:.1f} s")
    runs = {k: [] for k in [*train, *(f"infer-{k}" for k in infer), *data_only]}
    for r in range(args.rounds + 1):
        for k, fn in [*train.items(), *data_only.items()]:
            v = fn()
            if r:
                runs[k].append(v)
        for k, fn in infer.items():
            v = fn()
            if r:
                runs[f"infer-{k}"].append(v)
    print(f"decode {len(manifest)} images to a uint8 tensor: {ours.decode_s:.2f} s "
          f"(from the on-disk cache: {ours.cached_s:.3f} s)\n")
    print(f"{'images/s':<28}{'median':>9}{'best':>9}")
    for k, v in runs.items():
        print(f"  {k:<26}{statistics.median(v):9.1f}{max(v):9.1f}")

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True))

    print("\nratios (median of per-round ratios):")
    for k in train:
        if k.startswith("pil"):
            print(f"  ours / {k:<30}{ratio('ours', k):6.2f}x")
    print(f"  ours / compute (share of the limit)   {ratio('ours', 'compute'):6.2f}")
    for k in train:
        if k.startswith("pil"):
            print(f"  {k} / compute{'':<{24 - len(k)}}{ratio(k, 'compute'):6.2f}")
    for k in data_only:
        if k != "data-ours":
            print(f"  data side: ours / {k[5:]:<19}{ratio('data-ours', k):6.1f}x")
    print(f"  train step channels_last / contiguous {ratio('compute', 'compute-contiguous'):6.2f}x")
    print(f"  inference channels_last / contiguous  {ratio('infer-channels_last', 'infer-contiguous'):6.2f}x")
    print(f"  train step bf16 autocast / fp32 (CL)  {ratio('compute-bf16', 'compute'):6.2f}x  (amp: bf16)")
    print(f"  inference bf16 autocast / fp32 (CL)   "
          f"{ratio('infer-bf16+channels_last', 'infer-channels_last'):6.2f}x")
    if args.compile:
        print(f"  train step compiled / eager (CL)      {ratio('compute-compiled', 'compute'):6.2f}x")
        print(f"  inference compiled / eager (CL)       "
              f"{ratio('infer-compiled+channels_last', 'infer-channels_last'):6.2f}x")


if __name__ == "__main__":
    main()
