"""Datasets as manifests: adapters, long-tailed builders and the CLI source options."""
from __future__ import annotations

from pathlib import Path

from ..errors import SynaugError
from ..manifest import Manifest
from . import adapters, cifar, imagenet_lt, shared, spurious, utkface, waterbirds  # noqa: F401  (register the adapters)
from .longtail import long_tail_counts, make_long_tail
from .registry import list_datasets, load_dataset, register_dataset

__all__ = ["long_tail_counts", "make_long_tail", "load_dataset", "list_datasets", "register_dataset",
           "add_source_args", "manifest_from_args"]


def add_source_args(p) -> None:
    """``--manifest FILE`` or ``--dataset NAME [--data-root DIR]``, optionally long-tailed."""
    g = p.add_argument_group("data source")
    g.add_argument("--manifest", help="manifest file (.parquet/.csv)")
    g.add_argument("--dataset", help=f"dataset adapter name (one of: {', '.join(list_datasets())})")
    g.add_argument("--data-root", help="folder the dataset lives in (default for shared-cifar10: ../shared/data)")
    from ..config import finite_float

    g.add_argument("--imbalance-factor", type=finite_float, default=None,
                   help="long-tail the train split by this IF (LDAM-DRW convention)")
    g.add_argument("--lt-seed", type=int, default=0, help="seed of the long-tail draw")
    g.add_argument("--dataset-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extra adapter option, e.g. test_per_cell=50 (utkface) or names=FILE (imagenet-lt)")


def manifest_from_args(args) -> Manifest:
    if bool(args.manifest) == bool(args.dataset):
        raise SynaugError("give exactly one of --manifest or --dataset")
    if args.manifest:
        m = Manifest.read(args.manifest, root=args.data_root)
    else:
        from ..config import parse_override

        opts = dict(parse_override(o) for o in (getattr(args, "dataset_opt", None) or []))
        m = load_dataset(args.dataset, args.data_root, **opts)
    if args.data_root and not Path(args.data_root).exists():  # an adapter with a cached copy may not look
        raise SynaugError(f"--data-root not found: {args.data_root}")
    if args.imbalance_factor is not None:
        m, _ = make_long_tail(m, args.imbalance_factor, seed=args.lt_seed)
    return m

