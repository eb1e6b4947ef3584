"""diffusers backends: text-to-image and image-to-image (Stable Diffusion 1.x / 2.x / SDXL / turbo).

Weights load only from safetensors (``use_safetensors=True``), remote code is never trusted,
and the safety checker is not loaded (``safety_checker=None``). Initial noise is drawn by a
CPU ``torch.Generator`` per image, so a seed gives the same starting latents on any device.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SynaugError
from ..manifest import Manifest
from ..plan import Plan
from .base import RANDOM_PREFIX, Item, derive_seed, to_square

SCHEDULER_CLASSES = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++-karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
}


def resolve_device(device: str = "auto", local_rank: int = 0) -> str:
    """``auto`` -> ``cuda:<local rank>`` when CUDA is available, else ``cpu``."""
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SynaugError(f"device {device!r} requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    """``auto`` -> float16 on CUDA, float32 elsewhere."""
    import torch

    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return table[dtype]


def _is_local(model: str) -> bool:
    # anything that exists, or is spelt like a path rather than a Hub id "org/name"
    return (os.path.exists(os.path.expanduser(model)) or model.startswith((".", "/", "~"))
            or len(Path(model).parts) > 2 or os.sep != "/" and os.sep in model)


def model_label(model: str) -> str:
    """Short model name for the manifest: a local folder's name, or the Hub id."""
    return Path(model).expanduser().resolve().name if _is_local(model) else model


#: the oldest releases synaug works with (pyproject.toml pins the same): diffusers' from_pretrained
#: takes ``dtype=`` from 0.40 (older releases ignore it and load fp32); transformers builds a CLIP
#: tokenizer from an in-memory vocabulary (``random:`` pipelines) from 5.0
MIN_VERSIONS = {"diffusers": "0.40.0", "transformers": "5.0.0"}


