"""The one manifest type that flows through plan -> generate -> train -> evaluate.

One row per image. Columns (see ``COLUMNS``):

========== ======= ==========================================================
path       str     relative to the root of the row's ``source``; never ``..``
label      int     0 .. C-1
class_name str     ``classes[label]``
group      int     sensitive attribute / background, -1 when there is none
group_name str     ``groups[group]`` or ""
split      str     train / val / test
source     str     real / synthetic
prompt     str     synthetic rows: the text prompt ("" for real)
seed       int     synthetic rows: per-image seed (-1 for real)
generator  str     synthetic rows: which backend made it ("" for real)
========== ======= ==========================================================

Optional columns (kept when present, filled for rows that lack them): ``source_file`` (str, the
pool image a synthetic row copies), ``select_score`` (float, NaN when none) and ``selector`` (str)
of rows kept by a selection from more candidates (:mod:`synaug.generate.select`).

Real rows are relative to ``roots["real"]`` and synthetic rows to ``roots["synthetic"]``
(the data folder and the generation output folder usually live apart).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import SynaugError
from .io import atomic_path, write_json_atomic

COLUMNS = ["path", "label", "class_name", "group", "group_name", "split", "source",
           "prompt", "seed", "generator"]
REQUIRED = ["path", "label", "split"]
SPLITS = ("train", "val", "test")
SOURCES = ("real", "synthetic")
_DEFAULTS = {"group": -1, "group_name": "", "source": "real", "prompt": "", "seed": -1,
             "generator": ""}
_META_KEY = b"synaug"
#: optional columns and the value of rows without one (e.g. real rows joined to selected ones)
OPTIONAL = {"source_file": "", "select_score": float("nan"), "selector": ""}


#: what :func:`check_relative_path` would change or refuse: empty, absolute, a backslash, an
#: empty / "." / ".." component, a trailing slash
_UNCLEAN_PATH = r"^$|^/|\\|//|(?:^|/)\.\.?(?:/|$)|/$"


def _needs_path_check(paths: pd.Series) -> bool:
    """Whether any path needs :func:`check_relative_path` (one vectorised test: a manifest of
    100k clean paths skips the per-row normalisation)."""
    return bool(paths.str.contains(_UNCLEAN_PATH, regex=True).any())


def check_relative_path(p: str) -> str:
    """Return ``p`` as a normalised POSIX relative path or raise if it escapes its root."""
    if not isinstance(p, str) or not p:
        raise SynaugError(f"empty or non-string path {p!r}")
    pp = PurePosixPath(p.replace("\\", "/"))
    if pp.is_absolute() or ".." in pp.parts:
        raise SynaugError(f"path {p!r} escapes the data root (absolute or contains '..')")
    return str(pp)


@dataclass
class Manifest:
    """A validated table of images with class/group names and the roots paths are relative to.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per image, columns as in ``COLUMNS`` (missing optional columns are filled).
    classes : list of str
        Class names; ``classes[label]`` names a row's class.
    roots : dict
        ``{"real": folder, "synthetic": folder}``; a source without rows may be absent.
    groups : list of str, optional
        Group (sensitive attribute / background) names, indexed by ``group``.
    """

    df: pd.DataFrame
    classes: list[str]
    roots: dict[str, Path] = field(default_factory=dict)
    groups: list[str] | None = None

    def __post_init__(self) -> None:
        self.roots = {k: Path(v) for k, v in self.roots.items()}
        self.classes = [str(c) for c in self.classes]
        if self.groups is not None:
            self.groups = [str(g) for g in self.groups]
        self.df = self._normalise(self.df)
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Iterable[dict], classes: Sequence[str], roots: dict,
                     groups: Sequence[str] | None = None) -> "Manifest":
        df = pd.DataFrame.from_records(list(records), columns=None)
        if df.empty:
            df = pd.DataFrame(columns=COLUMNS)
        return cls(df, list(classes), dict(roots), list(groups) if groups is not None else None)

    def _normalise(self, df: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise SynaugError(f"manifest is missing column {missing[0]!r} (required: {', '.join(REQUIRED)})")
        df = df.copy()
        for col, default in _DEFAULTS.items():
            if col not in df.columns:
                df[col] = default
            elif df[col].isna().any():  # records that omit an optional field
                df[col] = df[col].where(df[col].notna(), default)
        if "class_name" not in df.columns:
            df["class_name"] = ""
        for col in ("label", "group", "seed"):
            vals = pd.to_numeric(df[col], errors="coerce")
            bad = vals.isna() | (vals != np.floor(vals.fillna(0)))
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise SynaugError(f"manifest column {col!r} must hold integers; row {i} has {df[col].iloc[i]!r}")
            df[col] = vals.astype("int64")
        for col in ("path", "class_name", "group_name", "split", "source", "prompt", "generator"):
            df[col] = df[col].fillna("").astype(str)
        if _needs_path_check(df["path"]):  # else every path is already a clean relative POSIX path
            df["path"] = pd.Series([check_relative_path(p) for p in df["path"]], index=df.index, dtype=str)
        # fill names from the index lists so hand-written tables need only labels
        if len(df):
            names = np.asarray(self.classes, dtype=object)
            lab = df["label"].to_numpy()
            ok = (lab >= 0) & (lab < len(self.classes))
            empty = df["class_name"] == ""
            fill = empty.to_numpy() & ok
            df.loc[fill, "class_name"] = names[lab[fill]]
            if self.groups is not None:
                gnames = np.asarray(self.groups, dtype=object)
                g = df["group"].to_numpy()
                gok = (g >= 0) & (g < len(self.groups)) & (df["group_name"] == "").to_numpy()
                df.loc[gok, "group_name"] = gnames[g[gok]]
        for col, default in OPTIONAL.items():
            if col in df.columns:
                df[col] = (pd.to_numeric(df[col], errors="coerce").astype(float) if isinstance(default, float)
                           else df[col].where(df[col].notna(), default).astype(str))
        extra = [c for c in df.columns if c not in COLUMNS]
        return df[COLUMNS + extra].reset_index(drop=True)

    # ------------------------------------------------------------------ validation
    def validate(self, verify_files: bool = False, expected_size: tuple[int, int] | None = None) -> None:
        """Raise ``SynaugError`` (one line) on the first problem found.

        Checks: labels in range and names consistent, groups in range, split/source values,
        duplicate paths, every source has a root, and (``verify_files``) every image decodes
        fully as RGB (and has ``expected_size`` = (width, height) when given).
        """
        df, C = self.df, len(self.classes)
        if C == 0:
            raise SynaugError("manifest has no classes")
        if len(set(self.classes)) != C:
            raise SynaugError("manifest class names are not unique")
        lab = df["label"].to_numpy()
        bad = np.flatnonzero((lab < 0) | (lab >= C))
        if len(bad):
            i = int(bad[0])
            raise SynaugError(f"label {lab[i]} out of range [0, {C}) at row {i} (path {df['path'].iloc[i]!r})")
        names = np.asarray(self.classes, dtype=object)[lab] if len(df) else np.array([], dtype=object)
        mism = np.flatnonzero(df["class_name"].to_numpy() != names)
        if len(mism):
            i = int(mism[0])
            raise SynaugError(f"class_name {df['class_name'].iloc[i]!r} does not match label {lab[i]} "
                              f"({self.classes[lab[i]]!r}) at row {i}")
        g = df["group"].to_numpy()
        if self.groups is None:
            if (g != -1).any():
                raise SynaugError("manifest rows have a group but no group names were given")
        else:
            G = len(self.groups)
            badg = np.flatnonzero((g < -1) | (g >= G))
            if len(badg):
                i = int(badg[0])
                raise SynaugError(f"group {g[i]} out of range [0, {G}) at row {i}")
        for col, allowed in (("split", SPLITS), ("source", SOURCES)):
            badv = ~df[col].isin(allowed)
            if badv.any():
                i = int(np.flatnonzero(badv.to_numpy())[0])
                raise SynaugError(f"{col} {df[col].iloc[i]!r} at row {i} is not one of {', '.join(allowed)}")
        key = df["source"] + "/" + df["path"]
        dup = key.duplicated(keep="first")
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise SynaugError(f"duplicate path {df['path'].iloc[i]!r} (row {i})")
        for src in df["source"].unique():
            if src not in self.roots:
                raise SynaugError(f"manifest has {src} rows but no root folder for them")
        if verify_files:
            self.verify_files(expected_size)

    def verify_files(self, expected_size: tuple[int, int] | None = None) -> None:
        from PIL import Image

        for p in self.abspaths():
            if not p.is_file():
                raise SynaugError(f"image file not found: {p}")
            try:
                with Image.open(p) as im:
                    im.load()
                    mode, size = im.mode, im.size
            except Exception as e:  # PIL raises many types for corrupt data
                raise SynaugError(f"unreadable image {p}: {type(e).__name__}: {e}") from None
            if mode != "RGB":
                raise SynaugError(f"image {p} is mode {mode!r}, expected RGB")
            if expected_size is not None and tuple(size) != tuple(expected_size):
                raise SynaugError(f"image {p} is {size[0]}x{size[1]}, expected {expected_size[0]}x{expected_size[1]}")

    # ------------------------------------------------------------------ views
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_groups(self) -> int:
        return 0 if self.groups is None else len(self.groups)

    def __len__(self) -> int:
        return len(self.df)

    def select(self, mask) -> "Manifest":
        """A new manifest with the rows where ``mask`` is true (same classes, groups, roots)."""
        return Manifest(self.df[np.asarray(mask, dtype=bool)].reset_index(drop=True), self.classes,
                        self.roots, self.groups)

    def split(self, *names: str) -> "Manifest":
        return self.select(self.df["split"].isin(names).to_numpy())

    def with_source(self, source: str) -> "Manifest":
        return self.select((self.df["source"] == source).to_numpy())

    def abspaths(self) -> list[Path]:
        out = []
        for src, p in zip(self.df["source"], self.df["path"]):
            out.append(self.roots[src] / p)
        return out

    def class_counts(self, split: str | None = "train") -> np.ndarray:
        df = self.df if split is None else self.df[self.df["split"] == split]
        return np.bincount(df["label"].to_numpy(), minlength=self.num_classes).astype(int)

    def cell_counts(self, split: str | None = "train") -> np.ndarray:
        """Counts per (class, group), shape (C, G); G = 1 when there are no groups.

        With groups, rows without one (``group == -1``, e.g. synthetic rows of a plan that
        ignores groups) are not counted in any cell.
        """
        df = self.df if split is None else self.df[self.df["split"] == split]
        G = max(self.num_groups, 1)
        if self.groups is not None:
            df = df[df["group"] >= 0]
            g = df["group"].to_numpy()
        else:
            g = np.zeros(len(df), int)
        flat = df["label"].to_numpy() * G + g
        return np.bincount(flat, minlength=self.num_classes * G).reshape(self.num_classes, G).astype(int)

    @staticmethod
    def concat(parts: Sequence["Manifest"]) -> "Manifest":
        """Join manifests with the same classes/groups; roots must agree per source.

        Only the roots of sources that have rows count: a real-only manifest may carry any
        synthetic root (or none) and still joins a manifest of generated images.
        """
        if not parts:
            raise SynaugError("nothing to concatenate")
        first = parts[0]
        roots: dict[str, Path] = {}
        for m in parts:
            if m.classes != first.classes or m.groups != first.groups:
                raise SynaugError("cannot join manifests with different class or group names")
            for k, v in m.roots.items():
                if not (m.df["source"] == k).any():
                    continue
                if k in roots and roots[k].resolve() != v.resolve():
                    raise SynaugError(f"cannot join manifests with different {k} roots: {roots[k]} vs {v}")
                roots[k] = v
        for m in parts:  # keep a root for sources without rows (harmless, and what callers expect)
            for k, v in m.roots.items():
                roots.setdefault(k, v)
        df = pd.concat([m.df for m in parts], ignore_index=True)
        return Manifest(df, first.classes, roots, first.groups)

    @staticmethod
    def merge(parts: Sequence["Manifest"]) -> "Manifest":
        """Join any manifests of the same task into one (``synaug manifest merge``).

        Unlike :meth:`concat`, classes and groups are matched by *name* (labels are
        renumbered to the first manifest's order; a class or group only some parts have is
        appended), and parts whose rows of one source live under different roots are
        rebased onto their common folder (paths get the sub-folder as prefix).
        """
        if not parts:
            raise SynaugError("nothing to merge")
        classes = list(parts[0].classes)
        groups = None if all(m.groups is None for m in parts) else []
        for m in parts:
            classes += [c for c in m.classes if c not in classes]
            if groups is not None:
                groups += [g for g in (m.groups or []) if g not in groups]
        roots: dict[str, Path] = {}
        for src in SOURCES:
            used = sorted({str(m.roots[src].resolve()) for m in parts
                           if src in m.roots and (m.df["source"] == src).any()})
            if used:
                roots[src] = Path(used[0] if len(used) == 1 else os.path.commonpath(used))
        frames = []
        for m in parts:
            df = m.df.copy()
            df["label"] = np.asarray([classes.index(c) for c in m.classes], dtype=np.int64)[df["label"].to_numpy()] \
                if len(df) else df["label"]
            df["class_name"] = ""
            if groups is not None and m.groups is not None and len(df):
                gmap = np.asarray([groups.index(g) for g in m.groups] + [-1], dtype=np.int64)
                df["group"] = gmap[df["group"].to_numpy()]  # -1 indexes the appended -1
                df["group_name"] = ""
            for src, root in roots.items():
                rows = (df["source"] == src).to_numpy()
                if not rows.any():
                    continue
                prefix = Path(os.path.relpath(m.roots[src].resolve(), root)).as_posix()
                if prefix != ".":
                    df.loc[rows, "path"] = [f"{prefix}/{p}" for p in df.loc[rows, "path"]]
            frames.append(df)
        return Manifest(pd.concat(frames, ignore_index=True), classes, roots, groups)

    # ------------------------------------------------------------------ I/O
    def meta(self, relative_to: Path | None = None) -> dict:
        roots = {}
        for k, v in self.roots.items():
            v = Path(v).resolve()
            if relative_to is not None:
                try:
                    roots[k] = os.path.relpath(v, Path(relative_to).resolve())
                    continue
                except ValueError:
                    pass
            roots[k] = str(v)
        return {"version": 1, "classes": self.classes, "groups": self.groups, "roots": roots}

    def write(self, path: str | os.PathLike) -> Path:
        """Write Parquet (``.parquet``) or CSV (``.csv`` + ``.meta.json`` sidecar), atomically.

        Roots are stored relative to the manifest's folder so a run folder can be moved.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        meta = self.meta(relative_to=path.parent)
        if path.suffix == ".parquet":
            table = pa.Table.from_pandas(self.df, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   _META_KEY: json.dumps(meta).encode()})
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp)
        elif path.suffix == ".csv":
            with atomic_path(path) as tmp:
                self.df.to_csv(tmp, index=False)
            write_json_atomic(_sidecar(path), meta)
        else:
            raise SynaugError(f"manifest file must end in .parquet or .csv: {path}")
        return path

    @classmethod
    def read(cls, path: str | os.PathLike, root: str | os.PathLike | None = None,
             verify_files: bool = False, root_for_plain_only: bool = False) -> "Manifest":
        """Read a manifest written by :meth:`write`, or a plain CSV/Parquet with the columns.

        A plain table (no synaug metadata) takes class names from ``class_name`` (or
        ``class_<label>``), group names from ``group_name``, and ``root`` (default: its folder)
        as the root of real rows; see :meth:`_from_plain` for what may be left out. ``root``
        also replaces the stored real root of a synaug manifest unless ``root_for_plain_only``.
        """
        path = Path(path)
        if not path.is_file():
            raise SynaugError(f"manifest file not found: {path}")
        meta = None
        try:
            if path.suffix == ".parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(path)
                raw = (table.schema.metadata or {}).get(_META_KEY)
                meta = json.loads(raw) if raw else None
                df = table.to_pandas()
            elif path.suffix == ".csv":
                df = pd.read_csv(path, keep_default_na=False, dtype={"path": str})
                if _sidecar(path).is_file():
                    meta = json.loads(_sidecar(path).read_text())
            else:
                raise SynaugError(f"manifest file must end in .parquet or .csv: {path}")
        except SynaugError:
            raise
        except Exception as e:
            raise SynaugError(f"cannot read manifest {path}: {type(e).__name__}: {e}") from None
        if meta is not None:  # roots resolved: messages show real folders, not data/../../..
            roots = {k: (path.parent / v).resolve() for k, v in meta["roots"].items()}
            if root is not None and not root_for_plain_only:
                roots["real"] = Path(root)
            m = cls(df, meta["classes"], roots, meta.get("groups"))
        else:
            m = cls._from_plain(df, Path(root) if root is not None else None, path)
        if verify_files:
            m.verify_files()
        return m

    @classmethod
    def _from_plain(cls, df: pd.DataFrame, root: Path | None, path: Path) -> "Manifest":
        """A hand-written table: ``path`` plus ``label`` and/or ``class_name``.

        * class names alone (no ``label``): classes are the sorted names (the order of
          ``torchvision.datasets.ImageFolder``) and labels follow;
        * no ``split`` column: every row is a training row;
        * ``group_name`` alone (no ``group``): groups are the sorted non-empty names;
        * absolute paths (all rows): made relative to ``root``, or to their common folder
          when no root is given.
        """
        if "path" not in df.columns:
            raise SynaugError(f"manifest {path.name} is missing column 'path'")
        df = df.copy()
        has_names = "class_name" in df.columns and (df["class_name"].astype(str) != "").all()
        if "label" not in df.columns:
            if not has_names:
                raise SynaugError(f"manifest {path.name} is missing column 'label' (or give every row's "
                                  "class name in a 'class_name' column)")
            names = df["class_name"].astype(str)
            classes = sorted(set(names))
            df["label"] = names.map({c: i for i, c in enumerate(classes)}).astype("int64")
        else:
            classes = _classes_from_labels(df, path)
        if "split" not in df.columns:
            df["split"] = "train"
        groups = None
        if "group" in df.columns:
            g = pd.to_numeric(df["group"], errors="coerce").fillna(-1).astype(int)
            if (g >= 0).any():
                groups = [f"group_{i}" for i in range(int(g.max()) + 1)]
                if "group_name" in df.columns:
                    for gi, name in zip(g, df["group_name"].astype(str)):
                        if gi >= 0 and name:
                            groups[gi] = name
        elif "group_name" in df.columns and (df["group_name"].astype(str) != "").any():
            gn = df["group_name"].astype(str)
            groups = sorted(set(gn) - {""})
            df["group"] = gn.map({g: i for i, g in enumerate(groups)}).fillna(-1).astype("int64")
        df["path"], root = _absolute_to_relative(df["path"], root, path)
        roots = {"real": root}
        if "source" in df.columns and (df["source"].astype(str) == "synthetic").any():
            roots["synthetic"] = root
        return cls(df, classes, roots, groups)


