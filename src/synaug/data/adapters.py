"""Adapters from common on-disk layouts to manifests."""
from __future__ import annotations

from pathlib import Path

from ..errors import SynaugError
from ..manifest import Manifest
from .registry import register_dataset

IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


@register_dataset("imagefolder")
def imagefolder(root: str | Path, split: str = "train") -> Manifest:
    """``root/<class>/<image>`` (one split) or ``root/{train,val,test}/<class>/<image>``.

    Class order is sorted folder names, as in ``torchvision.datasets.ImageFolder``.
    """
    if root is None:
        raise SynaugError("imagefolder needs --data-root")
    root = Path(root)
    if not root.is_dir():
        raise SynaugError(f"image folder not found: {root}")
    split_dirs = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    layout = [(s, root / s) for s in split_dirs] if split_dirs else [(split, root)]
    classes = sorted({d.name for _, base in layout for d in base.iterdir() if d.is_dir()})
    if not classes:
        raise SynaugError(f"no class folders under {root}")
    rows = []
    for s, base in layout:
        for label, cls in enumerate(classes):
            d = base / cls
            if not d.is_dir():
                continue
            for f in sorted(d.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMG_EXT:
                    rows.append({"path": f.relative_to(root).as_posix(), "label": label, "split": s})
    return Manifest.from_records(rows, classes, {"real": root})


@register_dataset("table")
def table(root: str | Path, file: str | None = None) -> Manifest:
    """Any CSV/Parquet with the manifest columns; ``root`` is the table file itself."""
    return Manifest.read(file or root)