def check_versions() -> None:
    """Refuse installed diffusers / transformers older than :data:`MIN_VERSIONS` in one line."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    for pkg, least in MIN_VERSIONS.items():
        try:
            have = version(pkg)
        except PackageNotFoundError:
            raise SynaugError(f"{pkg} is not installed; the diffusers backends need it: "
                              f"pip install 'synaug[gen]'") from None
        if Version(have) < Version(least):
            raise SynaugError(f"{pkg} {have} is older than {least}, the oldest synaug works with: "
                              f"pip install -U '{pkg}>={least}'")


def check_model(cfg) -> str:
    """Fail fast (before heavy imports) on a missing model; returns the id or the folder path."""
    model = cfg.model
    if not model:
        raise SynaugError(f"backend {cfg.backend} needs model: a Hugging Face id or a local diffusers folder")
    if model.startswith(RANDOM_PREFIX):
        arch = model[len(RANDOM_PREFIX):]
        from .fullsize import ARCHS

        if arch not in (*ARCHS, "tiny"):
            raise SynaugError(f"model {model!r}: random pipelines are {', '.join(RANDOM_PREFIX + a for a in (*ARCHS, 'tiny'))}")
        return model
    if not _is_local(model):
        return model
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise SynaugError(f"model folder not found: {model}")
    if not (folder / "model_index.json").is_file():
        raise SynaugError(f"{model} is not a diffusers pipeline folder (no model_index.json)")
    return str(folder)


def load_pipeline(cfg, kind: str = "txt2img", device: str = "cpu"):
    """Load a diffusers pipeline from ``cfg.model`` (Hub id or local folder) ready on ``device``.

    Parameters
    ----------
    cfg : GenerateConfig
    kind : {"txt2img", "img2img"}
    device : str
        e.g. ``"cpu"``, ``"cuda:0"``.
    """
    model = check_model(cfg)
    check_versions()
    if model.startswith(RANDOM_PREFIX):
        return _finish(_random_pipeline(model[len(RANDOM_PREFIX):], kind, device, resolve_dtype(cfg.dtype, device)),
                       cfg, device)
    kwargs = dict(use_safetensors=True, local_files_only=cfg.local_files_only)
    if _is_local(model):
        components = json.loads((Path(model) / "model_index.json").read_text())
        kwargs["local_files_only"] = True
        if "safety_checker" in components:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
    elif cfg.pipeline != "sdxl":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    import diffusers

    kwargs["dtype"] = resolve_dtype(cfg.dtype, device)
    names = {("auto", "txt2img"): "AutoPipelineForText2Image", ("auto", "img2img"): "AutoPipelineForImage2Image",
             ("sd", "txt2img"): "StableDiffusionPipeline", ("sd", "img2img"): "StableDiffusionImg2ImgPipeline",
             ("sdxl", "txt2img"): "StableDiffusionXLPipeline", ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline"}
    cls = getattr(diffusers, names[(cfg.pipeline, kind)])
    try:
        pipe = cls.from_pretrained(model, **kwargs)
    except Exception as e:  # hub, IO and config errors come in many types; all are user-fixable here
        raise SynaugError(load_failure(cfg, names[(cfg.pipeline, kind)], e, _is_local(model))) from None
    return _finish(pipe, cfg, device)


def load_failure(cfg, cls_name: str, err: Exception, local: bool) -> str:
    """One line: what failed, where the model was looked for, and a known replacement id."""
    from .hub import removed_note, sources_tried

    first = (str(err).strip().splitlines() or [""])[0]
    msg = f"cannot load model {cfg.model!r} ({cls_name}): {type(err).__name__}: {first}"
    if local:
        return msg
    note = removed_note(cfg.model)
    return f"{msg}; {sources_tried(cfg.model, cfg.local_files_only)}" + (f"; {note}" if note else "")


def _random_pipeline(arch: str, kind: str, device: str, dtype):
    """``random:<arch>``: a pipeline built in code with random weights (cost measurements)."""
    import diffusers

    if arch == "tiny":
        from .fullsize import quiet_diffusers
        from .tiny import make_tiny_sd

        with quiet_diffusers():
            pipe = make_tiny_sd().to(device, dtype)
    else:
        from .fullsize import build_random_sd

        pipe = build_random_sd(arch, device, dtype)
    if kind == "img2img":
        pipe = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)
    return pipe


def _finish(pipe, cfg, device: str):
    """Scheduler, attention slicing, memory format and compilation as configured; on ``device``."""
    import diffusers
    import torch

    if cfg.scheduler != "default":
        sched_name, extra = SCHEDULER_CLASSES[cfg.scheduler]
        pipe.scheduler = getattr(diffusers, sched_name).from_config(pipe.scheduler.config, **extra)
    if cfg.attention_slicing:
        pipe.enable_attention_slicing()
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    if cfg.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if cfg.compile_unet:
        mode = cfg.compile_unet if isinstance(cfg.compile_unet, str) else (
            "reduce-overhead" if str(device).startswith("cuda") else "default")
        pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True)
    return pipe


def native_size(pipe) -> int:
    """The side length a pipeline generates by default (UNet sample size x VAE factor)."""
    s = pipe.unet.config.sample_size
    s = s[0] if isinstance(s, (list, tuple)) else s
    return int(s * pipe.vae_scale_factor)


class _DiffusersGenerator:
    def __init__(self, pipe, cfg, name: str):
        self.pipe, self.cfg, self.name = pipe, cfg, name
        self.size = cfg.gen_size or native_size(pipe)

    def _call(self, items: Sequence[Item], seeds: Sequence[int], **extra) -> list:
        import torch

        cfg = self.cfg
        chunks = [[i] for i in range(len(items))] if cfg.batch_invariant else [list(range(len(items)))]
        images = []
        for idx in chunks:
            # one CPU generator per image: its noise depends on its seed only, not on batch-mates
            gens = [torch.Generator("cpu").manual_seed(int(seeds[i])) for i in idx]
            kw = {k: ([v[i] for i in idx] if isinstance(v, list) else v) for k, v in extra.items()}
            with torch.inference_mode():
                out = self.pipe(prompt=[items[i].prompt for i in idx],
                                negative_prompt=[cfg.negative_prompt] * len(idx) if cfg.negative_prompt else None,
                                num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                                generator=gens, output_type="pil", **kw)
            images.extend(out.images)
        return images


class Txt2ImgGenerator(_DiffusersGenerator):
    """Text-to-image: one image per item from its prompt and seed."""

    def __init__(self, pipe, cfg):
        super().__init__(pipe, cfg, f"txt2img:{model_label(cfg.model)}")

    def generate(self, items: Sequence[Item], seeds: Sequence[int]) -> list:
        return self._call(items, seeds, height=self.size, width=self.size)


class Img2ImgGenerator(_DiffusersGenerator):
    """Image-to-image from a real guidance image (paper Table 5).

    ``intra``: the guide is a real image of the item's class ("class-wise guidance");
    ``inter``: a real image drawn uniformly from all real images "regardless of the class"
    (the paper's Inter-class Image Translation, after M2m), so it may be of the item's own
    class; ``img2img.exclude_own_class: true`` draws only from the other classes. The guide is
    drawn from a seed derived from (run seed, cell, index).
    """

    def __init__(self, pipe, cfg, plan: Plan, real: Manifest):
        mode = cfg.img2img.mode
        exclude = mode == "inter" and cfg.img2img.exclude_own_class
        super().__init__(pipe, cfg, f"img2img-{mode}{'-other' if exclude else ''}:{model_label(cfg.model)}")
        df = real.df[(real.df["split"] == cfg.img2img.split) & (real.df["source"] == "real")]
        if df.empty or "real" not in real.roots:
            raise SynaugError(f"img2img: the real manifest has no real {cfg.img2img.split} images to guide with")
        paths = np.asarray([str(real.roots["real"] / p) for p in df["path"]], dtype=object)
        names = df["class_name"].to_numpy()
        self._cands: dict[str, np.ndarray] = {}
        for cell in plan.cells:
            if cell.synthetic == 0 or cell.class_name in self._cands:
                continue
            if mode == "intra":
                mask = names == cell.class_name
            elif exclude:
                mask = names != cell.class_name
            else:
                mask = np.ones(len(names), dtype=bool)
            if not mask.any():
                raise SynaugError(f"img2img {mode}: the real manifest has no {cfg.img2img.split} image "
                                  f"{'of' if mode == 'intra' else 'outside'} class {cell.class_name!r} to guide with")
            self._cands[cell.class_name] = np.sort(paths[mask])
        self.run_seed = cfg.seed

    def identity(self, item: Item) -> str:
        """What decides ``item``'s image besides the config and prompt: its guide image."""
        return self.guide_of(item)

    def guide_of(self, item: Item) -> str:
        cand = self._cands[item.cell.class_name]
        rng = np.random.default_rng(derive_seed(self.run_seed, item.cell.key, item.index, purpose="guide"))
        return str(cand[int(rng.integers(len(cand)))])

    def generate(self, items: Sequence[Item], seeds: Sequence[int]) -> list:
        from PIL import Image

        guides = []
        for it in items:
            with Image.open(self.guide_of(it)) as im:
                guides.append(to_square(im, self.size, "bicubic"))
        return self._call(items, seeds, image=guides, strength=self.cfg.img2img.strength)
