"""Preflight of a diffusers generation config: find the model and size it against the device's
free memory before a long job starts.

``synaug generate --check --config FILE`` prints :meth:`ModelCheck.line` (FILE: a generation
config or a whole run config); ``synaug run`` runs the same check before its first stage when a
diffusers backend will generate. Nothing is downloaded: a Hub id is resolved from the local
Hugging Face cache, else from the Hub's file listing and safetensors headers (unless offline).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import SynaugError
from . import hub

#: components diffusers is never asked to load (synaug passes ``safety_checker=None``)
_SKIPPED = {"safety_checker", "feature_extractor"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx")
_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


@dataclass
class ModelCheck:
    """What the preflight found (see :func:`check_generation`)."""

    model: str
    source: str                      # where it was found
    pipeline: str                    # pipeline class, when known
    params: dict[str, int]           # parameters per weighted component
    dtype: str                       # fp16 | bf16 | fp32, as it will run
    device: str
    free_bytes: Optional[int]        # free memory on ``device``
    notes: list[str] = field(default_factory=list)

    @property
    def weight_bytes(self) -> int:
        return sum(self.params.values()) * _BYTES[self.dtype]

    def line(self) -> str:
        parts = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in self.params.items())
        free = "free memory unknown" if self.free_bytes is None else f"{_gb(self.free_bytes)} free there"
        out = (f"model {self.model}: {self.source}; {self.pipeline}; {parts} parameters; "
               f"{_gb(self.weight_bytes)} of weights as {self.dtype} on {self.device}, {free}")
        return "; ".join([out, *self.notes])


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def check_generation(cfg, kind: Optional[str] = None) -> ModelCheck:
    """Resolve ``cfg.model`` (a :class:`~synaug.generate.GenerateConfig` of a diffusers backend)
    and check that its weights fit the device's free memory.

    Raises :class:`SynaugError` with one line when the model cannot be found (naming a known
    replacement of a removed Hub id) or its weights alone exceed the free memory.
    """
    from .diffusers_backend import RANDOM_PREFIX, _is_local, check_model, resolve_device, resolve_dtype

    if cfg.backend == "pool":
        raise SynaugError("backend pool loads no diffusion model: nothing to check")
    kind = kind or cfg.backend
    model = check_model(cfg)
    device = resolve_device(cfg.device)
    dtype = {v: k for k, v in _dtypes().items()}[resolve_dtype(cfg.dtype, device)]
    if model.startswith(RANDOM_PREFIX):
        source, pipeline, params = _random(model[len(RANDOM_PREFIX):], kind)
    elif _is_local(model):
        source, pipeline, params = f"local folder {model}", *_folder(Path(model), model)
    else:
        source, pipeline, params = _hub_model(model, cfg.local_files_only)
    found = ModelCheck(cfg.model, source, pipeline, params, dtype, device, free_memory(device))
    if device == "cpu" and dtype != "fp32":
        found.notes.append(f"{dtype} on the CPU is slow (fp32 is the CPU default)")
    if found.free_bytes is not None and found.weight_bytes > found.free_bytes:
        raise SynaugError(f"{found.line()}: the weights alone do not fit; make room on {device}, use dtype: fp16, "
                          "or use another device")
    return found


def _dtypes() -> dict:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def free_memory(device: str) -> Optional[int]:
    """Free bytes on ``device``: CUDA's free memory, or the machine's available RAM."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        import psutil
    except ImportError:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return int(psutil.virtual_memory().available)


# ---------------------------------------------------------------------------- sources
def _random(arch: str, kind: str) -> tuple[str, str, dict[str, int]]:
    """``random:<arch>``: the architecture built on the meta device (no memory) and counted."""
    from .fullsize import build_random_sd, parameter_counts, quiet_diffusers

    if arch == "tiny":
        from .tiny import make_tiny_sd

        with quiet_diffusers():
            pipe = make_tiny_sd()
    else:
        pipe = build_random_sd(arch, device="meta")
    cls = "StableDiffusionImg2ImgPipeline" if kind == "img2img" else "StableDiffusionPipeline"
    return "built in code with random weights (noise images: cost only)", cls, parameter_counts(pipe)


