"""The CIFAR-10 runs Tables 1, 2, 5 and Figs. 2, 3 share, at each scale.

Long-tailed runs start from ``configs/table2-cpu.yaml`` (CE), ``configs/table1-cpu.yaml``
(SYNAuG: uniformized with the Stable Diffusion 1.4 images of ``shared-sd14``) and
``configs/table5-cpu.yaml`` (uniformized with the held-out real pool: the paper's
web-crawled baseline); balanced runs from ``configs/fig2-cpu.yaml`` / ``fig3-cpu.yaml``.
The ``small`` scale is exactly those files; ``tiny`` shrinks them to a smoke test.
"""
from __future__ import annotations

from .common import TINY_FINETUNE, TINY_TRAIN, check_scale, load_config, merge

_TINY = {
    "lt": {"data": {"img_max": 40, "imbalance_factor": 10, "val_per_class": 2, "test_per_class": 10},
           "train": TINY_TRAIN, "finetune": TINY_FINETUNE},
    "balanced": {"data": {"img_max": 10, "val_per_class": 2, "test_per_class": 10}, "train": TINY_TRAIN},
}
#: replacement points of Fig. 2 (k classes of 10 / share r of every class)
FIG2 = {"small": {"k": [2, 5, 8], "r": [0.5, 0.9, 0.98]}, "tiny": {"k": [5], "r": [0.9]}}

#: Table 1 is also run with this many epochs (and the schedule stretched to match), so that a
#: finding such as "Mixup helps" is not decided by a short training budget alone
LONG_EPOCHS = {"small": 50, "tiny": 2}

# runs whose trained model (and data / generation) another run reuses: only the last-layer step differs
REUSE = {"synaug": "synaug_retrain", "synaug_long": "synaug_retrain_long"}

SD_NOTE = "Stable Diffusion 1.4 images of the CIFAR-10 classes (CIFAKE, ../shared/data/cifake/sd14.tar)"
POOL_NOTE = "held-out real CIFAR-10 training images (the images the long-tail draw left out)"

DESCRIPTIONS = {
    "ce": "CE on the long-tailed real data",
    "resample": "class-balanced re-sampling on the long-tailed real data",
    "reweight": "class-balanced re-weighting (effective number) on the long-tailed real data",
    "balanced_softmax": "balanced softmax on the long-tailed real data",
    "ldam_drw": "LDAM-DRW on the long-tailed real data",
    "weight_balancing": ("weight balancing (wd 5e-3, then 10 head-only epochs: relative MaxNorm, class-balanced "
                         "loss, lr 0.01 cosine, wd 0.1, as LTR-weight-balancing) on the long-tailed real data"),
    "mixup_lt": "Mixup on the long-tailed real data (no uniformization)",
    "cutmix_lt": "CutMix on the long-tailed real data (no uniformization)",
    "synaug_nomix": "uniformized with Stable Diffusion 1.4 images, no Mixup, no last-layer step (Table 1 b)",
    "synaug_retrain": "uniformized with Stable Diffusion 1.4 images + Mixup, last layer re-trained (Table 1 c/d)",
    "synaug": "SYNAuG: Stable Diffusion 1.4 images + Mixup + last-layer fine-tuning (Table 1 e)",
    "synaug_cutmix": "uniformized with Stable Diffusion 1.4 images + CutMix + last-layer fine-tuning",
    "web": "uniformized with the held-out real pool (web-crawled stand-in) + Mixup + fine-tuning",
    "real_balanced": "balanced real data only (Fig. 2 without replacement; the probe's feature model)",
}


def _lt(name: str, scale: str) -> dict:
    return merge(load_config(name), _TINY["lt"]) if scale == "tiny" else load_config(name)


def _bal(name: str, scale: str) -> dict:
    return merge(load_config(name), _TINY["balanced"]) if scale == "tiny" else load_config(name)


