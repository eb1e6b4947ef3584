"""The model a fit trains: the base Stable Diffusion pipeline, frozen, plus the trainable part
of one adapter (LoRA layers in the UNet's attention, or new token embeddings).

LoRA follows ``examples/text_to_image/train_text_to_image_lora.py`` of diffusers (peft
``LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=["to_k",
"to_q", "to_v", "to_out.0"])`` added with ``unet.add_adapter``; ``train_dreambooth_lora.py`` adds
``add_k_proj`` / ``add_v_proj``); textual inversion follows ``examples/textual_inversion/
textual_inversion.py`` (a new tokenizer token per class whose embedding alone is trained, the
rest of the text encoder frozen). Mixed precision as there: the frozen weights in fp16 / bf16,
the trainable ones in fp32.
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Sequence

from ...errors import SynaugError
from ...io import atomic_path
from ...prompts import display_name
from ..base import derive_seed
from .config import FitConfig
from .data import Unit, safe_name, token_of

ADAPTER = "synaug-fit"
LORA_FILE = "pytorch_lora_weights.safetensors"   # the name diffusers' save/load_lora_weights use
LORA_TARGETS = {"lora": ["to_k", "to_q", "to_v", "to_out.0"],
                "dreambooth_lora": ["to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj"]}


def precision(cfg: FitConfig, device: str):
    """(dtype of the frozen weights, whether fp16 needs a gradient scaler)."""
    import torch

    mp = cfg.mixed_precision
    cuda = str(device).startswith("cuda")
    if mp == "auto":
        mp = "fp16" if cuda else "no"
    if mp == "fp16" and not cuda:
        raise SynaugError("fit.mixed_precision fp16 needs a CUDA device; on the CPU use bf16 or no")
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mp], mp == "fp16"


def load_fit_pipeline(cfg: FitConfig, device: str):
    """The base pipeline (fp32, on ``device``) through generation's loader (safetensors only)."""
    from diffusers import StableDiffusionPipeline

    from ..config import GenerateConfig
    from ..diffusers_backend import load_pipeline

    if not cfg.model:
        raise SynaugError("fit needs a model: a Hugging Face id or a local diffusers folder (fit.model)")
    gcfg = GenerateConfig(model=cfg.model, local_files_only=cfg.local_files_only, dtype="fp32", scheduler="default")
    pipe = load_pipeline(gcfg, "txt2img", device)
    if not isinstance(pipe, StableDiffusionPipeline):
        raise SynaugError(f"fit works with Stable Diffusion 1.x / 2.x pipelines; {cfg.model} loads as "
                          f"{type(pipe).__name__}")
    return pipe


class FitModel:
    """The frozen pipeline parts, the training noise scheduler and the precision settings."""

    def __init__(self, pipe, cfg: FitConfig, device: str):
        import torch
        from diffusers import DDPMScheduler

        self.pipe, self.cfg, self.device = pipe, cfg, torch.device(device)
        self.unet, self.vae, self.text_encoder, self.tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
        # training adds noise with the DDPM forward process of the model's own betas / prediction type
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.dtype, self.needs_scaler = precision(cfg, device)
        for m in (self.unet, self.vae, self.text_encoder):
            m.requires_grad_(False)
        if self.dtype != torch.float32:
            from ..fullsize import quiet_diffusers

            with quiet_diffusers():
                self.unet.to(dtype=self.dtype)
                self.vae.to(dtype=self.dtype)
                if cfg.method != "textual_inversion":  # textual inversion trains inside the text encoder: fp32
                    self.text_encoder.to(dtype=self.dtype)
        self.unet.train()  # no dropout in SD's UNet; train() lets gradient checkpointing act
        if cfg.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if cfg.method == "textual_inversion":
                self.text_encoder.gradient_checkpointing_enable()
        self.base_embedding = self.text_encoder.get_input_embeddings()

    def autocast(self):
        import contextlib

        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def encode_text(self, tokenizer, captions: Sequence[str]):
        ids = tokenizer(list(captions), max_length=tokenizer.model_max_length, padding="max_length",
                        truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device), return_dict=False)[0]


def make_adapter(model: FitModel, unit: Unit):
    cls = TokenAdapter if model.cfg.method == "textual_inversion" else LoraAdapter
    return cls(model, unit)


