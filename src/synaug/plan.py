"""Step 1 of SYNAuG (Algorithm 1, line 1): how many synthetic images each cell needs.

A *cell* is a class (class-wise modes) or a (class, group) pair (fairness / spurious modes).
The plan is a JSON file (canonical) or CSV: one row per cell with its real count, the
synthetic count to generate and the attribute values prompts need. The generation step
consumes it; :func:`apply_plan` drops the real rows that replacement experiments remove.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from .errors import SynaugError
from .io import atomic_path, write_json_atomic
from .manifest import Manifest

MODES = ("class", "cell", "agnostic", "spurious", "replace-class", "replace-ratio")
Mode = Literal["class", "cell", "agnostic", "spurious", "replace-class", "replace-ratio"]


@dataclass
class Cell:
    """One row of a plan: ``synthetic`` images to make for (``label``, ``group``)."""

    label: int
    class_name: str
    real: int
    synthetic: int
    group: int = -1
    group_name: str = ""
    attributes: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.label}" if self.group < 0 else f"{self.label}/{self.group}"


@dataclass
class Plan:
    mode: str
    classes: list[str]
    cells: list[Cell]
    groups: list[str] | None = None
    seed: int = 0
    params: dict = field(default_factory=dict)
    drop_real: list[str] = field(default_factory=list)

    @property
    def total_synthetic(self) -> int:
        return int(sum(c.synthetic for c in self.cells))

    @property
    def total_real(self) -> int:
        return int(sum(c.real for c in self.cells))

    def to_dict(self) -> dict:
        return {"version": 1, "mode": self.mode, "classes": self.classes, "groups": self.groups,
                "seed": self.seed, "params": self.params,
                "cells": [{"cell": c.key, **asdict(c)} for c in self.cells],
                "total_real": self.total_real, "total_synthetic": self.total_synthetic,
                "drop_real": self.drop_real}

    def frame(self) -> pd.DataFrame:
        rows = []
        for c in self.cells:
            row = {"cell": c.key, "label": c.label, "class_name": c.class_name, "group": c.group,
                   "group_name": c.group_name, "real": c.real, "synthetic": c.synthetic,
                   "total": c.real + c.synthetic}
            row.update({f"attr_{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v)
                        for k, v in c.attributes.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix == ".json":
            write_json_atomic(path, self.to_dict())
        elif path.suffix == ".csv":
            if self.drop_real:
                raise SynaugError("a replacement plan drops real rows; write it as .json")
            with atomic_path(path) as tmp:
                self.frame().to_csv(tmp, index=False)
        else:
            raise SynaugError(f"plan file must end in .json or .csv: {path}")
        return path

    @classmethod
    def read(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise SynaugError(f"plan file not found: {path}")
        try:
            if path.suffix == ".json":
                d = json.loads(path.read_text())
                cells = [Cell(**{k: v for k, v in c.items() if k != "cell"}) for c in d["cells"]]
                plan = cls(d["mode"], list(d["classes"]), cells, d.get("groups"), int(d.get("seed", 0)),
                           d.get("params", {}), list(d.get("drop_real", [])))
            elif path.suffix == ".csv":
                df = pd.read_csv(path, keep_default_na=False)
                plan = cls._from_frame(df)
            else:
                raise SynaugError(f"plan file must end in .json or .csv: {path}")
        except SynaugError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise SynaugError(f"plan {path} is malformed: {type(e).__name__}: {e}") from None
        plan.check()
        return plan

    @classmethod
    def _from_frame(cls, df: pd.DataFrame) -> "Plan":
        for col in ("label", "class_name", "real", "synthetic"):
            if col not in df.columns:
                raise SynaugError(f"plan CSV is missing column {col!r}")
        n = int(df["label"].max()) + 1
        classes = [f"class_{i}" for i in range(n)]
        for lab, name in zip(df["label"], df["class_name"]):
            classes[int(lab)] = str(name)
        groups = None
        if "group" in df.columns and (df["group"].astype(int) >= 0).any():
            groups = [f"group_{i}" for i in range(int(df["group"].max()) + 1)]
            for g, name in zip(df["group"].astype(int), df.get("group_name", [""] * len(df))):
                if g >= 0 and name:
                    groups[g] = str(name)
        cells = []
        for _, r in df.iterrows():
            attrs = {}
            for k in df.columns:
                if k.startswith("attr_") and r[k] != "":
                    v = r[k]
                    if isinstance(v, str) and v[:1] in "[{":
                        v = json.loads(v)
                    attrs[k[5:]] = v
            cells.append(Cell(int(r["label"]), str(r["class_name"]), _int(r["real"], "real"),
                              _int(r["synthetic"], "synthetic"), int(r.get("group", -1)),
                              str(r.get("group_name", "")), attrs))
        return cls("csv", classes, cells, groups)

    def check(self) -> None:
        """Reject what the generator could not honour: negative or non-integer counts, unknown classes."""
        seen = set()
        for c in self.cells:
            for name in ("real", "synthetic"):
                v = getattr(c, name)
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                    raise SynaugError(f"plan cell {c.key}: {name} count must be an integer, got {v!r}")
                if v < 0:
                    raise SynaugError(f"plan cell {c.key}: negative {name} count {v}")
            if not 0 <= c.label < len(self.classes) or self.classes[c.label] != c.class_name:
                raise SynaugError(f"plan cell {c.key}: unknown class {c.class_name!r}")
            if c.group >= 0 and (self.groups is None or c.group >= len(self.groups)):
                raise SynaugError(f"plan cell {c.key}: unknown group {c.group}")
            if c.key in seen:
                raise SynaugError(f"plan has cell {c.key} twice")
            seen.add(c.key)


def _int(v, name: str) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise SynaugError(f"plan count {name} must be an integer, got {v!r}") from None
    if f != int(f):
        raise SynaugError(f"plan count {name} must be an integer, got {v!r}")
    return int(f)


# ---------------------------------------------------------------------------- planning
def make_plan(manifest: Manifest, mode: Mode = "class", target: int | None = None,
              classes: Sequence[str] | None = None, k: int | None = None, ratio: float | None = None,
              equalize_groups: bool = False, seed: int = 0, split: str = "train") -> Plan:
    """Compute the uniformization plan for the ``split`` rows of ``manifest``.

    Parameters
    ----------
    mode : {"class", "cell", "agnostic", "spurious", "replace-class", "replace-ratio"}
        ``class``: every class up to the largest class, or to ``target`` (classes above get 0).
        ``cell``: per (class, group), the group being the sensitive attribute (UTKFace race):
        within every group all classes reach that group's largest class (SYNAuG for
        fairness); ``equalize_groups`` lifts every cell to the global largest cell.
        ``agnostic``: balance classes ignoring groups (SYNAuG*). ``spurious``: the group
        being the background (Waterbirds place), fill every (class, group) cell up to the
        largest cell, so the background no longer predicts the class. Every group is an
        attribute shared by all classes, so every (class, group) cell is planned, also an
        empty one.
        ``replace-class``: replace all real images of ``k`` classes (or the named
        ``classes``) with as many synthetic ones. ``replace-ratio``: replace a fraction
        ``ratio`` of every class.
    target : int, optional
        Per-class (per-cell) target count instead of the maximum.
    seed : int
        Seeds which classes / rows the replacement modes pick.
    """
    if mode not in MODES:
        raise SynaugError(f"unknown plan mode {mode!r} (choose from {', '.join(MODES)})")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0):
        raise SynaugError(f"target must be a non-negative integer, got {target!r}")
    train = manifest.split(split)
    if len(train) == 0:
        raise SynaugError(f"manifest has no {split} rows to plan for")
    params = {"target": target, "k": k, "ratio": ratio, "equalize_groups": equalize_groups,
              "split": split, "classes": list(classes) if classes else None}
    cell = _CellMaker(manifest, train)
    counts = train.class_counts(split=None)
    if mode in ("class", "agnostic"):  # an empty class is legitimate: it is filled with synthetic images
        goal = int(counts.max()) if target is None else int(target)
        cells = [cell(c, n, max(goal - n, 0)) for c, n in enumerate(counts)]
        return Plan(mode, manifest.classes, cells, manifest.groups, seed, params)
    if mode in ("cell", "spurious"):
        if manifest.groups is None:
            raise SynaugError(f"plan mode {mode!r} needs a manifest with groups")
        lift_all = mode == "spurious" or equalize_groups
        return Plan(mode, manifest.classes, _group_cells(train, cell, target, lift_all), manifest.groups, seed, params)
    rng = np.random.RandomState(seed)
    if mode == "replace-class":
        chosen = _replaced_classes(manifest, classes, k, rng)
        params["replaced_classes"] = [manifest.classes[c] for c in chosen]
        drop = train.df[train.df["label"].isin(chosen)]["path"].tolist()
        cells = [cell(c, 0 if c in chosen else n, n if c in chosen else 0) for c, n in enumerate(counts)]
    else:
        cells, drop = _replace_ratio(train, counts, cell, ratio, rng)
    return Plan(mode, manifest.classes, cells, manifest.groups, seed, params, sorted(drop))


class _CellMaker:
    """Builds a plan :class:`Cell` with its class / group names and the cell's prompt attributes."""

    def __init__(self, manifest: Manifest, train: Manifest):
        self.classes, self.groups = manifest.classes, train.groups
        self.attrs = _cell_attributes(train)

    def __call__(self, label: int, real: int, syn: int, group: int = -1) -> Cell:
        gname = self.groups[group] if group >= 0 and self.groups else ""
        a = {"class": self.classes[label]}
        if gname:
            a["group"] = gname
        a.update(self.attrs.get((label, group), {}))
        return Cell(int(label), self.classes[label], int(real), int(syn), int(group), gname, a)


