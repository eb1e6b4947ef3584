"""Generation with fitted adapters (``generate.adapters: <fit folder>``), txt2img and img2img alike.

Each image is made by the adapter of its class: LoRA weights through diffusers'
``pipe.load_lora_weights`` / ``set_adapters`` (a bounded number stay loaded; a batch is split
where the class, hence the adapter, changes), textual-inversion tokens through
``pipe.load_textual_inversion`` (all loaded once). The class name in each prompt is replaced by
what stood for the class when fitting ("<cat>", "sks cat"); every manifest row records that
prompt, the adapter file (``adapter``) and its sha256 (``adapter_sha256``).
"""
from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from contextlib import contextmanager
from typing import Sequence

from ...errors import SynaugError
from ...plan import Plan
from ...prompts import display_name
from .store import AdapterSet, ClassAdapter

MAX_LOADED = 8  # LoRA adapters kept on the UNet at once (each is a few MB for SD 1.x at rank 4)


def with_adapters(gen, cfg, plan: Plan):
    """``gen`` itself without ``cfg.adapters``, else ``gen`` wrapped to use them."""
    if not cfg.adapters:
        return gen
    if cfg.backend == "pool" or not hasattr(gen, "pipe"):
        raise SynaugError("generate.adapters needs a diffusion backend (txt2img or img2img), not the pool")
    if cfg.compile_unet:
        raise SynaugError("generate.adapters cannot be combined with compile_unet (adapters change the UNet)")
    return AdaptedGenerator(gen, AdapterSet.read(cfg.adapters), plan, cfg.model)


def fitted_prompt(prompt: str, entry: ClassAdapter) -> str:
    """``prompt`` with the class name (as prompts show it) replaced by the fitted subject."""
    name = display_name(entry.class_name)
    if entry.subject == name:
        return prompt
    pattern = re.compile(rf"(?<![\w<]){re.escape(name)}(?![\w>])")
    if not pattern.search(prompt):
        raise SynaugError(f"prompt {prompt!r} does not name class {name!r}, so its fitted "
                          f"{'token' if entry.kind == 'embedding' else 'identifier'} {entry.subject!r} has no place; "
                          "use a template with {class}")
    return pattern.sub(entry.subject, prompt)


class AdaptedGenerator:
    """Wraps a diffusers generator (``Txt2ImgGenerator`` / ``Img2ImgGenerator``)."""

    def __init__(self, inner, adapters: AdapterSet, plan: Plan, model: str | None):
        self.inner, self.adapters, self.pipe = inner, adapters, inner.pipe
        self.name = f"{inner.name}+{adapters.label}"
        _check_model(adapters, self.pipe, model)
        needed = list(dict.fromkeys(c.class_name for c in plan.cells if c.synthetic > 0))
        self.entries = {e.class_name: e for e in adapters.verify(needed)}
        self._loaded: OrderedDict[str, None] = OrderedDict()
        tokens = [e for e in self.entries.values() if e.kind == "embedding"]
        if tokens:
            from ..fullsize import quiet_diffusers

            with quiet_diffusers():
                self.pipe.load_textual_inversion([str(e.path) for e in tokens], token=[e.token for e in tokens])

    def entry(self, item) -> ClassAdapter:
        return self.entries[item.cell.class_name]

    def provenance(self, item) -> dict:
        e = self.entry(item)
        return {"generator": self.name, "source_file": "", "prompt": fitted_prompt(item.prompt, e),
                "adapter": str(e.path), "adapter_sha256": e.sha256}

    def generate(self, items: Sequence, seeds: Sequence[int]) -> list:
        images: list = []
        start = 0
        while start < len(items):  # runs of consecutive items with one adapter
            unit = self.entry(items[start]).unit
            end = start + 1
            while end < len(items) and self.entry(items[end]).unit == unit:
                end += 1
            self._activate(self.entry(items[start]))
            run = [dataclasses.replace(it, prompt=fitted_prompt(it.prompt, self.entry(it))) for it in items[start:end]]
            images.extend(self.inner.generate(run, list(seeds[start:end])))
            start = end
        return images

    def _activate(self, e: ClassAdapter) -> None:
        if e.kind != "lora":
            return
        if e.unit not in self._loaded:
            from ..fullsize import quiet_diffusers

            if len(self._loaded) >= MAX_LOADED:
                old, _ = self._loaded.popitem(last=False)
                self.pipe.delete_adapters(old)
            with quiet_diffusers(), several_adapters_ok():  # a UNet-only file has no text-encoder keys: expected
                self.pipe.load_lora_weights(str(e.path.parent), weight_name=e.path.name, adapter_name=e.unit)
            self._loaded[e.unit] = None
        self._loaded.move_to_end(e.unit)
        self.pipe.set_adapters([e.unit])


@contextmanager
def several_adapters_ok():
    """peft warns when a second adapter joins a model; keeping several is what we mean to do."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        yield


def _check_model(adapters: AdapterSet, pipe, model: str | None) -> None:
    arch = adapters.index.get("arch")
    if arch and arch != unet_arch(pipe):
        raise SynaugError(f"adapters in {adapters.folder} were fitted on {adapters.index.get('model_label')} "
                          f"(architecture {arch}), not on this model ({unet_arch(pipe)})")


def unet_arch(pipe) -> dict:
    c = pipe.unet.config
    return {"cross_attention_dim": c.cross_attention_dim, "block_out_channels": list(c.block_out_channels),
            "text_hidden_size": pipe.text_encoder.config.hidden_size}

