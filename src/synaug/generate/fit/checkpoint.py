"""A fit's resumable state in one safetensors file, written atomically every ``save_every`` steps:
the trainable tensors, the AdamW state, the gradient scaler and the step reached (the random
state of step ``s`` is derived from (seed, unit, s), so the step is all a resume needs of it).
A kill at any moment leaves either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...io import atomic_path

CHECKPOINT = "checkpoint.safetensors"


def save(path: Path, step: int, params: dict, optimizer, scaler, meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"param/{n}": p.detach().to("cpu").contiguous() for n, p in params.items()}
    names = list(params)
    for i, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt/{names[i]}/{k}"] = v.detach().to("cpu").contiguous()
    info = {**meta, "step": int(step), "scaler": scaler.state_dict() if scaler is not None else None}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"synaug": json.dumps(info)})


def read_meta(path: Path) -> dict | None:
    """The checkpoint's metadata (``step``, ``digest``, losses ...), or None if there is none
    readable (a checkpoint is only ever replaced whole, so unreadable means absent)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {})["synaug"])
    except Exception:  # a foreign or damaged file: start the unit again
        return None


def load(path: Path, params: dict, optimizer, scaler) -> dict:
    """Restore ``params`` (in place) and the optimizer / scaler; returns the metadata."""
    import torch
    from safetensors.torch import load_file

    meta = read_meta(path)
    tensors = load_file(str(path))
    names = list(params)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"param/{n}"])
    state = {}
    for i, n in enumerate(names):
        prefix = f"opt/{n}/"
        st = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if st:
            state[i] = st
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return meta
