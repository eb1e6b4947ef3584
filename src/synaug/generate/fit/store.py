"""The adapters a fit leaves behind, as generation reads them.

``OUT/adapters.json`` (written last, after every unit finished) maps each fitted class to its
adapter file, the file's sha256 and the words that stand for the class in prompts; it also
records the method, the base model and its architecture, the caption template and the config.
Generation refuses a file whose bytes no longer match the recorded sha256.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ...errors import SynaugError

INDEX = "adapters.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def adapters_digest(folder: str | Path) -> str:
    """Short hash of a fit's index (it holds every adapter file's sha256)."""
    return hashlib.sha256(_index_path(folder).read_bytes()).hexdigest()[:16]


def _index_path(folder: str | Path) -> Path:
    folder = Path(folder)
    f = folder / INDEX
    if not f.is_file():
        what = "no such folder" if not folder.exists() else f"no {INDEX}: the fit has not finished"
        raise SynaugError(f"adapters {folder}: {what} (make it with `synaug fit`)")
    return f


@dataclass(frozen=True)
class ClassAdapter:
    class_name: str
    unit: str
    kind: str          # "lora" | "embedding"
    path: Path
    sha256: str
    subject: str       # what replaces the class name in a prompt ("cat", "<cat>", "sks cat")

    @property
    def token(self) -> str | None:
        return self.subject if self.kind == "embedding" else None


class AdapterSet:
    """A finished fit: ``AdapterSet.read(folder)``, then ``entry(class_name)``."""

    def __init__(self, folder: Path, index: dict):
        self.folder, self.index = folder, index
        self.method, self.per = index["method"], index["per"]

    @classmethod
    def read(cls, folder: str | Path) -> "AdapterSet":
        f = _index_path(folder)
        try:
            index = json.loads(f.read_text())
            index["classes"], index["method"]  # noqa: B018 - the keys generation needs
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SynaugError(f"adapters index {f} is malformed: {type(e).__name__}: {e}") from None
        return cls(Path(folder), index)

    @property
    def classes(self) -> list[str]:
        return list(self.index["classes"])

    @property
    def label(self) -> str:
        """Short name for the manifest's generator column, e.g. ``lora-per-class``."""
        return f"{self.method}-per-{self.per}"

    def entry(self, class_name: str) -> ClassAdapter:
        e = self.index["classes"].get(class_name)
        if e is None:
            fitted = ", ".join(self.classes[:6]) + (" ..." if len(self.classes) > 6 else "")
            raise SynaugError(f"adapters {self.folder} have no adapter for class {class_name!r} (fitted: {fitted}); "
                              "fit that class too, or generate it without adapters")
        return ClassAdapter(class_name, e["unit"], e["kind"], (self.folder / e["file"]).resolve(), e["sha256"],
                            e["subject"])

    def verify(self, classes) -> list[ClassAdapter]:
        """The entries of ``classes``, each file checked against its recorded sha256."""
        out, checked = [], {}
        for c in classes:
            e = self.entry(c)
            if e.path not in checked:
                if not e.path.is_file():
                    raise SynaugError(f"adapter file not found: {e.path}")
                checked[e.path] = sha256_file(e.path)
            if checked[e.path] != e.sha256:
                raise SynaugError(f"adapter file {e.path} does not match the sha256 recorded by the fit "
                                  "(changed after fitting); fit again")
            out.append(e)
        return out


def write_index(out_dir: Path, header: dict, records: list[dict]) -> dict:
    """``adapters.json`` from the units' records (``adapter.json`` of each unit)."""
    from ...io import write_json_atomic

    classes, units = {}, {}
    for r in records:
        base = f"units/{r['unit']}"
        for c, e in r["classes"].items():
            classes[c] = {"unit": r["unit"], "kind": r["kind"], "file": f"{base}/{e['file']}",
                          "sha256": e["sha256"], "subject": e["subject"]}
        units[r["unit"]] = {k: r[k] for k in ("steps", "resolution", "loss_first", "loss_last",
                                              "fixed_draw_loss_before", "fixed_draw_loss_after", "prior_images")}
        units[r["unit"]]["images"] = f"{base}/{r['images']}"
    index = {**header, "classes": classes, "units": units}
    write_json_atomic(out_dir / INDEX, index)
    return index
