"""SYNAuG step 1: make the synthetic images a plan asks for.

Backends: ``txt2img`` and ``img2img`` (diffusers), ``pool`` (images from an existing
manifest). Entry point :func:`generate`; configuration :class:`GenerateConfig`; a tiny
random Stable Diffusion pipeline for tests in :mod:`synaug.generate.tiny`. diffusers and
transformers are imported only when a diffusion backend is used. Selection from more
candidates (``select``, beyond the paper; ``synaug run`` only): :mod:`synaug.generate.select`.
"""
from .base import Item, derive_seed, plan_items
from .config import GenerateConfig, SelectConfig
from .runner import generate, merge

__all__ = ["GenerateConfig", "SelectConfig", "Item", "derive_seed", "generate", "merge", "plan_items"]
