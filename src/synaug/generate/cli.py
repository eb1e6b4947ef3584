"""``synaug generate``: make a plan's synthetic images (SYNAuG step 1)."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Make the synthetic images a plan asks for and write their manifest.

Backends (config key `backend`):
  txt2img  diffusers text-to-image: Stable Diffusion 1.x/2.x/SDXL/turbo from a Hugging Face
           id or a local folder (`model`). Keys: dtype (auto|fp16|bf16|fp32), device,
           scheduler (dpm++ [default] | dpm++-karras | euler | euler-a | ddim | default),
           steps (10), guidance_scale (7.5), negative_prompt, batch_size, gen_size,
           local_files_only, attention_slicing, channels_last, compile_unet. Output resized
           to `resolution` (LANCZOS). Weights load from safetensors only; no remote code; no
           safety checker. `model: random:sd15 | random:sd21-base | random:tiny` builds the
           published architecture with random weights (noise images: cost measurements only).
  img2img  diffusers image-to-image guided by real images from --real-manifest
           (paper Table 5): img2img.mode intra (same class) | inter (random other class),
           img2img.strength (0.75).
  pool     take each cell's images from an existing labelled manifest (pool.manifest),
           without replacement, deterministically; copied as PNG into --out.
           pool.shift: none | synthetic-domain (saturation x1.5, Gaussian blur 0.6 px,
           warm cast R x1.06 B x0.92: a stand-in for the synthetic domain gap when no
           diffusion weights exist).

Prompts: task cifar 'a photo of {modifier} {class}' (20 shipped modifiers per CIFAR-10/100
class), imagenet 'a photo of {class}', utkface 'Portrait face photo of {race} {gender}, {age}
year old', waterbirds 'The photo of {bird} in {place}'; `template`, `modifiers` (auto | none |
cifar10 | cifar100 | file.json) and `prompts` (file.json) override. --no-modifiers gives
'a photo of {class}' (Table 1 row a). Optional clip_filter.{enabled,model,threshold}.
select.* (more candidates + a selector scored by a model trained on the run's data) runs
inside `synaug run` only; see docs/synthetic.md.

Every image's seed derives from (seed, cell, index): rerunning the same command resumes
and makes exactly the missing images. Multi-process: `accelerate launch --num_processes N
-m synaug.cli generate ...` or `torchrun --nproc_per_node N -m synaug.cli generate ...`.
Output: OUT/images/<cell>/<index>.png, OUT/synthetic.parquet, OUT/generate.yaml.

example gen.yaml:
  backend: txt2img
  model: stabilityai/stable-diffusion-2-1-base
  dtype: fp16
  steps: 10
  batch_size: 16
  resolution: 32
"""


def register(sub) -> None:
    p = sub.add_parser("generate", help="make the plan's synthetic images (txt2img / img2img / pool)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", required=True, help="plan file from `synaug plan` (.json or .csv)")
    p.add_argument("--config", "-c", default=None, help="generation config YAML (see above)")
    p.add_argument("--out", "-o", default=None, help="output folder (default: <plan folder>/synthetic)")
    p.add_argument("--real-manifest", default=None, help="real manifest (img2img guidance images)")
    p.add_argument("--data-root", default=None, help="root of the real manifest's images, if plain table")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set steps=20 --set pool.shift=synthetic-domain")
    p.add_argument("--no-modifiers", action="store_true", help="prompt without modifiers (Table 1 row a)")
    p.add_argument("--rank", type=int, default=None,
                   help="make only this share (independent jobs without a launcher; needs --world-size)")
    p.add_argument("--world-size", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar / summary")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from ..config import load, parse_override
    from ..errors import SynaugError
    from ..manifest import Manifest
    from ..plan import Plan
    from .config import GenerateConfig
    from .dist import DistInfo, setup_distributed
    from .runner import generate

    overrides = dict(parse_override(o) for o in args.overrides)
    if args.no_modifiers:
        overrides["modifiers"] = "none"
    cfg = load(GenerateConfig, args.config, overrides)
    plan = Plan.read(args.plan)
    out = Path(args.out) if args.out else Path(args.plan).resolve().parent / "synthetic"
    real = Manifest.read(args.real_manifest, root=args.data_root) if args.real_manifest else None
    if real is not None and cfg.backend == "img2img":  # guidance images: found before any model loads
        for p in real.split(cfg.img2img.split).abspaths():
            if not p.is_file():
                root = real.roots.get("real")
                raise SynaugError(f"img2img guidance image not found: {p} (paths of {args.real_manifest} are "
                                  f"read relative to {root}; give the folder they are relative to with --data-root)")
    if (args.rank is None) != (args.world_size is None):
        raise SynaugError("give both --rank and --world-size, or neither")
    if args.rank is not None:
        if args.world_size < 1:
            raise SynaugError(f"--world-size must be >= 1, got {args.world_size}")
        dist = DistInfo(args.rank, args.world_size, 0, group=False)
    else:
        dist = setup_distributed()
    m = generate(plan, cfg, out, real, progress=not args.no_progress, dist=dist)
    if m is not None and dist.rank == 0:
        print(f"wrote {len(m)} images and {out / 'synthetic.parquet'}")
    return 0
