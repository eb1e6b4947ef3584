"""``synaug demo``: the embedded default, fully offline on CPU.

CIFAR-10-LT (IF 100, 500 images in the head class) built from the real CIFAR-10 JPEGs in
``../shared/data``. Three runs: CE on the long-tailed set (baseline); SYNAuG whose "generator"
is the pool of held-out real training images (the paper's web-crawled baseline, Table 5);
and SYNAuG on the same pool passed through the fixed "synthetic-domain" shift (saturation,
blur, colour cast), so the domain-gap machinery (Mixup, last-layer fine-tuning) is exercised.
No Stable Diffusion weights exist on this machine: no diffusion model is used here.
"""
from __future__ import annotations

import copy
from pathlib import Path

POOL_NOTE = ("pool of held-out real CIFAR-10 training images (the images the long-tail draw left out; "
             "NOT a diffusion model: no Stable Diffusion weights exist offline)")
SHIFT_NOTE = POOL_NOTE.replace("(the images", "passed through the fixed 'synthetic-domain' shift "
                                              "(saturation x1.5, blur 0.6 px, warm cast) (the images")


def base_config(epochs: int, quick: bool) -> dict:
    e = max(int(epochs), 1)
    cfg = {
        "data": {"dataset": "shared-cifar10", "img_max": 500, "imbalance_factor": 100,
                 "val_per_class": 20, "lt_seed": 0},
        "train": {"epochs": e, "batch_size": 128, "model": {"name": "resnet32"},
                  "optim": {"lr": 0.1, "weight_decay": 2e-4},
                  "schedule": {"name": "multistep", "warmup_epochs": min(5, e // 6),
                               "milestones": [int(e * 0.8), int(e * 0.9)] if e >= 10 else [],
                               "factors": [0.1, 0.01] if e >= 10 else []},
                  "select_metric": "mean_class"},
    }
    if quick:  # CI size: a few hundred images, 1 epoch, smaller test set
        cfg["data"].update({"img_max": 60, "imbalance_factor": 10, "val_per_class": 3, "test_per_class": 20})
        cfg["train"]["model"]["width"] = 4
    return cfg


def variants(epochs: int, quick: bool, seed: int) -> dict[str, dict]:
    base = base_config(epochs, quick)
    ce = copy.deepcopy(base)
    ce.update({"name": "ce", "seed": seed, "plan": None, "generate": None, "finetune": None,
               "description": "cross-entropy on the long-tailed real data (baseline)"})
    ce["train"]["mix"] = {"mixup": False}
    syn = copy.deepcopy(base)
    syn.update({"name": "synaug-pool", "seed": seed, "plan": {"mode": "class"},
                "generate": {"backend": "pool", "resolution": 32, "pool": {"manifest": "heldout", "shift": "none"}},
                "finetune": {"mode": "finetune", "epochs": 30 if not quick else 2},
                "generator_note": POOL_NOTE,
                "description": "SYNAuG: uniformize with the held-out real pool, Mixup, fine-tune the last layer"})
    syn["train"]["mix"] = {"mixup": True}
    shift = copy.deepcopy(syn)
    shift["name"] = "synaug-pool-shift"
    shift["generate"]["pool"]["shift"] = "synthetic-domain"
    shift["generator_note"] = SHIFT_NOTE
    shift["description"] = "SYNAuG with the pool shifted into a simulated synthetic domain"
    return {"ce": ce, "synaug-pool": syn, "synaug-pool-shift": shift}


def register(sub) -> None:
    p = sub.add_parser("demo", help="offline CPU demo: CE vs SYNAuG on CIFAR-10-LT from ../shared/data",
                       description=__doc__)
    p.add_argument("--out", "-o", default="runs/demo", help="folder for the three runs and the comparison")
    p.add_argument("--epochs", type=int, default=30, help="training epochs per run (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny CI-size version (a few hundred images, 1 epoch)")
    p.add_argument("--data-root", default=None, help="folder holding cifar10/{train,test}.tar (default ../shared/data)")
    p.add_argument("--only", nargs="*", default=None, choices=["ce", "synaug-pool", "synaug-pool-shift"])
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from .report import compare
    from .run import load_run_config, print_summary_table, run

    out = Path(args.out)
    epochs = 1 if args.quick else args.epochs
    summaries, dirs = [], []
    for name, raw in variants(epochs, args.quick, args.seed).items():
        if args.only and name not in args.only:
            continue
        if args.data_root:
            raw["data"]["root"] = args.data_root
        cfg = load_run_config(None, base=raw)
        print(f"=== {name}: {cfg.description}")
        summaries.append(run(cfg, out / name))
        dirs.append(out / name)
    print_summary_table(summaries)
    for s in summaries:
        print(f"generator of {s['name']}: {s['generator']}")
    html = compare(dirs, out, "synaug demo: CIFAR-10-LT (IF 100) from the shared real images",
                   notes=[POOL_NOTE[0].upper() + POOL_NOTE[1:] + " played the role of the generator in synaug-pool.",
                          "synaug-pool-shift: the same pool after the fixed synthetic-domain shift."])
    print(f"report: {html}")
    return 0