def _weighted(files: dict[str, list[str]], where: str) -> dict[str, list[str]]:
    """component -> its safetensors files diffusers loads (no variant files such as
    ``*.fp16.safetensors``); refuses components whose weights are not safetensors."""
    out = {}
    for comp, names in sorted(files.items()):
        if comp in _SKIPPED or not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
            continue
        st = [n for n in names if n.endswith(".safetensors") and n.count(".") == 1]
        if not st:
            raise SynaugError(f"{where}: {comp} has no safetensors weights ({', '.join(sorted(names))}); "
                              "synaug loads only safetensors")
        out[comp] = sorted(st)
    if not out:
        raise SynaugError(f"{where} holds no model weights")
    return out


def _folder(root: Path, where: str) -> tuple[str, dict[str, int]]:
    """A diffusers folder on disk (local, or a cached snapshot): pipeline class and parameters
    read from the safetensors headers (no tensor is loaded)."""
    from safetensors import safe_open

    index = json.loads((root / "model_index.json").read_text())
    comps = [k for k, v in index.items() if isinstance(v, list) and v and v[0] is not None and k not in _SKIPPED]
    missing = [c for c in comps if not (root / c).is_dir()]
    if missing:
        raise SynaugError(f"{where}: component folder {missing[0]}/ is missing")
    files = {c: [p.name for p in (root / c).iterdir() if p.is_file()] for c in comps}
    params = {}
    for comp, names in _weighted(files, where).items():
        n = 0
        for name in names:
            with safe_open(str(root / comp / name), "pt") as f:
                for k in f.keys():
                    n += _numel(f.get_slice(k).get_shape())
        params[comp] = n
    return str(index.get("_class_name", "unknown pipeline")), params


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _hub_model(repo_id: str, local_files_only: bool) -> tuple[str, str, dict[str, int]]:
    """A Hub id: the cached snapshot if there is one, else the Hub's listing (when allowed)."""
    snap = hub.cached_snapshot(repo_id)
    skipped = hub.hub_skipped_because(local_files_only)
    if snap is not None:
        try:
            return (f"Hugging Face cache ({snap})", *_folder(snap, f"{repo_id} in the Hugging Face cache"))
        except SynaugError as e:
            if skipped:  # the cached snapshot is all there is
                raise SynaugError(f"{e} ({skipped})") from None
    tried = hub.sources_tried(repo_id, local_files_only)
    note = hub.removed_note(repo_id)
    if skipped:
        raise SynaugError(f"model {repo_id} is not available offline; {tried}" + (f"; {note}" if note else ""))
    return "Hugging Face Hub", "diffusers pipeline", _hub_params(repo_id, tried, note)


def _hub_params(repo_id: str, tried: str, note: str) -> dict[str, int]:
    """Parameters per component from the Hub's file listing and safetensors headers."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        info = api.model_info(repo_id)
        names = [s.rfilename for s in (info.siblings or [])]
    except Exception as e:  # 404, gated, network: many types, one message
        first = (str(e).strip().splitlines() or [""])[0]
        raise SynaugError(f"model {repo_id}: {type(e).__name__}: {first}; {tried}"
                          + (f"; {note}" if note else "")) from None
    if "model_index.json" not in names:
        raise SynaugError(f"{repo_id} on the Hub is not a diffusers pipeline (no model_index.json)")
    files: dict[str, list[str]] = {}
    for n in names:
        if n.count("/") == 1:
            comp, base = n.split("/")
            files.setdefault(comp, []).append(base)
    params = {}
    for comp, bases in _weighted(files, f"{repo_id} on the Hub").items():
        params[comp] = 0
        for b in bases:
            meta = api.parse_safetensors_file_metadata(repo_id, f"{comp}/{b}")
            params[comp] += sum(meta.parameter_count.values())
    return params
