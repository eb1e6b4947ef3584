"""Waterbirds (Sagawa et al., 2020): ``metadata.csv`` with img_filename, y, split, place.

``y`` is the class (0 landbird, 1 waterbird), ``place`` the background (0 land, 1 water),
``split`` 0/1/2 = train/val/test. The group is the background, as everywhere in synaug
(``group`` = sensitive attribute / background): groups ``["land", "water"]``. The four
Waterbirds "groups" of the literature are the class x group cells (``landbird/land`` ...):
worst-group accuracy, cell-balanced fine-tuning and Group-DRO (``by: cell``) use those.
``place`` also stays as an extra integer column.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import SynaugError
from ..manifest import Manifest
from .registry import register_dataset

WB_CLASSES = ["landbird", "waterbird"]
WB_PLACES = ["land", "water"]
WB_GROUPS = WB_PLACES  # group = background
_SPLITS = {0: "train", 1: "val", 2: "test"}


@register_dataset("waterbirds")
def waterbirds(root: str | Path | None, metadata: str | Path | None = None) -> Manifest:
    """Manifest of the Waterbirds folder ``root`` (``metadata`` defaults to ``root/metadata.csv``)."""
    if root is None:
        raise SynaugError("waterbirds needs --data-root (the folder with metadata.csv)")
    root = Path(root)
    meta = Path(metadata) if metadata else root / "metadata.csv"
    if not meta.is_file():
        raise SynaugError(f"Waterbirds metadata not found: {meta}")
    try:
        df = pd.read_csv(meta, keep_default_na=False)
    except Exception as e:
        raise SynaugError(f"cannot read {meta}: {type(e).__name__}: {e}") from None
    for col in ("img_filename", "y", "split", "place"):
        if col not in df.columns:
            raise SynaugError(f"{meta.name} is missing column {col!r}")
    ints = {}
    for col, allowed in (("y", {0, 1}), ("place", {0, 1}), ("split", set(_SPLITS))):
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() | ~vals.isin(allowed)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            value = df[col].iloc[i]
            value = value.item() if hasattr(value, "item") else value  # np.int64(3) -> 3
            raise SynaugError(f"{meta.name} row {i}: {col} = {value!r}, expected one of {sorted(allowed)}")
        ints[col] = vals.astype("int64")
    out = pd.DataFrame({
        "path": df["img_filename"].astype(str),
        "label": ints["y"],
        "group": ints["place"],
        "split": ints["split"].map(_SPLITS),
        "place": ints["place"],
    })
    return Manifest(out, WB_CLASSES, {"real": root}, WB_GROUPS)
