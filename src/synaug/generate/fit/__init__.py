"""Fit the generator to the user's classes before generating (the paper's "class distribution
fitting", Table 5; Diff-Mix, DA-Fusion): LoRA, textual inversion or DreamBooth-LoRA fine-tuning
of Stable Diffusion on each class's real training images (or one adapter for the dataset).

Entry points: :func:`fit` (``synaug fit``; the ``fit:`` stage of ``synaug run``),
:class:`FitConfig`, :class:`AdapterSet` (what generation loads, ``generate.adapters``).
"""
from .config import FitConfig
from .runner import fit
from .store import AdapterSet

__all__ = ["AdapterSet", "FitConfig", "fit"]
