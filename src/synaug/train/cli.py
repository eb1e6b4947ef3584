"""``synaug train`` / ``synaug finetune`` / ``synaug evaluate``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import SynaugError
from .config import TRAIN_KEYS_HELP

_SET_HELP = "override a config key, e.g. {} (repeatable; values are YAML, paths as typed)"
TRAIN_SET_EXAMPLES = "--set epochs=10 --set optim.lr=0.05"
FINETUNE_SET_EXAMPLES = "--set epochs=10 --set lr=0.05"
_FMT = argparse.RawDescriptionHelpFormatter  # the sub-commands' help keeps its line breaks


def _overrides(items) -> list[str]:
    return list(items or [])


def _read_manifest(path: str, root: str | None = None):
    from ..data.read import read_manifest

    return read_manifest(path, root=None if Path(path).is_dir() else root, root_for_plain_only=True)


def _read_manifests(paths: list[str], root: str | None = None):
    """One manifest from one or more files / image folders (joined as ``synaug manifest merge``)."""
    from ..manifest import Manifest

    if root and not Path(root).exists():
        raise SynaugError(f"--data-root not found: {root}")
    parts = [_read_manifest(p, root) for p in paths]
    return parts[0] if len(parts) == 1 else Manifest.merge(parts)


def _note(msg: str) -> None:
    import sys

    print(f"synaug: {msg}", file=sys.stderr)


def _without_test_rows(m, what: str, use: str):
    """The train/val rows of ``m``; says how many test rows are left for ``synaug evaluate``."""
    n_test = int((m.df["split"] == "test").sum())
    if n_test:
        _note(f"{what}: {use}; its {n_test} test rows are not read (they are for `synaug evaluate`)")
    return m.split("train", "val") if n_test else m


def register(sub) -> None:
    _register_train(sub)
    _register_finetune(sub)
    _register_evaluate(sub)


def _register_train(sub) -> None:
    p = sub.add_parser(
        "train", formatter_class=_FMT,
        help="train encoder + head (SYNAuG step 2: Mixup on the uniformized set)",
        description="Train a classifier on the split == 'train' rows of --train-manifest (real and\n"
                    "synthetic). Model selection uses --val-manifest, else the 'val' rows of the\n"
                    "training manifest, else the last epoch. Test rows in the file are never read\n"
                    "(they are for `synaug evaluate`). Repeat --train-manifest to train on several\n"
                    "files joined (e.g. your real rows + OUT/synthetic.parquet of `synaug generate`).\n"
                    "Resumes from OUT/last.json unless --no-resume; a finished run given more epochs\n"
                    "continues where that is sound (same learning rates for the epochs done).\n\n"
                    "Outputs in OUT: model.safetensors (selected), best_NNNN.safetensors, last.json,\n"
                    "epoch_NNNN[.state].safetensors, history.json, summary.json, config.yaml.\n"
                    "Config keys: seed epochs batch_size model.* optim.* schedule.* mix.* augment.*\n"
                    "algorithm.* (ce resample reweight balanced_softmax ldam_drw group_dro\n"
                    "weight_balancing) data.* device channels_last compile cuda_graph amp select_metric\n"
                    "synthetic.* (off by default: loss_weight, label_smoothing, batch_share,\n"
                    "batch_share_end, separate_bn, color_match; see docs/synthetic.md).\n\n"
                    + TRAIN_KEYS_HELP)
    p.add_argument("--config", "-c", help="train config YAML (default: the CIFAR-LT recipe)")
    p.add_argument("--train-manifest", required=True, action="append",
                   help="manifest (or image folder) with the training rows; repeat to join several")
    p.add_argument("--val-manifest", help="manifest with the validation rows (model selection)")
    p.add_argument("--data-root", help="root of real rows for plain-table manifests")
    p.add_argument("--out", "-o", required=True, help="run folder")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=_SET_HELP.format(TRAIN_SET_EXAMPLES))
    p.add_argument("--no-resume", action="store_true", help="ignore OUT/last.json and start over")
    p.set_defaults(func=_train)


def _register_finetune(sub) -> None:
    f = sub.add_parser(
        "finetune", formatter_class=_FMT,
        help="fine-tune / re-train / DFR the last layer on balanced real data (SYNAuG step 3)",
        description="Freeze the encoder of --checkpoint and adjust only the head on a subset of the\n"
                    "REAL training rows (split == 'train', source == 'real') of --manifest drawn\n"
                    "uniformly per class (balance_by: class) or class x group (balance_by: cell;\n"
                    "balance_by: auto, the default, is cell for mode dfr on data with groups, else class).\n"
                    "Test rows in the file are never read (they are for `synaug evaluate`).\n"
                    "mode: finetune (start from the trained head), retrain (re-initialised head),\n"
                    "dfr (DFR^Tr_Val: L1 logistic regression fit on group-balanced draws of the VAL\n"
                    "rows, C tuned on half of val, scaler on the real training features).\n"
                    "sampling: subset (default: one balanced subset, per_cell per class) or\n"
                    "class_balanced (every real training row, each epoch samples_per_epoch draws with\n"
                    "probability 1 / class count: cRT-style).\n"
                    "train_blocks N (default 0 = head only): also fine-tune the last N encoder blocks;\n"
                    "blocks_lr (default lr). See docs/synthetic.md.\n"
                    "start (synaug run only): selected (default: the epoch the validation split chose) or\n"
                    "last (the last training epoch); here, pass --checkpoint RUN/train/last.json for that.\n\n"
                    "Outputs in OUT: model.safetensors, finetune.json, finetune_subset.parquet, config.yaml.\n"
                    "Config keys: mode seed balance_by per_cell epochs (30) batch_size lr (0.01) momentum\n"
                    "weight_decay schedule (cosine | constant) augment_views dfr_* sampling samples_per_epoch\n"
                    "train_blocks blocks_lr "
                    "augment.* data.* device.")
    f.add_argument("--config", "-c", help="finetune config YAML")
    f.add_argument("--checkpoint", required=True, help="trained run folder or model .safetensors")
    f.add_argument("--manifest", required=True, action="append",
                   help="manifest (or image folder) holding the real training rows; repeat to join several")
    f.add_argument("--val-manifest", help="validation rows (default: val rows of --manifest)")
    f.add_argument("--data-root", help="root of real rows for plain-table manifests")
    f.add_argument("--out", "-o", required=True, help="output folder")
    f.add_argument("--set", action="append", metavar="KEY=VALUE", help=_SET_HELP.format(FINETUNE_SET_EXAMPLES))
    f.set_defaults(func=_finetune)


def _register_evaluate(sub) -> None:
    e = sub.add_parser(
        "evaluate", formatter_class=_FMT,
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

    from ..checks import check_model, train_warnings
    from ..io import check_writable

    cfg = load(TrainConfig, args.config, _overrides(args.set))
    check_model(cfg)
    for w in train_warnings(cfg, prefix=""):
        _note(f"warning: {w}")
    train_m = _read_manifests(args.train_manifest, args.data_root)
    names = " + ".join(args.train_manifest)
    n = {s: int((train_m.df["split"] == s).sum()) for s in ("train", "val")}
    train_m = _without_test_rows(train_m, names, f"training on its {n['train']} train rows"
                                 + (f", selecting on its {n['val']} val rows" if n["val"] and not args.val_manifest else ""))
    val_m = _read_manifest(args.val_manifest, args.data_root) if args.val_manifest else None
    if val_m is not None:
        val_m = _without_test_rows(val_m, args.val_manifest, "selecting the model on its train/val rows")
    check_writable(args.out)
    if not args.no_resume:
        _say_resume(cfg, Path(args.out), train_m)
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


def _say_resume(cfg, out: Path, train_m) -> None:
    """Tell what a rerun into an existing run folder does (continue, extend or refuse)."""
    from .checkpoint import read_last
    from .loop import manifest_fingerprint, resume_decision

    last = read_last(out) if out.is_dir() else None
    if last is None:
        return
    action, reason = resume_decision(last, cfg, manifest_fingerprint(train_m.split("train")))
    done = int(last["epoch"]) + 1
    if action == "extend":
        _note(f"extending the run in {out}: {reason}; continuing at epoch {done + 1} of {cfg.epochs}")
    elif action == "resume" and done < cfg.epochs:
        _note(f"resuming the run in {out} after epoch {done}")


def _finetune(args) -> int:
    from ..config import load
    from .checkpoint import load_checkpoint
    from .config import FinetuneConfig
    from .finetune import finetune_last_layer

    from ..io import check_writable

    cfg = load(FinetuneConfig, args.config, _overrides(args.set))
    model = load_checkpoint(args.checkpoint)
    m = _read_manifests(args.manifest, args.data_root)
    m = _without_test_rows(m, " + ".join(args.manifest), "fine-tuning on its real train rows")
    val = _read_manifest(args.val_manifest, args.data_root) if args.val_manifest else None
    if val is not None:
        val = _without_test_rows(val, args.val_manifest, "using its train/val rows")
    check_writable(args.out)
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

    from ..io import check_writable

    model = load_checkpoint(args.checkpoint)
    meta = getattr(model, "meta", {})
    m = _read_manifest(args.manifest, args.data_root)
    check_writable(args.out)
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
    data = DataConfig(image_size=meta.get("image_size"), eval_resize=meta.get("eval_resize"),
                      eval_batch_size=args.batch_size, cache_dir=args.cache_dir)
    res = evaluate(model, part, np.asarray(counts), args.out,
                   np.asarray(cells) if cells is not None and part.groups is not None else None,
                   counts_source=source, data=data, device=args.device)
    short = {k: res[k] for k in ("num_samples", "top1", "mean_class_accuracy") if k in res}
    for k in ("shot", "group_accuracy", "fairness"):
        if k in res:
            short[k] = {a: b for a, b in res[k].items() if a != "per_group"}
    print(json.dumps(short, indent=2, default=str))
    return 0