def _group_cells(train: Manifest, cell: _CellMaker, target: int | None, lift_all: bool) -> list[Cell]:
    """``cell`` / ``spurious`` modes: every (class, group) cell up to its group's largest cell, or
    (``lift_all``) to the largest cell overall; ``target`` replaces the maximum."""
    cc = train.cell_counts(split=None)  # (C, G)
    if lift_all:
        goal = np.full_like(cc, cc.max() if target is None else target)
    else:
        per_group = cc.max(axis=0, keepdims=True) if target is None else np.full((1, cc.shape[1]), target)
        goal = np.broadcast_to(per_group, cc.shape)
    return [cell(c, cc[c, g], max(int(goal[c, g]) - int(cc[c, g]), 0), g)
            for c in range(cc.shape[0]) for g in range(cc.shape[1])]


def _replaced_classes(manifest: Manifest, classes, k, rng) -> list[int]:
    """``replace-class``: the named ``classes``, else ``k`` classes drawn with ``rng``."""
    if classes:
        unknown = [c for c in classes if c not in manifest.classes]
        if unknown:
            raise SynaugError(f"unknown class name {unknown[0]!r} in plan classes")
        return sorted(manifest.classes.index(c) for c in classes)
    if k is None or not 0 <= k <= manifest.num_classes:
        raise SynaugError(f"replace-class needs 0 <= k <= {manifest.num_classes}, got {k!r}")
    return sorted(rng.permutation(manifest.num_classes)[:k].tolist())


