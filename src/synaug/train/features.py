"""Encoder features of an evaluation, kept so that a model sharing the encoder skips the forward.

SYNAuG's step 3 changes only the head g: the fine-tuned model's encoder f is bit-identical to
the trained one's, so its test logits are ``g'(f(x))`` on the very features the trained model's
evaluation computed. A run's ``eval-train`` stage stores them (``features.safetensors``, the
key in its metadata); ``eval-finetune`` applies its head to them when the key matches, else it
runs the whole model as usual. The key hashes every encoder tensor (weights and batch-norm
statistics), the rows in order, how images are decoded and normalised, the memory format, the
precision and the torch version: anything that could change a feature bit changes the key.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..io import atomic_path
from ..manifest import Manifest
from .config import AugmentConfig, DataConfig

FILE = "features.safetensors"


def encoder_digest(model: torch.nn.Module) -> str:
    """sha256 over the encoder's state (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in model.encoder.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def features_key(model: torch.nn.Module, manifest: Manifest, data: DataConfig, augment: AugmentConfig,
                 channels_last: bool, precision: str, device: torch.device) -> Optional[str]:
    """The key of ``model``'s features on ``manifest``; ``None`` when the model has no encoder/head."""
    if not (hasattr(model, "encoder") and hasattr(model, "head")):
        return None
    h = hashlib.sha256(encoder_digest(model).encode())
    h.update("\n".join(map(str, manifest.abspaths())).encode())
    h.update(json.dumps({"size": data.image_size, "resize": data.eval_resize, "mean": list(augment.mean),
                         "std": list(augment.std), "channels_last": channels_last, "precision": precision,
                         "device": device.type, "torch": torch.__version__}, sort_keys=True).encode())
    return h.hexdigest()


def load(paths: Sequence[Path], key: Optional[str]) -> tuple[Optional[torch.Tensor], Optional[Path]]:
    """The stored features of the first of ``paths`` whose key is ``key`` (else ``(None, None)``)."""
    from safetensors import safe_open

    if key is None:
        return None, None
    for p in paths:
        try:
            with safe_open(str(p), framework="pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    return f.get_tensor("features"), p
        except Exception:   # missing or damaged (safetensors' own error type): computed again
            continue
    return None, None


def save(path: Path, feats: torch.Tensor, key: Optional[str]) -> None:
    from safetensors.torch import save_file

    if key is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"features": feats.contiguous()}, str(tmp), metadata={"key": key})
