"""Cost of a fit step (``synaug fit``), ONE run: seconds per optimizer step of the tiny test
pipeline and of the full-size Stable Diffusion 1.5 architecture with random weights
(``random:sd15``), measured on this machine's device at small sizes, plus a PROJECTION to 512 px.

* the step timed is the one ``synaug fit`` runs (``synaug.generate.fit.step.diffusion_loss`` +
  the AdamW update of ``loop._update``: VAE encode, noise, UNet forward and backward through the
  frozen weights into the adapter), the fastest of ``--steps`` after one warm-up step, for each
  method asked; on the CPU both wall seconds and process CPU seconds are printed, and the
  projections use CPU seconds / threads (what an idle machine would take: this one is shared);
* FLOPs of one step are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the
  ``meta`` device (no compute) at the measured sizes and at 512 px;
* projections (NOT measurements): 512 px time on this device from a line t = a + b x FLOPs
  through the two measured sizes (on the CPU a small step is bound by reading the frozen
  weights, not by FLOPs: the printed time and FLOP ratios between the sizes show it);
  GPU time = FLOPs / (``--gpu-tflops`` x ``--mfu``), an assumed sustained rate; the time to fit
  ``--classes`` adapters of ``--steps-per-class`` steps (prior preservation doubles the batch);
* on CUDA, the peak memory allocated during the timed steps (``torch.cuda.max_memory_allocated``);
* memory at 512 px: :mod:`synaug.generate.fit.memory`'s estimate (weights + adapter/optimizer +
  activations the backward keeps, counted on ``meta``), fp16 and fp32, batch 1 and 4, with and
  without gradient checkpointing.

    .venv/bin/python benchmarks/bench_fit.py                 # CPU: tiny at 32 px, sd15 at 64 and 256 px
    .venv/bin/python benchmarks/bench_fit.py --device cuda --sd15-sizes 512 --batch-sizes 1 2 4 --dtype fp16
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

GiB = 1024 ** 3


def _sync(dev):
    import torch

    if str(dev).startswith("cuda"):
        torch.cuda.synchronize()


def _model(arch: str, method: str, dev: str, dtype: str, checkpointing: bool):
    from synaug.generate.fit import FitConfig
    from synaug.generate.fit.model import FitModel, load_fit_pipeline

    cfg = FitConfig(model=f"random:{arch}", method=method, mixed_precision=dtype, batch_size=1,
                    gradient_checkpointing=checkpointing)
    return FitModel(load_fit_pipeline(cfg, dev), cfg, dev), cfg


def time_steps(model, method: str, size: int, batch: int, steps: int, folder: Path) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds) per optimizer step, the fastest of ``steps`` after one
    warm-up step, and the peak CUDA memory allocated (0 on the CPU). Other load on a shared machine adds wall time; CPU seconds (all threads)
    barely move with it, and on an idle machine wall ~ CPU / threads for a compute-bound step."""
    import torch

    from synaug.generate.fit.data import ImageBank, make_units
    from synaug.generate.fit.loop import _update
    from synaug.generate.fit.model import make_adapter
    from synaug.generate.fit.step import Batch, diffusion_loss
    from synaug.generate.tiny import toy_image_manifest

    real = toy_image_manifest(folder, ["cat"], max(batch, 4), size=32)
    unit = make_units(real, "class", ["cat"])[0]
    bank = ImageBank(unit.paths(), size)
    adapter = make_adapter(model, unit)
    opt = torch.optim.AdamW(adapter.params().values(), lr=1e-4, weight_decay=1e-2)
    cap = "a photo of <cat>" if method == "textual_inversion" else "a photo of cat"
    times, cpu = [], []
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(model.device)
    for s in range(steps + 1):
        gen = torch.Generator().manual_seed(s)
        idx = [(s * batch + i) % len(bank) for i in range(batch)]
        _sync(model.device)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = diffusion_loss(model, adapter, Batch(bank.batch(idx, [False] * batch), [cap] * batch, batch), gen)
        _update(loss, adapter.params(), opt, None, 1.0)
        _sync(model.device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated(model.device) if cuda else 0
    adapter.close()
    return min(times[1:]), min(cpu[1:]), peak


def step_flops(unet_config: dict, vae_config: dict, method: str, rank: int, batch: int, size: int, dtype,
               text_dim: int) -> int:
    """FLOPs of one fit step on ``meta``: VAE encode (no grad) + UNet forward and backward."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig
    from torch.utils.flop_counter import FlopCounterMode

    from synaug.generate.fit.model import LORA_TARGETS
    from synaug.generate.fullsize import quiet_diffusers

    with torch.device("meta"), quiet_diffusers():
        unet = UNet2DConditionModel.from_config(unet_config).to(dtype)
        vae = AutoencoderKL.from_config(vae_config).to(dtype)
        unet.requires_grad_(False)
        vae.requires_grad_(False)
        if method != "textual_inversion":
            unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                        target_modules=LORA_TARGETS[method]))
    lat = size // 8
    x = torch.zeros(batch, 3, size, size, device="meta", dtype=dtype)
    text = torch.zeros(batch, 77, text_dim, device="meta", dtype=dtype, requires_grad=method == "textual_inversion")
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            vae.encoder(x)
        out = unet(torch.zeros(batch, 4, lat, lat, device="meta", dtype=dtype), torch.zeros(batch, dtype=torch.long,
                   device="meta"), text, return_dict=False)[0]
        out.float().pow(2).mean().backward()
    return int(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", nargs="+", default=["lora", "textual_inversion"])
    ap.add_argument("--tiny-size", type=int, default=32)
    ap.add_argument("--sd15-sizes", type=int, nargs="+", default=None, help="default 64 256 (CPU), 512 (CUDA)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    ap.add_argument("--dtype", default="auto", help="fit mixed_precision: auto | no | bf16 | fp16")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per point (after one warm-up)")
    ap.add_argument("--no-sd15", action="store_true")
    ap.add_argument("--gpu-tflops", type=float, default=989.0,
                    help="peak dense fp16 TFLOP/s of the GPU projected to (989: H100 SXM, NVIDIA's datasheet)")
    ap.add_argument("--mfu", type=float, nargs="+", default=[0.05, 0.2, 0.4],
                    help="assumed sustained share of that peak (a range: a batch-1 step is mostly far from peak)")
    ap.add_argument("--classes", type=int, default=100, help="adapters of the projection (CIFAR-100)")
    ap.add_argument("--steps-per-class", type=int, default=500)
    args = ap.parse_args()

    import torch

    from synaug.generate.diffusers_backend import resolve_device
    from synaug.generate.fit.memory import saved_activation_bytes
    from synaug.generate.fullsize import ARCHS, build_random_sd, parameter_counts

    dev = resolve_device(args.device)
    cuda = dev.startswith("cuda")
    sizes = args.sd15_sizes or ([512] if cuda else [64, 256])
    print(f"device {dev} ({torch.cuda.get_device_name(0) if cuda else 'CPU'}), torch threads "
          f"{torch.get_num_threads()}, fit mixed_precision {args.dtype}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = [("tiny", args.tiny_size)] + ([] if args.no_sd15 else [("sd15", s) for s in sizes])
        for method in args.methods:
            models = {}
            for arch, size in plan:
                if arch not in models:
                    t0 = time.perf_counter()
                    models[arch] = _model(arch, method, dev, args.dtype, False)
                    print(f"[{method}] built random:{arch} in {time.perf_counter() - t0:.1f} s")
                model, cfg = models[arch]
                for b in args.batch_sizes:
                    s, c, peak = time_steps(model, method, size, b, args.steps, Path(tmp) / f"{arch}-{method}-{size}-{b}")
                    fl = step_flops(dict(model.unet.config), dict(model.vae.config), method, cfg.rank, b, size,
                                    model.dtype, model.unet.config.cross_attention_dim)
                    t = s if cuda else c / torch.get_num_threads()  # CPU: contention-free estimate
                    results.append((method, arch, size, b, t, fl))
                    print(f"  {method:17s} {arch:5s} {size:4d} px batch {b}: {s:8.3f} s/step wall, {c:8.3f} CPU-s/step "
                          f"({t:.3f} s/step at {torch.get_num_threads()} busy threads)  {fl / 1e9:9.1f} GFLOP/step  "
                          f"{fl / t / 1e9:7.1f} GFLOP/s" + (f"  peak {peak / GiB:.2f} GiB" if cuda else ""))
            models.clear()
    _projection(results, args, sizes, cuda)
    if not args.no_sd15:
        spec = ARCHS["sd15"]
        counts = parameter_counts(build_random_sd("sd15", device="meta"))
        print("\nmemory estimate at 512 px, random:sd15 (synaug.generate.fit.memory; eager attention, "
              "no CUDA context):")
        for method in args.methods:
            for dt, nbytes in ((torch.float16, 2), (torch.float32, 4)):
                for b in (1, 4):
                    for ck in (False, True):
                        acts, train = saved_activation_bytes(spec["unet"], method, 4, b, 64, dt, ck, 768)
                        train = train if method != "textual_inversion" else 768
                        total = sum(counts.values()) * nbytes + 16 * train + acts
                        print(f"  {method:17s} {str(dt).replace('torch.', ''):8s} batch {b} checkpointing "
                              f"{'on ' if ck else 'off'}: {total / GiB:6.2f} GiB (activations {acts / GiB:6.2f})")


def _projection(results, args, sizes, cuda: bool) -> None:
    """512 px on this device: t = a + b * FLOPs fitted through the two largest measured sizes
    (a = the cost that does not grow with the image: reading the 860M frozen weights forward
    and backward, Python overhead), or the FLOP ratio when only one size was measured."""
    import torch

    from synaug.generate.fullsize import ARCHS

    print("\nPROJECTIONS (not measurements):")
    for method in args.methods:
        sd = [r for r in results if r[0] == method and r[1] == "sd15" and r[3] == args.batch_sizes[0]]
        if not sd:
            continue
        b = sd[-1][3]
        f512 = step_flops(ARCHS["sd15"]["unet"], ARCHS["sd15"]["vae"], method, 4, b, 512, torch.float16, 768)
        if len(sd) >= 2:
            (_, _, s0, _, t0, f0), (_, _, s1, _, t1, f1) = sd[-2], sd[-1]
            per_flop = max((t1 - t0) / (f1 - f0), 0.0)
            fixed = t1 - per_flop * f1
            here = fixed + per_flop * f512
            how = (f"{s0} -> {s1} px took {t1 / t0:.2f}x the time for {f1 / f0:.2f}x the FLOPs: fixed {fixed:.1f} s "
                   f"+ {per_flop * 1e9:.4f} s/GFLOP")
        else:
            (_, _, s1, _, t1, f1) = sd[-1]
            here, how = t1 * f512 / f1, f"FLOP ratio from {s1} px"
        total = args.classes * args.steps_per_class
        print(f"  [{method}] one step at 512 px, batch {b}: {f512 / 1e12:.2f} TFLOP; on this device ~{here:.0f} s/step "
              f"({how}); {args.classes} classes x {args.steps_per_class} steps: ~{total * here / 86400:.0f} days")
        for mfu in args.mfu:
            g = f512 / (args.gpu_tflops * 1e12 * mfu)
            print(f"  [{method}] GPU at {args.gpu_tflops:.0f} TFLOP/s x {mfu:.0%}: {g * 1e3:.0f} ms/step, "
                  f"{args.classes} classes x {args.steps_per_class} steps = {total * g / 3600:.1f} h "
                  f"({2 * total * g / 3600:.1f} h with prior preservation, batch doubled)")

if __name__ == "__main__":
    main()
