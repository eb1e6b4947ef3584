"""Tiny randomly initialised diffusion pipelines, built in code, for tests and benchmarks.

No weights are downloaded: :func:`build_tiny_sd` makes a ~1.7M-parameter Stable Diffusion
pipeline (UNet, VAE, CLIP text encoder and a CLIP tokenizer from a small vocabulary written
here) and saves it with ``save_pretrained(..., safe_serialization=True)``. Tests then load the
folder through exactly the code path used for real weights (``from_pretrained`` on a folder).
The images it makes are noise-like: it checks plumbing (shapes, seeds, resume), not quality.
"""
from __future__ import annotations

from pathlib import Path

# A few whole words get their own tokens so prompts tokenize to short sequences; every other
# character falls back to byte-level tokens, so any prompt is encodable.
_WORDS = ["a", "photo", "of", "the", "in", "portrait", "face", "year", "old", "red", "cat", "dog"]


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable unicode symbol per byte value."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


def tiny_clip_tokenizer(max_length: int = 77):
    """A CLIP BPE tokenizer over the 256 byte symbols plus a few merged words."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges: list[tuple[str, str]] = []
    for w in _WORDS:
        # left-to-right merges: "p h" -> "ph", "ph o" -> "pho", ..., last one ends with </w>
        cur = w[0]
        for i, ch in enumerate(w[1:], start=1):
            right = ch + ("</w>" if i == len(w) - 1 else "")
            merges.append((cur, right))
            cur = cur + right
            vocab.setdefault(cur, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    merges = list(dict.fromkeys(merges))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def build_tiny_sd(folder: str | Path, seed: int = 0, sample_size: int = 32) -> Path:
    """Build, randomly initialise and save a tiny ``StableDiffusionPipeline``.

    Parameters
    ----------
    folder : path
        Where ``save_pretrained`` writes the pipeline (model_index.json + safetensors).
    seed : int
        Seeds the random initialisation, so the same seed gives the same weights.
    sample_size : int
        Native image size in pixels (the VAE downsamples by 2, the UNet runs at half of it).

    Returns
    -------
    pathlib.Path
        ``folder``, loadable with ``StableDiffusionPipeline.from_pretrained(folder)``.
    """
    folder = Path(folder)
    make_tiny_sd(seed, sample_size).save_pretrained(folder, safe_serialization=True)
    return folder


def make_tiny_sd(seed: int = 0, sample_size: int = 32):
    """The tiny pipeline of :func:`build_tiny_sd`, in memory (not saved)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if sample_size % 2:
        raise ValueError("sample_size must be even")
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        norm_num_groups=8, sample_size=sample_size,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build_tiny_clip(folder, seed: int = 0, image_size: int = 32):
    """A tiny random CLIPModel + processor saved to ``folder`` (tests: same load path as real CLIP)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    model = CLIPModel(cfg)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                                            crop_size={"height": image_size, "width": image_size}),
                         tokenizer=tok)
    model.save_pretrained(folder, safe_serialization=True)
    proc.save_pretrained(folder)
    return folder


def toy_image_manifest(folder, classes, per_class, groups=None, seed: int = 0, size: int = 32,
                       split: str = "train", ext: str = "png"):
    """Write small random images (class-tinted noise) and return their real-source Manifest.

    Parameters
    ----------
    folder : path
        Root of the images (``<class>/<group>/<i>.<ext>``); the manifest's ``real`` root.
    classes : list of str
    per_class : int
        Images per class (per (class, group) when ``groups`` is given).
    groups : list of str, optional
    """
    import numpy as np
    from PIL import Image

    from ..manifest import Manifest

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    rows = []
    for c, name in enumerate(classes):
        for g, gname in enumerate(groups or [None]):
            tint = rng.integers(0, 256, 3)
            for i in range(per_class):
                rel = f"{name}/{gname + '/' if gname else ''}{i:04d}.{ext}"
                arr = np.clip(tint + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr, "RGB").save(folder / rel)
                rows.append({"path": rel, "label": c, "group": g if gname else -1, "split": split})
    return Manifest.from_records(rows, classes, {"real": folder}, groups)