class LoraAdapter:
    """LoRA layers in the UNet attention, fresh for each unit; initialised from a CPU generator
    seeded by (seed, unit) (peft's "gaussian" init: A ~ N(0, 1/r), B = 0), so the start does not
    depend on the device or on which units a process fitted before."""

    kind = "lora"

    def __init__(self, model: FitModel, unit: Unit):
        import torch
        from peft import LoraConfig

        from .apply import several_adapters_ok

        self.model, self.unit = model, unit
        cfg = model.cfg
        with several_adapters_ok():  # the previous unit's adapter was deleted; peft still warns
            model.unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.rank, init_lora_weights="gaussian",
                                              target_modules=LORA_TARGETS[cfg.method]), adapter_name=ADAPTER)
        model.unet.set_adapter(ADAPTER)
        self._params = {n: p for n, p in sorted(model.unet.named_parameters()) if p.requires_grad}
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, unit.key, 0, "fit-init"))
        with torch.no_grad():
            for n, p in self._params.items():
                p.data = p.data.float()  # trainable weights in fp32 (cast_training_params)
                if ".lora_A." in n:
                    p.copy_(torch.randn(p.shape, generator=g) / cfg.rank)
                else:
                    p.zero_()
        self._text: dict[str, object] = {}

    def params(self) -> dict:
        return self._params

    def encode(self, captions: Sequence[str]):
        import torch

        missing = [c for c in dict.fromkeys(captions) if c not in self._text]
        if missing:  # the text encoder is frozen: one encoding per caption
            with torch.no_grad():
                for c, e in zip(missing, self.model.encode_text(self.model.tokenizer, missing)):
                    self._text[c] = e
        return torch.stack([self._text[c] for c in captions])

    def state(self) -> dict:
        from peft.utils import get_peft_model_state_dict

        return {k: v.detach().to("cpu").contiguous()
                for k, v in get_peft_model_state_dict(self.model.unet, adapter_name=ADAPTER).items()}

    def save(self, unit_dir: Path) -> dict[str, str]:
        """``pytorch_lora_weights.safetensors`` via ``save_lora_weights`` (as the recipes); one
        file for every class of the unit."""
        from diffusers.utils import convert_state_dict_to_diffusers

        tmp = unit_dir / ".lora-save.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        type(self.model.pipe).save_lora_weights(save_directory=tmp, unet_lora_layers=convert_state_dict_to_diffusers(
            self.state()), safe_serialization=True, weight_name=LORA_FILE)
        os.replace(tmp / LORA_FILE, unit_dir / LORA_FILE)
        shutil.rmtree(tmp, ignore_errors=True)
        return {c: LORA_FILE for c in self.unit.classes}

    def close(self) -> None:
        self.model.unet.delete_adapters(ADAPTER)


class LearnedTokens:
    """Factory for the embedding module that serves the base vocabulary from the frozen table
    and the new tokens from trainable vectors (only those get gradients and optimizer state)."""

    @staticmethod
    def build(base, ids: Sequence[int], init):
        import torch
        from torch import nn

        class _Learned(nn.Module):
            def __init__(self):
                super().__init__()
                self.base = base
                self.n_base = base.num_embeddings
                self.vectors = nn.Parameter(init.detach().float().clone())
                lut = torch.full((max(ids) + 1,), -1, dtype=torch.long)
                lut[torch.as_tensor(list(ids))] = torch.arange(len(ids))
                self.register_buffer("lut", lut.to(base.weight.device), persistent=False)

            def forward(self, input_ids):
                out = self.base(input_ids.clamp(max=self.n_base - 1))
                row = self.lut[input_ids.clamp(max=len(self.lut) - 1)]
                hit = (row >= 0) & (input_ids < len(self.lut))
                if hit.any():
                    out = torch.where(hit[..., None], self.vectors[row.clamp(min=0)].to(out.dtype), out)
                return out

        return _Learned().to(base.weight.device)


class TokenAdapter:
    """Textual inversion: a token ``<class>`` per class of the unit, its embedding initialised
    with the mean embedding of the class name's tokens (diffusers' script copies one
    initializer token), added to a copy of the tokenizer so units never see each other's tokens."""

    kind = "embedding"

    def __init__(self, model: FitModel, unit: Unit):
        self.model, self.unit = model, unit
        self.tokens = [token_of(c) for c in unit.classes]
        self.tokenizer = copy.deepcopy(model.tokenizer)
        added = self.tokenizer.add_tokens(self.tokens)
        if added != len(self.tokens):
            raise SynaugError(f"fit: a class token of {', '.join(self.tokens)} is already in the tokenizer's vocabulary")
        ids = self.tokenizer.convert_tokens_to_ids(self.tokens)
        base = model.base_embedding
        init = [base.weight[model.tokenizer.encode(display_name(c), add_special_tokens=False)].float().mean(0)
                for c in unit.classes]
        import torch

        self.module = LearnedTokens.build(base, ids, torch.stack(init))
        model.text_encoder.set_input_embeddings(self.module)
        model.text_encoder.train()

    def params(self) -> dict:
        return {"vectors": self.module.vectors}

    def encode(self, captions: Sequence[str]):
        return self.model.encode_text(self.tokenizer, captions)

    def state(self) -> dict:
        v = self.module.vectors.detach().to("cpu").contiguous()
        return {t: v[i: i + 1].clone() for i, t in enumerate(self.tokens)}

    def save(self, unit_dir: Path) -> dict[str, str]:
        """One diffusers textual-inversion file per class: ``{token: (1, dim)}`` in safetensors
        (what ``save_progress`` writes and ``load_textual_inversion`` reads)."""
        from safetensors.torch import save_file

        files = {}
        state = self.state()
        for c, t in zip(self.unit.classes, self.tokens):
            name = "learned_embeds.safetensors" if len(self.unit.classes) == 1 else \
                f"learned_embeds-{safe_name(c)}.safetensors"
            with atomic_path(unit_dir / name) as tmp:
                save_file({t: state[t]}, str(tmp), metadata={"format": "pt"})
            files[c] = name
        return files

    def close(self) -> None:
        self.model.text_encoder.set_input_embeddings(self.model.base_embedding)