def _replace_ratio(train: Manifest, counts, cell: _CellMaker, ratio, rng) -> tuple[list[Cell], list[str]]:
    """``replace-ratio``: a fraction ``ratio`` of every class, drawn with ``rng``, becomes synthetic."""
    if ratio is None or not 0.0 <= float(ratio) <= 1.0:
        raise SynaugError(f"replace-ratio needs 0 <= ratio <= 1, got {ratio!r}")
    drop, cells = [], []
    for c, n in enumerate(counts):
        m = int(np.floor(float(ratio) * n + 1e-9))
        paths = train.df[train.df["label"] == c]["path"].to_numpy()
        drop.extend(paths[rng.permutation(n)[:m]].tolist())
        cells.append(cell(c, n - m, m))
    return cells, drop


def _cell_attributes(train: Manifest) -> dict:
    """Extra prompt attributes from optional manifest columns (UTKFace's ``age``)."""
    out: dict = {}
    if "age" in train.df.columns:
        for (lab, g), ages in train.df.groupby(["label", "group"])["age"]:
            out[(int(lab), int(g))] = {"age": sorted(int(a) for a in ages)}
        for lab, ages in train.df.groupby("label")["age"]:
            out.setdefault((int(lab), -1), {"age": sorted(int(a) for a in ages)})
    return out


def apply_plan(manifest: Manifest, plan: Plan) -> Manifest:
    """The real part of the uniformized set: ``manifest`` minus the rows the plan drops."""
    if plan.classes != manifest.classes:
        raise SynaugError("plan and manifest have different class names")
    if not plan.drop_real:
        return manifest
    drop = set(plan.drop_real)
    mask = ~((manifest.df["source"] == "real") & (manifest.df["split"] == plan.params.get("split", "train"))
             & manifest.df["path"].isin(drop))
    return manifest.select(mask.to_numpy())


def plan_totals(plan: Plan) -> np.ndarray:
    """Real + synthetic per cell, in cell order."""
    return np.array([c.real + c.synthetic for c in plan.cells], dtype=int)


# ---------------------------------------------------------------------------- CLI
def register(sub) -> None:
    p = sub.add_parser("plan", help="compute how many synthetic images each class / cell needs",
                       description="Uniformization plan (SYNAuG step 1). Writes JSON or CSV.")
    from .data import add_source_args

    add_source_args(p)
    p.add_argument("--mode", choices=MODES, default="class")
    p.add_argument("--target", type=int, default=None, help="per-class (cell) target count")
    p.add_argument("--k", type=int, default=None, help="replace-class: number of classes")
    p.add_argument("--classes", nargs="*", default=None, help="replace-class: class names")
    from .config import finite_float

    p.add_argument("--ratio", type=finite_float, default=None, help="replace-ratio: fraction in [0, 1]")
    p.add_argument("--equalize-groups", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", "-o", required=True, help="plan file (.json or .csv)")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from rich.table import Table

    from .data import manifest_from_args
    from .term import console

    m = manifest_from_args(args)
    plan = make_plan(m, args.mode, target=args.target, classes=args.classes, k=args.k,
                     ratio=args.ratio, equalize_groups=args.equalize_groups, seed=args.seed)
    plan.write(args.out)
    t = Table(title=f"plan ({plan.mode}): {plan.total_real} real + {plan.total_synthetic} synthetic")
    for col in ("cell", "class", "group", "real", "synthetic", "total"):
        t.add_column(col, justify="right" if col in ("real", "synthetic", "total") else "left")
    for c in plan.cells:
        t.add_row(c.key, c.class_name, c.group_name, str(c.real), str(c.synthetic), str(c.real + c.synthetic))
    console().print(t)
    print(f"wrote {args.out}")
    return 0
