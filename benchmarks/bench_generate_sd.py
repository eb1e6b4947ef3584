"""Generation cost of ``synaug generate`` on a full-size Stable Diffusion pipeline with random
weights (no download), ONE run: img/s per image size x batch size x variant, peak GPU memory,
and the projected time for the paper's CIFAR-100-LT plan.

* pipeline: ``random:sd15`` (default on CUDA; ``--arch sd21-base``) = the published SD 1.5 /
  2.1-base UNet, VAE and text encoder, random weights (``synaug.generate.fullsize``), fp16; on
  the CPU ``random:tiny`` (the test pipeline: engine overhead only, not SD's cost), or with
  ``--arch sd15`` the full-size pipeline in fp32 at CPU-sized defaults (64 px, batch 1, 2 steps,
  one end-to-end image);
* the call timed is the one ``synaug generate`` makes per batch (``Txt2ImgGenerator.generate``:
  CFG 7.5, ``--steps`` DPM++ steps, per-image CPU generators, PIL output), after one warm-up batch;
* variants: ``plain``, ``channels_last`` (UNet + VAE), ``compile`` (``torch.compile`` of the UNet,
  mode reduce-overhead on CUDA), ``compile+channels_last``; compiled variants only at the
  ``--compile-points`` (size x batch) because every new shape recompiles (~1 min each);
* end to end: one ``synaug.generate.generate`` run (runner, PNG writes at 32 px, manifest) at the
  recommended setting, pipeline build time subtracted;
* projection: ``--plan-images`` (39,153 = CIFAR-100-LT at IF 100 uniformized to 500 per class)
  at the best measured rate.

    .venv/bin/python benchmarks/bench_generate_sd.py                       # CPU: tiny pipeline
    .venv/bin/python benchmarks/bench_generate_sd.py --arch sd15           # CPU: SD 1.5 sized, 64 px
    .venv/bin/python benchmarks/bench_generate_sd.py --device cuda         # GPU: SD 1.5 sized
        [--sizes 512 256] [--batch-sizes 1 2 4 8 16 32] [--variants plain channels_last compile
        compile+channels_last] [--compile-points 512x8 256x32] [--budget-s 300]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

CIFAR100_LT_IF100 = 39153


def _sync(dev: str):
    import torch

    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", default=None, help="sd15 | sd21-base | tiny (default: sd15 on CUDA, tiny on CPU)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="default: 512 256 (CUDA), 32 (tiny)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 1 2 4 8 16 32 (CUDA), 1 4 16")
    ap.add_argument("--steps", type=int, default=None, help="default 10 (2 for a full-size pipeline on the CPU)")
    ap.add_argument("--variants", nargs="+", default=None,
                    help="plain channels_last compile compile+channels_last (default: all on CUDA, plain "
                         "channels_last on CPU)")
    ap.add_argument("--compile-points", nargs="*", default=None, help="SIZExBATCH, default 512x8 256x32 (CUDA)")
    ap.add_argument("--repeats", type=int, default=2, help="timed batches per point")
    ap.add_argument("--recommended-size", type=int, default=None, help="size for CIFAR (default: 256 on CUDA)")
    ap.add_argument("--plan-images", type=int, default=CIFAR100_LT_IF100)
    ap.add_argument("--e2e-images", type=int, default=None, help="images of the end-to-end run (default 4 batches)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip the remaining points after this many s")
    args = ap.parse_args()

    import torch

    from synaug.generate import GenerateConfig, generate
    from synaug.generate.base import plan_items
    from synaug.generate.diffusers_backend import Txt2ImgGenerator, load_pipeline, resolve_device
    from synaug.generate.fullsize import parameter_counts
    from synaug.generate.runner import build_prompt_fn
    from synaug.plan import Cell, Plan

    dev = resolve_device(args.device)
    cuda = dev.startswith("cuda")
    arch = args.arch or ("sd15" if cuda else "tiny")
    full_cpu = not cuda and arch != "tiny"   # SD-sized on the CPU: one small image is minutes of work
    sizes = args.sizes or ([512, 256] if cuda else [64] if full_cpu else [32])
    bss = args.batch_sizes or ([1, 2, 4, 8, 16, 32] if cuda else [1] if full_cpu else [1, 4, 16])
    variants = args.variants or (["plain", "channels_last", "compile", "compile+channels_last"] if cuda
                                 else ["plain"] if full_cpu else ["plain", "channels_last"])
    args.steps = args.steps or (2 if full_cpu else 10)
    args.e2e_images = args.e2e_images or (1 if full_cpu else None)
    points = args.compile_points if args.compile_points is not None else (["512x8", "256x32"] if cuda else [])
    points = {tuple(int(v) for v in p.split("x")) for p in points}
    rec_size = args.recommended_size or (256 if cuda else sizes[0])
    t_start = time.perf_counter()

    classes = ["apple", "bicycle", "cloud", "dolphin"]
    plan = Plan("class", classes, [Cell(i, c, 0, 64, attributes={"class": c}) for i, c in enumerate(classes)])
    base = GenerateConfig(model=f"random:{arch}", steps=args.steps, device=dev, dtype="fp16" if cuda else "fp32",
                          scheduler="dpm++", task="cifar", modifiers="none")
    items = plan_items(plan, build_prompt_fn(plan, base), base.seed)
    t0 = time.perf_counter()
    pipe = load_pipeline(base, "txt2img", dev)
    _sync(dev)
    build_s = time.perf_counter() - t0
    counts = parameter_counts(pipe)
    name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"torch {torch.__version__}, {name}; pipeline random:{arch} (UNet {counts['unet'] / 1e6:.1f}M, VAE "
          f"{counts['vae'] / 1e6:.1f}M, text {counts['text_encoder'] / 1e6:.1f}M params, random weights), "
          f"{base.dtype}, {args.steps} DPM++ steps, CFG {base.guidance_scale}; built in {build_s:.1f} s")
    unet = pipe.unet
    results: dict[tuple, dict] = {}
    for variant in variants:
        cl, comp = "channels_last" in variant, "compile" in variant
        pipe.unet = unet
        fmt = torch.channels_last if cl else torch.contiguous_format
        pipe.unet.to(memory_format=fmt)
        pipe.vae.to(memory_format=fmt)
        if comp:
            pipe.unet = torch.compile(unet, mode="reduce-overhead" if cuda else "default", fullgraph=True)
        for size in sizes:
            for bs in bss:
                if comp and (size, bs) not in points:
                    continue
                if time.perf_counter() - t_start > args.budget_s:
                    print(f"  {variant:<22} {size:4d}px batch {bs:3d}: skipped (--budget-s)")
                    continue
                gen = Txt2ImgGenerator(pipe, base.model_copy(update={"batch_size": bs, "gen_size": size}))
                batch = items[:bs]
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                try:
                    t0 = time.perf_counter()
                    gen.generate(batch, [it.seed for it in batch])  # warm-up (and compilation)
                    _sync(dev)
                    warm = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    for _ in range(args.repeats):
                        gen.generate(batch, [it.seed for it in batch])
                    _sync(dev)
                    dt = (time.perf_counter() - t0) / args.repeats
                except torch.OutOfMemoryError:
                    print(f"  {variant:<22} {size:4d}px batch {bs:3d}: out of memory")
                    torch.cuda.empty_cache()
                    continue
                peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
                results[(variant, size, bs)] = {"img_s": bs / dt, "peak_gib": peak, "warm_s": warm}
                print(f"  {variant:<22} {size:4d}px batch {bs:3d}: {bs / dt:8.2f} img/s  "
                      f"({dt / bs * 1e3:8.1f} ms/img)  peak {peak:6.2f} GiB  first batch {warm:6.1f} s", flush=True)
    pipe.unet = unet

    def best(size, variant=None):
        c = [(v["img_s"], k) for k, v in results.items() if k[1] == size and (variant is None or k[0] == variant)]
        return max(c) if c else (None, None)

    print("\nratios (same run):")
    for size in sizes:
        r1 = results.get(("plain", size, bss[0]))
        rb, kb = best(size, "plain")
        if r1 and rb:
            print(f"  {size}px plain: best batch ({kb[2]}) / batch {bss[0]}: {rb / r1['img_s']:6.2f}x")
        for v in variants:
            if v == "plain":
                continue
            for (vv, s, b), r in results.items():
                if vv == v and s == size and ("plain", s, b) in results:
                    print(f"  {size}px batch {b:3d}: {v} / plain {r['img_s'] / results[('plain', s, b)]['img_s']:6.2f}x")
    if len(sizes) > 1 and best(sizes[0])[0] and best(rec_size)[0]:
        print(f"  best {rec_size}px / best {sizes[0]}px: {best(rec_size)[0] / best(sizes[0])[0]:6.2f}x")

    # end to end at the recommended size, best plain-or-channels_last batch size
    cands = [(v["img_s"], k) for k, v in results.items() if k[1] == rec_size and "compile" not in k[0]]
    if cands:
        _, (v, size, bs) = max(cands)
        n = args.e2e_images or 4 * bs
        cls = classes[:min(n, len(classes))]
        per = -(-n // len(cls))
        p2 = Plan("class", cls, [Cell(i, c, 0, per, attributes={"class": c}) for i, c in enumerate(cls)])
        cfg = base.model_copy(update={"batch_size": bs, "gen_size": size, "channels_last": "channels_last" in v})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate(p2, cfg, Path(tmp) / "out", progress=False)
            e2e = time.perf_counter() - t0
        rate = p2.total_synthetic / max(e2e - build_s, 1e-9)
        print(f"\nend to end (synaug.generate.generate, {p2.total_synthetic} images, {size}px, batch {bs}, {v}): "
              f"{e2e:.1f} s incl. ~{build_s:.1f} s pipeline build -> {rate:.2f} img/s "
              f"({rate / results[(v, size, bs)]['img_s']:.2f} of the pipeline-only rate)")
        print(f"\nprojection for {args.plan_images:,} images (CIFAR-100-LT, IF 100, uniformized to 500/class), "
              f"one device, this pipeline size:")
        for size in sizes:
            r, k = best(size)
            if r:
                print(f"  {size}px best ({k[0]}, batch {k[2]}): {r:.2f} img/s -> {args.plan_images / r / 3600:.2f} h "
                      f"(x{rate / results[(v, rec_size, bs)]['img_s']:.2f} end-to-end factor: "
                      f"{args.plan_images / (r * rate / results[(v, rec_size, bs)]['img_s']) / 3600:.2f} h)")
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