def row_ref(table: str | os.PathLike, i: int) -> str:
    """How a user finds data row ``i`` (0-based) of ``table``: a line number in a CSV (the
    header is line 1), else the row number."""
    return f"line {i + 2}" if str(table).endswith(".csv") else f"row {i}"


def _classes_from_labels(df: pd.DataFrame, path: Path) -> list[str]:
    """Class names of a plain table with a ``label`` column (and maybe ``class_name``).

    One name per label and one label per name, else an error naming both rows. Without any
    class name, every label 0..K-1 must have a row: a gap is almost always a mistyped label,
    which would otherwise silently add empty classes (with names, a label without rows is a
    class of its own, named ``class_<label>``).
    """
    labels = pd.to_numeric(df["label"], errors="coerce")
    if labels.isna().any():
        i = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise SynaugError(f"manifest {path.name}: column 'label' must hold integers; {row_ref(path, i)} has "
                          f"{df['label'].iloc[i]!r}")
    labels = labels.to_numpy()
    if (labels != np.floor(labels)).any():
        return []  # Manifest._normalise names the row
    labels = labels.astype(np.int64)
    n = int(labels.max()) + 1 if len(labels) else 0
    classes = [f"class_{i}" for i in range(max(n, 0))]
    named: dict[int, tuple[str, int]] = {}   # label -> (name, first row)
    by_name: dict[str, tuple[int, int]] = {}  # name -> (label, first row)
    names = df["class_name"].astype(str).tolist() if "class_name" in df.columns else [""] * len(labels)
    for i, (lab, name) in enumerate(zip(labels.tolist(), names)):
        if not name:
            continue
        if lab in named and named[lab][0] != name:
            raise SynaugError(f"manifest {path.name}: {row_ref(path, i)} names label {lab} {name!r}, but "
                              f"{row_ref(path, named[lab][1])} names it {named[lab][0]!r} (one class name per label)")
        if name in by_name and by_name[name][0] != lab:
            raise SynaugError(f"manifest {path.name}: {row_ref(path, i)} gives class {name!r} label {lab}, but "
                              f"{row_ref(path, by_name[name][1])} gives it label {by_name[name][0]} (one label per "
                              "class name)")
        named.setdefault(lab, (name, i))
        by_name.setdefault(name, (lab, i))
        if lab >= 0:
            classes[lab] = name
    gaps = sorted(set(range(n)) - set(labels.tolist()))
    if gaps and not named and (labels >= 0).all():  # a negative label: validate() names it
        top = int(np.argmax(labels))
        shown = ", ".join(map(str, gaps[:5])) + (f", ... ({len(gaps)} in all)" if len(gaps) > 5 else "")
        raise SynaugError(f"manifest {path.name}: labels must be 0..K-1 for K classes, but label {n - 1} "
                          f"({row_ref(path, top)}, path {str(df['path'].iloc[top])!r}) leaves labels {shown} without "
                          "any row; fix a mistyped label, or name the classes in a class_name column"
                          " (with names, a label without rows is an empty class)")
    return classes


def _absolute_to_relative(paths: pd.Series, root: Path | None, table: Path) -> tuple[list, Path]:
    """Paths of a plain table relative to its root (default: the table's folder).

    Absolute paths are accepted when every row has one: relative to ``root`` if given (each
    must lie under it), else to their common folder. Mixed absolute/relative rows fall to
    :func:`check_relative_path`, which refuses the absolute ones.
    """
    vals = paths.fillna("").astype(str).tolist()
    absolute = [os.path.isabs(p) for p in vals]
    if not vals or not all(absolute):
        return vals, (Path(root) if root is not None else table.parent)
    if root is None:
        root = Path(os.path.commonpath([os.path.dirname(os.path.normpath(p)) for p in vals]))
    base = Path(root).resolve()
    out = []
    for p in vals:
        rel = os.path.relpath(os.path.normpath(p), base)
        if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
            raise SynaugError(f"path {p!r} in {table.name} is outside the data root {root}")
        out.append(rel)
    return out, Path(root)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")
