"""Checkpoints: model weights in safetensors (with the model spec in its metadata), optimizer
tensors in a second safetensors file, and a JSON with epoch / schedule / RNG / history.

Files of one training run (``out_dir``)::

    epoch_0007.safetensors        model weights after epoch 7
    epoch_0007.state.safetensors  optimizer + algorithm tensors, RNG state
    best_0005.safetensors         weights of the best validation epoch so far (with a val split)
    last.json                     points at the newest complete epoch and the best file
                                  (written last, atomically)
    model.safetensors             the selected model (best on val, else the last epoch)

A kill at any moment leaves ``last.json`` pointing at complete files.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import SynaugError
from ..io import atomic_path, write_json_atomic
from ..models import Classifier, model_from_spec

META_KEY = "synaug"


def unwrap(model: torch.nn.Module) -> Classifier:
    """The plain model under DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_model(model: torch.nn.Module, path: str | Path, meta: Optional[dict] = None) -> Path:
    """Write the weights of ``model`` to ``path`` (safetensors, atomic) with spec + ``meta``."""
    m = unwrap(model)
    if not m.spec:
        raise SynaugError("model has no spec (build it with synaug.models.create_model)")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in m.state_dict().items()}
    info = {"spec": m.spec, **(meta or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(info)})
    return path


def read_meta(path: str | Path) -> dict:
    """The JSON metadata of a model file written by :func:`save_model`."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:
        raise SynaugError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if raw is None:
        raise SynaugError(f"{path} is not a synaug model file (no '{META_KEY}' metadata)")
    return json.loads(raw)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the model stored in ``path`` and load its weights (strict)."""
    meta = read_meta(path)
    model = model_from_spec(meta["spec"])
    state = load_file(str(path), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SynaugError(f"checkpoint {path} does not match its model spec: {str(e).splitlines()[0]}") from None
    model.meta = meta
    return model.to(device)


def resolve_checkpoint(path: str | Path) -> Path:
    """A model file from a path that may be a run folder, a ``last.json`` or a ``.safetensors``."""
    p = Path(path)
    if p.is_dir():
        if (p / "model.safetensors").is_file():
            return p / "model.safetensors"
        if (p / "last.json").is_file():
            p = p / "last.json"
        else:
            raise SynaugError(f"no checkpoint in {p} (model.safetensors / last.json)")
    if p.suffix == ".json":
        if not p.is_file():
            raise SynaugError(f"checkpoint file not found: {p}")
        return p.parent / json.loads(p.read_text())["weights"]
    if not p.is_file():
        raise SynaugError(f"checkpoint file not found: {p}")
    return p


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Load a trained model from a run folder, ``last.json`` or model ``.safetensors``.

    Returns
    -------
    Classifier
        In eval mode, with ``model.meta`` holding the stored metadata (spec, classes, groups,
        training counts, epoch, ...).
    """
    model = load_model(resolve_checkpoint(path), device)
    return model.eval()


# ---------------------------------------------------------------------- training state
def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    info = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": _py_state_to_json(random.getstate())}
    return tensors, info


def _py_state_to_json(state) -> list:
    return [state[0], list(state[1]), state[2]]


def _restore_rng(tensors: dict[str, torch.Tensor], info: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = info["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = info["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_training_state(path: Path, optimizer: torch.optim.Optimizer, algo_state: dict[str, torch.Tensor]) -> dict:
    """Optimizer / algorithm tensors + RNG into ``path`` (safetensors); returns the JSON part."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                plain_state.setdefault(str(pid), {})[k] = v
    for k, v in algo_state.items():
        tensors[f"algo.{k}"] = v.detach().cpu().contiguous().clone()
    rng_t, rng_info = _rng_state()
    tensors.update(rng_t)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return {"param_groups": sd["param_groups"], "plain_state": plain_state, "rng": rng_info}


def load_training_state(path: Path, info: dict, optimizer: torch.optim.Optimizer, device) -> dict[str, torch.Tensor]:
    """Restore optimizer + RNG from :func:`save_training_state` output; return algorithm tensors."""
    tensors = load_file(str(path), device="cpu")
    state: dict[int, dict[str, Any]] = {}
    algo: dict[str, torch.Tensor] = {}
    for key, v in tensors.items():
        kind, rest = key.split(".", 1)
        if kind == "optim":
            pid, name = rest.split(".", 1)
            state.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
        elif kind == "algo":
            algo[rest] = v
    for pid, st in info.get("plain_state", {}).items():
        state.setdefault(int(pid), {}).update(st)
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    _restore_rng({k: v for k, v in tensors.items() if k.startswith("rng.")}, info["rng"])
    return algo


def write_last(out_dir: Path, record: dict) -> None:
    write_json_atomic(out_dir / "last.json", record)


def read_last(out_dir: Path) -> Optional[dict]:
    p = out_dir / "last.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        raise SynaugError(f"{p} is damaged; delete it to start over") from None


def load_file_state(path: Path) -> dict[str, torch.Tensor]:
    """The raw tensors of a safetensors file (CPU)."""
    if not Path(path).is_file():
        raise SynaugError(f"checkpoint file missing: {path}")
    return load_file(str(path), device="cpu")


def load_training_state_algo(path: Path) -> dict[str, torch.Tensor]:
    """Only the algorithm tensors of a training-state file."""
    return {k[5:]: v for k, v in load_file_state(path).items() if k.startswith("algo.")}
