"""Generation throughput on this machine: tiny Stable Diffusion pipeline and the pool backend.

    .venv/bin/python benchmarks/bench_generate.py [--images 48] [--steps 2] [--device cpu]

Prints per-image time of the tiny random pipeline (32x32, classifier-free guidance on) for a
few batch sizes, the end-to-end runner (PNG writes + shard rows included), and the pool
backend's images/s with and without the synthetic-domain shift in three settings, alternated
rounds, time ratios to today's: manifest parts of 8 images (the model batch) with an fsync per
copied file (the first pool copy), parts of ``PoolGenerator.write_batch`` images with an fsync per
file (before 2026-12-07), and today's: those parts with one sync per part. The tiny pipeline
measures the engine's overhead, not Stable Diffusion's speed.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _time(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--pool-images", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds of the pool comparison")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from synaug.generate import GenerateConfig, generate
    from synaug.generate.base import plan_items
    from synaug.generate.diffusers_backend import Txt2ImgGenerator, load_pipeline
    from synaug.generate.runner import build_prompt_fn
    from synaug.generate.tiny import build_tiny_sd, toy_image_manifest
    from synaug.plan import Cell, Plan

    classes = ["cat", "dog", "truck"]
    per = -(-args.images // 3)
    plan = Plan("class", classes, [Cell(i, c, 0, per, attributes={"class": c}) for i, c in enumerate(classes)])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_sd(tmp / "tiny-sd")
        cfg = GenerateConfig(model=str(model), steps=args.steps, device=args.device, dtype=args.dtype)
        pipe = load_pipeline(cfg, "txt2img", args.device)
        n_params = sum(p.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
        items = plan_items(plan, build_prompt_fn(plan, cfg), cfg.seed)[: args.images]
        print(f"tiny SD pipeline: {n_params / 1e6:.2f}M params, {args.steps} steps, 32x32, CFG 7.5, "
              f"{len(items)} images")
        base = None
        for bs in args.batch_sizes:
            gen = Txt2ImgGenerator(pipe, cfg.model_copy(update={"batch_size": bs}))
            gen.generate(items[:bs], [it.seed for it in items[:bs]])  # warm-up

            def run():
                for i in range(0, len(items), bs):
                    b = items[i: i + bs]
                    gen.generate(b, [it.seed for it in b])

            t = _time(run, repeat=2) / len(items)
            base = base or t
            print(f"  pipeline  batch {bs:3d}: {t * 1e3:7.2f} ms/image  ({1 / t:7.1f} img/s, "
                  f"x{base / t:.2f} vs batch {args.batch_sizes[0]})")
        for bs in (1, 8):
            c = cfg.model_copy(update={"batch_size": bs})
            t = _time(lambda: generate(plan, c, tmp / f"run{bs}", progress=False)) / plan.total_synthetic
            print(f"  runner    batch {bs:3d}: {t * 1e3:7.2f} ms/image  (load + PNG + shard rows + merge)")

        pool_per = -(-args.pool_images // 3)
        pool = toy_image_manifest(tmp / "pool", classes, pool_per, ext="jpg")
        pool.write(tmp / "pool.parquet")
        pplan = Plan("class", classes, [Cell(i, c, 0, pool_per, attributes={"class": c})
                                        for i, c in enumerate(classes)])
        from synaug.generate import runner
        from synaug.generate.pool import PoolGenerator

        parts = PoolGenerator.write_batch
        durable_write = runner.write_bytes_atomic
        # name -> (manifest part size, fsync every file): the history of the pool copy, then today's
        settings = {"8-image parts, fsync per file": (0, True),
                    f"{parts}-image parts, fsync per file": (parts, True),
                    f"{parts}-image parts, one sync per part": (parts, False)}
        for shift in ("none", "synthetic-domain"):
            pc = GenerateConfig(backend="pool", batch_size=8,
                                pool={"manifest": str(tmp / "pool.parquet"), "shift": shift})
            times: dict[str, list[float]] = {k: [] for k in settings}
            for r in range(args.rounds):      # alternated: every setting sees the same machine state
                for k, (wb, fsync_each) in settings.items():
                    PoolGenerator.write_batch = wb
                    runner.write_bytes_atomic = ((lambda p, d, durable=True: durable_write(p, d, True))
                                                 if fsync_each else durable_write)
                    times[k].append(_time(lambda: generate(pplan, pc, tmp / f"pool-{shift}-{wb}-{fsync_each}-{r}",
                                                           progress=False)))
            PoolGenerator.write_batch, runner.write_bytes_atomic = parts, durable_write
            today = list(settings)[-1]
            for k in settings:
                t = sorted(times[k])[len(times[k]) // 2]
                ratio = sorted(a / b for a, b in zip(times[k], times[today]))[args.rounds // 2]
                print(f"  pool shift={shift:16s} {k:36s}: {pplan.total_synthetic / t:7.0f} img/s "
                      f"({t / pplan.total_synthetic * 1e3:.2f} ms/image, end to end; time / today's {ratio:.2f})")

if __name__ == "__main__":
    main()
