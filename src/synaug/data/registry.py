"""Dataset adapters by name: each turns files on disk into a :class:`~synaug.manifest.Manifest`."""
from __future__ import annotations

import inspect
from typing import Callable

from ..errors import SynaugError
from ..manifest import Manifest

_DATASETS: dict[str, Callable[..., Manifest]] = {}


def register_dataset(name: str):
    def deco(fn: Callable[..., Manifest]) -> Callable[..., Manifest]:
        _DATASETS[name] = fn
        return fn
    return deco


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def load_dataset(name: str, root: str | None = None, **kwargs) -> Manifest:
    """Build the manifest of dataset ``name`` found under ``root``."""
    if name not in _DATASETS:
        raise SynaugError(f"unknown dataset {name!r} (known: {', '.join(list_datasets())})")
    fn = _DATASETS[name]
    # unknown adapter options are a one-line error, not a TypeError
    allowed = [p for p in inspect.signature(fn).parameters if p != "root"]
    for key in kwargs:
        if key not in allowed:
            raise SynaugError(f"dataset {name!r} has no option {key!r} (options: {', '.join(allowed) or 'none'})")
    return fn(root, **kwargs)
