"""GPU check of the training step: CUDA-graphed (and compiled) vs eager numerics, and the host
synchronisations per epoch counted by CUDA's sync debug mode. Part of benchmarks/gpu_all.sh.

    .venv/bin/python benchmarks/check_step_gpu.py [--device cuda] [--images 2600] [--epochs 2] [--compile]
        [--stream]

ResNet-32 (width 16), batch 128, Mixup + CutMix (both graph variants and the eager last batch are
exercised), SGD; cuDNN deterministic so that two eager runs agree bit for bit and any graph /
eager difference is the graph's. ``--stream`` adds the streaming loader (2 DataLoader workers,
pinned memory: the pin-memory thread allocates while graphs are captured), graphed vs eager. Prints max |w_mode - w_eager| per mode, the loss histories,
and the synchronisations the sync debugger saw in one eager and one graphed epoch (expected:
one per CHECK_EVERY steps and one at the end of the epoch, plus the capture's own sync).
Exit status 1 when a graphed step is not within 1e-6 of its eager one, or a graphed mode ran eagerly.
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch


def _run(manifest, cfg_over, dev, epochs, sync_epoch=None):
    from synaug.train.algorithms import DataInfo, build_algorithm
    from synaug.train.config import TrainConfig
    from synaug.train.data import ImageSet, split_batches
    from synaug.train.loop import build_model
    from synaug.train.optim import build_optimizer
    from synaug.train.step import TrainStep, choose_mode

    cfg = TrainConfig.model_validate({"batch_size": 128, "progress": False, "mix": {"mixup": True, "cutmix": True},
                                      "data": {"mode": "memory", "cache_dir": str(Path(manifest.roots["real"]) / "cache")},
                                      **cfg_over})
    images = ImageSet(manifest, cfg.data, "training", dev, True)
    info = DataInfo(manifest.df["label"].to_numpy(), manifest.df["group"].to_numpy(), manifest.num_classes, 0, epochs)
    algo = build_algorithm(cfg.algorithm, info, dev)
    torch.manual_seed(0)
    model = build_model(cfg, manifest.num_classes).to(dev).to(memory_format=torch.channels_last)
    opt = build_optimizer(model.parameters(), cfg.optim)
    mode, why = choose_mode(cfg, dev, 1, algo)
    step = TrainStep(model, model, opt, algo, images, cfg, dev, None, mode)
    step.set_optimizer(opt)
    losses, syncs = [], None
    for e in range(epochs):
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(e))
        chunks = split_batches(order, cfg.batch_size)
        model.train()
        if e == sync_epoch and dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                s, n = step.run_epoch(e, chunks, np.random.default_rng(e), np.random.default_rng(100 + e),
                                      torch.Generator(), True)
            torch.cuda.set_sync_debug_mode("default")
            syncs = (len([w for w in caught if "synchroniz" in str(w.message)]), len(chunks))
        else:
            s, n = step.run_epoch(e, chunks, np.random.default_rng(e), np.random.default_rng(100 + e),
                                  torch.Generator(), True)
        losses.append(s / n)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (step.mode, step.mode_why or why, losses, {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
            syncs, step.captures)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=2600)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--stream", action="store_true", help="also the streaming loader (workers + pinned memory)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    from synaug.train.toydata import make_toy_manifest

    tmp = Path(tempfile.mkdtemp(prefix="synaug-stepcheck-"))
    manifest = make_toy_manifest(tmp, [args.images // 10] * 10, size=32, seed=0)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}; "
          f"{len(manifest)} images, batch 128 ({len(manifest) // 128} full batches + {len(manifest) % 128}), "
          f"{args.epochs} epochs, Mixup + CutMix")
    modes = {"eager": {"cuda_graph": "off"}, "eager-again": {"cuda_graph": "off"}}
    if dev.type == "cuda":
        modes["graph"] = {"cuda_graph": "on"}
    if args.compile:
        modes["compiled"] = {"cuda_graph": "off", "compile": True}
        if dev.type == "cuda":
            modes["compiled+graph"] = {"cuda_graph": "on", "compile": True}
    if args.stream:
        stream = {"data": {"mode": "stream", "num_workers": 2, "cache_dir": str(tmp / "cache")}}
        modes["eager-stream"] = {"cuda_graph": "off", **stream}
        if dev.type == "cuda":
            modes["graph-stream"] = {"cuda_graph": "on", **stream}
    out = {}
    for name, over in modes.items():
        out[name] = _run(manifest, over, dev, args.epochs, sync_epoch=args.epochs - 1 if name in ("eager", "graph") else None)
    ok = True
    print(f"\n{'mode':<16}{'step':<7}{'captures':>9}{'max |w - w_ref|':>18}  ref            losses")
    for name, (mode, why, losses, w, syncs, caps) in out.items():
        ref_name = "eager-stream" if "stream" in name else "eager"
        ref = out[ref_name][3]
        diff = max(float((w[k] - ref[k]).abs().max()) for k in ref)
        print(f"{name:<16}{mode:<7}{caps:>9}{diff:18.3g}  {ref_name:<15}{['%.6f' % v for v in losses]}")
        if "graph" in name and not name.startswith("compiled") and diff > 1e-6:
            ok = False
        if "graph" in name and (mode != "graph" or caps == 0):   # fell back to eager, or never captured
            print(f"  {name}: ran eagerly ({why})")
            ok = False
    for name in ("eager", "graph"):
        if name in out and out[name][4] is not None:
            n, steps = out[name][4]
            print(f"host synchronisations in one {name} epoch of {steps} steps (sync debug mode): {n}")
    print("graphs captured and graph == eager within 1e-6:", ok if "graph" in out else "n/a (no CUDA)")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
