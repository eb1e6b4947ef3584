"""``synaug train`` / ``synaug finetune`` / ``synaug evaluate``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import SynaugError

_SET_HELP = "override a config key, e.g. --set epochs=10 --set optim.lr=0.05 (repeatable)"


def _overrides(items) -> dict:
    from ..config import parse_override

    return dict(parse_override(s) for s in (items or []))


def _read_manifest(path: str, root: str | None = None):
    from ..manifest import Manifest

    return Manifest.read(path, root=root)


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "train", formatter_class=fmt,
        help="train encoder + head (SYNAuG step 2: Mixup on the uniformized set)",
        description="Train a classifier on the split == 'train' rows of --train-manifest (real and\n"
                    "synthetic). Model selection uses --val-manifest, else the 'val' rows of the\n"
                    "training manifest, else the last epoch. Test rows are refused.\n"
                    "Resumes from OUT/last.json unless --no-resume.\n\n"
                    "Outputs in OUT: model.safetensors (selected), best_NNNN.safetensors, last.json,\n"
                    "epoch_NNNN[.state].safetensors, history.json, summary.json, config.yaml.\n"
                    "Config keys: seed epochs batch_size model.* optim.* schedule.* mix.* augment.*\n"
                    "algorithm.* (ce resample reweight balanced_softmax ldam_drw group_dro\n"
                    "weight_balancing) data.* device channels_last compile cuda_graph amp select_metric.")
    p.add_argument("--config", "-c", help="train config YAML (default: the CIFAR-LT recipe)")
    p.add_argument("--train-manifest", required=True, help="manifest with the training rows")
    p.add_argument("--val-manifest", help="manifest with the validation rows (model selection)")
    p.add_argument("--data-root", help="root of real rows for plain-table manifests")
    p.add_argument("--out", "-o", required=True, help="run folder")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=_SET_HELP)
    p.add_argument("--no-resume", action="store_true", help="ignore OUT/last.json and start over")
    p.set_defaults(func=_train)

    f = sub.add_parser(
        "finetune", formatter_class=fmt,
        help="fine-tune / re-train / DFR the last layer on balanced real data (SYNAuG step 3)",
        description="Freeze the encoder of --checkpoint and adjust only the head on a subset of the\n"
                    "REAL training rows (split == 'train', source == 'real') of --manifest drawn\n"
                    "uniformly per class (balance_by: class) or class x group (balance_by: cell).\n"
                    "mode: finetune (start from the trained head), retrain (re-initialised head),\n"
                    "dfr (logistic regression, C chosen on the val split).\n\n"
                    "Outputs in OUT: model.safetensors, finetune.json, finetune_subset.parquet, config.yaml.")
    f.add_argument("--config", "-c", help="finetune config YAML")
    f.add_argument("--checkpoint", required=True, help="trained run folder or model .safetensors")
    f.add_argument("--manifest", required=True, help="manifest holding the real training rows")
    f.add_argument("--val-manifest", help="validation rows (default: val rows of --manifest)")
    f.add_argument("--data-root", help="root of real rows for plain-table manifests")
    f.add_argument("--out", "-o", required=True, help="output folder")
    f.add_argument("--set", action="append", metavar="KEY=VALUE", help=_SET_HELP)
    f.set_defaults(func=_finetune)

    e = sub.add_parser(
        "evaluate", formatter_class=fmt,
        help="evaluate a checkpoint: top-1, many/medium/few, groups, fairness",
        description="Evaluate --checkpoint on the --split rows of --manifest (the test split is\n"
                    "meant to be used here, once). Many/medium/few buckets use the REAL training\n"
                    "counts stored in the checkpoint (before uniformization) unless --counts all\n"
                    "or --counts-manifest is given.\n\n"
                    "Outputs in OUT: metrics.json, per_class.csv, predictions.csv, confusion.png.")
    e.add_argument("--checkpoint", required=True, help="run folder or model .safetensors")
    e.add_argument("--manifest", required=True)
    e.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    e.add_argument("--data-root", help="root of real rows for plain-table manifests")
    e.add_argument("--counts", choices=["real", "all"], default="real",
                   help="training counts for the shot buckets: real rows only (default) or real+synthetic")
    e.add_argument("--counts-manifest", help="take real train counts from this manifest instead")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=512)
    e.add_argument("--cache-dir", help="decoded-image cache folder")
    e.add_argument("--out", "-o", required=True)
    e.set_defaults(func=_evaluate)


def _train(args) -> int:
    from ..config import load
    from .config import TrainConfig
    from .loop import train_model

    cfg = load(TrainConfig, args.config, _overrides(args.set))
    train_m = _read_manifest(args.train_manifest, args.data_root)
    val_m = _read_manifest(args.val_manifest, args.data_root) if args.val_manifest else None
    try:
        res = train_model(train_m, val_m, cfg, args.out, resume=not args.no_resume)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    from .distributed import world

    if world()[0] == 0:
        msg = {"checkpoint": str(res.checkpoint), "best_epoch": res.best_epoch,
               "epochs": len(res.history), "last": res.history[-1] if res.history else None}
        print(json.dumps(msg, indent=2, default=str))
    return 0


def _finetune(args) -> int:
    from ..config import load
    from .checkpoint import load_checkpoint
    from .config import FinetuneConfig
    from .finetune import finetune_last_layer

    cfg = load(FinetuneConfig, args.config, _overrides(args.set))
    model = load_checkpoint(args.checkpoint)
    m = _read_manifest(args.manifest, args.data_root)
    val = _read_manifest(args.val_manifest, args.data_root) if args.val_manifest else None
    model = finetune_last_layer(model, m, cfg, args.out, val)
    rec = model.meta["finetune"]
    print(json.dumps({k: rec[k] for k in rec if k != "history"}, indent=2, default=str))
    print(f"wrote {Path(args.out) / 'model.safetensors'}")
    return 0


def _evaluate(args) -> int:
    import numpy as np

    from .checkpoint import load_checkpoint
    from .config import DataConfig
    from .evaluate import evaluate, real_train_counts

    model = load_checkpoint(args.checkpoint)
    meta = getattr(model, "meta", {})
    m = _read_manifest(args.manifest, args.data_root)
    part = m if args.split == "all" else m.split(args.split)
    if len(part) == 0:
        raise SynaugError(f"manifest {args.manifest} has no {args.split} rows")
    if part.classes != meta.get("classes", part.classes):
        raise SynaugError("the manifest's classes differ from the checkpoint's")
    if args.counts_manifest:
        counts, cells = real_train_counts(_read_manifest(args.counts_manifest, args.data_root))
        source = f"real train rows of {args.counts_manifest}"
    elif args.counts == "real" and "real_train_class_counts" in meta:
        counts, cells = meta["real_train_class_counts"], meta.get("real_train_cell_counts")
        source = "real train rows of the training manifest (before uniformization)"
    elif "train_class_counts" in meta:
        counts, cells = meta["train_class_counts"], meta.get("train_cell_counts")
        source = "all train rows trained on (real + synthetic)"
    else:
        raise SynaugError("checkpoint has no training counts; pass --counts-manifest")
    data = DataConfig(image_size=meta.get("image_size"), eval_batch_size=args.batch_size,
                      cache_dir=args.cache_dir)
    res = evaluate(model, part, np.asarray(counts), args.out,
                   np.asarray(cells) if cells is not None and part.groups is not None else None,
                   counts_source=source, data=data, device=args.device)
    short = {k: res[k] for k in ("num_samples", "top1", "mean_class_accuracy") if k in res}
    for k in ("shot", "group_accuracy", "fairness"):
        if k in res:
            short[k] = {a: b for a, b in res[k].items() if a != "per_group"}
    print(json.dumps(short, indent=2, default=str))
    return 0