def lt_specs(scale: str) -> dict[str, dict]:
    """The long-tailed CIFAR-10 runs (Tables 1, 2, 5)."""
    check_scale(scale)
    t1, t2, t5 = _lt("table1-cpu.yaml", scale), _lt("table2-cpu.yaml", scale), _lt("table5-cpu.yaml", scale)
    epochs = t2["train"]["epochs"]
    algo = lambda name, **kw: merge(t2, {"train": {"algorithm": {"name": name, **kw}}})  # noqa: E731
    specs = {
        "ce": t2,
        "resample": algo("resample"),
        "reweight": algo("reweight"),
        "balanced_softmax": algo("balanced_softmax"),
        "ldam_drw": algo("ldam_drw", ldam={"drw_epoch": int(0.8 * epochs)}),
        "weight_balancing": merge(algo("weight_balancing"), {"train": {"optim": {"weight_decay": 5e-3}}}),
        "mixup_lt": merge(t2, {"train": {"mix": {"mixup": True}}}),
        "cutmix_lt": merge(t2, {"train": {"mix": {"mixup": False, "cutmix": True}}}),
        "synaug_nomix": {**merge(t1, {"train": {"mix": {"mixup": False}}}), "finetune": None},
        "synaug_retrain": merge(t1, {"finetune": {"mode": "retrain"}}),
        "synaug": t1,
        "synaug_cutmix": merge(t1, {"train": {"mix": {"mixup": False, "cutmix": True}}}),
        "web": t5,
    }
    for name in ("synaug_nomix", "synaug_retrain", "synaug"):
        specs[f"{name}_long"] = longer(specs[name], LONG_EPOCHS[scale])
    return _describe(specs)


def longer(spec: dict, epochs: int) -> dict:
    """``spec`` trained for ``epochs`` epochs, its multistep milestones at the same fractions."""
    t = spec["train"]
    old = t["epochs"]
    sched = dict(t.get("schedule") or {})
    if sched.get("milestones"):
        sched["milestones"] = [m if 0 < m < 1 else max(1, round(m * epochs / old)) for m in sched["milestones"]]
    return merge(spec, {"train": {"epochs": epochs, "schedule": sched}})  # described by _describe


def balanced_specs(scale: str) -> dict[str, dict]:
    """The balanced CIFAR-10 runs (Fig. 2 replacement test; Fig. 3's feature model)."""
    check_scale(scale)
    f2, f3 = _bal("fig2-cpu.yaml", scale), _bal("fig3-cpu.yaml", scale)
    specs = {"real_balanced": f3}
    for k in FIG2[scale]["k"]:
        specs[f"replace_class_k{k}"] = merge(f2, {"plan": {"mode": "replace-class", "k": k}})
        specs[f"replace_class_k{k}"]["description"] = f"replacement test: real images of k = {k} classes replaced"
    for r in FIG2[scale]["r"]:
        specs[f"replace_ratio_{r:g}"] = merge(f2, {"plan": {"mode": "replace-ratio", "ratio": r, "k": None}})
        specs[f"replace_ratio_{r:g}"]["description"] = f"replacement test: a share r = {r:g} of every class replaced"
    return _describe(specs)


def _describe(specs: dict[str, dict]) -> dict[str, dict]:
    for name, text in DESCRIPTIONS.items():
        for key in (name, f"{name}_long"):
            if key in specs:
                epochs = specs[key]["train"]["epochs"]
                specs[key]["description"] = text + (f" [{epochs} epochs]" if key.endswith("_long") else "")
    return specs


def setup(scale: str) -> list[str]:
    """The setup paragraph of docs/results.md for the CIFAR-10 experiments."""
    lt, bal = lt_specs(scale), balanced_specs(scale)
    ce, t = lt["ce"], lt["ce"]["train"]
    width = t["model"].get("width")
    return [
        f"- Long-tailed runs (Tables 1, 2, 5): CIFAR-10-LT from the shared real CIFAR-10 JPEGs, imbalance factor "
        f"{ce['data']['imbalance_factor']:g}, {ce['data']['img_max']} images in the head class, "
        f"{ce['data']['val_per_class']} validation images per class (from the held-out images), "
        f"{ce['data']['test_per_class'] or 1000} test images per class. Paper: CIFAR-100-LT, 200 epochs.",
        f"- Model and recipe: ResNet-32{f' (width {width})' if width else ''}, {t['epochs']} epochs, SGD lr "
        f"{t['optim']['lr']}, batch {t['batch_size']}, multistep {t['schedule']['milestones']}; best epoch chosen by "
        "validation mean-class accuracy. Every method gets the same number of epochs (as in the paper), so runs on "
        "the uniformized set take more optimizer steps than runs on the long-tailed set.",
        f"- Synthetic images: {SD_NOTE}, drawn without replacement per class by the pool backend "
        "(`generate: {backend: pool, pool: {dataset: shared-sd14}}`); the web-crawled baseline uses the "
        f"{POOL_NOTE}.",
        f"- Balanced runs (Figs. 2, 3): {bal['real_balanced']['data']['img_max']} real images per class.",
        f"- Last-layer step (fine-tune or re-train): {lt['synaug']['finetune'].get('epochs', 30)} epochs of SGD on the "
        "frozen features of a class-balanced subset of the REAL training images.",
    ]
