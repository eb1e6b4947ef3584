"""``synaug fit``: fine-tune Stable Diffusion on the real images of each class (adapters for generation)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Fit the generator to your classes before generating (the paper's "class distribution fitting",
Table 5; Diff-Mix, DA-Fusion): fine-tune Stable Diffusion 1.x/2.x on the REAL TRAINING images of
each class (never validation or test rows) and save small adapters that `synaug generate` loads
(`adapters: OUT` in the generation config; `fit:` in a `synaug run` config does both).

Methods (config key `method`):
  lora               LoRA (peft) on the UNet attention projections to_q/k/v/out, rank `rank`;
                     captions "a photo of {class}" (the generation template without {modifier}).
  textual_inversion  one new token <class> per class, its embedding alone trained (DA-Fusion);
                     prompts then say "a photo of <cat>".
  dreambooth_lora    LoRA with DreamBooth's identifier ("a photo of sks cat"); with
                     prior_preservation, `num_class_images` base-model images per class are made
                     first and fitted too (loss + prior_loss_weight x prior loss).
`per: class` fits one adapter per class; `per: dataset` one adapter on every class's images
(textual inversion: one token per class, trained together).

Keys (defaults from diffusers' training recipes): steps (lora/dreambooth_lora 500,
textual_inversion 3000), lr (1e-4; textual_inversion 5e-4), rank (4), resolution (model's native),
batch_size (1), weight_decay (1e-2), max_grad_norm (1.0), random_flip (true), template,
identifier (sks), prior_preservation, prior_loss_weight (1), num_class_images (100),
prior_steps (25), mixed_precision (auto = fp16 on CUDA | no | fp16 | bf16),
gradient_checkpointing, save_every (100), device, seed, model, local_files_only.

Few images: a class with 3-5 images is DreamBooth's regime; with 1 or 2 the adapter is fitted to
those images (redrawn every step, randomly flipped) and a warning says it may reproduce them;
a class with no real training image is refused.

Resumable: a checkpoint (adapter + AdamW state + step) is written atomically every save_every
steps; rerunning the same command after a crash or kill continues where it stopped and gives the
same adapter as an uninterrupted fit. Multi-process: `torchrun --nproc_per_node N -m synaug.cli
fit ...` or `accelerate launch --num_processes N -m synaug.cli fit ...` shards the classes.

Output: OUT/units/<class>/{pytorch_lora_weights.safetensors | learned_embeds.safetensors,
adapter.json (config, sha256, losses), images.parquet (the real images it saw)},
OUT/adapters.json (the index generation reads), OUT/fit.yaml.

example fit.yaml:
  method: lora
  model: CompVis/stable-diffusion-v1-4
  steps: 500
  resolution: 512
  mixed_precision: fp16
"""


def register(sub) -> None:
    p = sub.add_parser("fit", help="fine-tune the diffusion model on each class's real images (LoRA / textual "
                                   "inversion / DreamBooth-LoRA adapters for generate)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", default=None, help="fit config YAML (see above)")
    p.add_argument("--manifest", "-m", required=True,
                   help="the real data: a manifest (.parquet/.csv) or an image folder; only its train rows are read")
    p.add_argument("--data-root", default=None, help="root of a plain table's image paths")
    p.add_argument("--plan", default=None, help="a plan from `synaug plan`: fit the classes it generates for "
                                                "(per: class), without the real rows it drops")
    p.add_argument("--classes", nargs="+", default=None, help="fit these classes (default: the plan's, else all)")
    p.add_argument("--out", "-o", required=True, help="output folder (rerun the same command to resume)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set steps=200 --set method=textual_inversion")
    p.add_argument("--check", action="store_true",
                   help="load the model, list the adapters and print the memory estimate; fit nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars / summary")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from ...config import load
    from ...data.read import read_manifest
    from ..dist import setup_distributed
    from .config import FitConfig
    from .runner import fit

    cfg = load(FitConfig, args.config, list(args.overrides))
    real = read_manifest(args.manifest, args.data_root, root_for_plain_only=True)
    classes = args.classes
    if args.plan:
        from ...plan import Plan, apply_plan

        plan = Plan.read(args.plan)
        real = apply_plan(real, plan)
        if classes is None and cfg.per == "class":
            classes = list(dict.fromkeys(c.class_name for c in plan.cells if c.synthetic > 0))
    template = cfg.template or "a photo of {class}"
    dist = setup_distributed()
    out = fit(real, cfg, args.out, classes, template, progress=not args.no_progress, dist=dist,
              check_only=args.check)
    if not args.check and dist.rank == 0:
        print(f"wrote {len(out.classes)} class adapter(s) and {args.out}/adapters.json")
    return 0
