"""Preflight memory estimate of a fit, before any step runs.

weights (every module at its dtype) + trainable state (fp32 weight, gradient and AdamW's two
moments: 16 bytes a parameter) + the activations the backward pass keeps. The last term is
counted, not guessed: the UNet (with the same adapter, dtype and checkpointing) runs once on
PyTorch's ``meta`` device at the fit's batch and resolution, and every tensor saved for backward
is summed (``torch.autograd.graph.saved_tensors_hooks``). It follows the eager attention path,
which keeps the attention matrices; flash / memory-efficient attention on a GPU keeps less, so
the estimate is high there. Not counted: transient buffers (VAE encoding, workspaces) and the
CUDA context.
"""
from __future__ import annotations

GiB = 1024 ** 3


_CACHE: dict[str, tuple[int, int]] = {}


def saved_activation_bytes(unet_config: dict, method: str, rank: int, batch: int, latent: int, dtype,
                           checkpointing: bool, text_dim: int, text_len: int = 77) -> tuple[int, int]:
    """(bytes saved for backward by one UNet forward, trainable UNet parameters) on ``meta``
    (a few seconds for SD 1.5; remembered per process)."""
    import json

    key = json.dumps([unet_config, method, rank, batch, latent, str(dtype), checkpointing, text_dim, text_len],
                     sort_keys=True, default=str)
    if key not in _CACHE:
        _CACHE[key] = _saved_activation_bytes(unet_config, method, rank, batch, latent, dtype, checkpointing,
                                              text_dim, text_len)
    return _CACHE[key]


def _saved_activation_bytes(unet_config, method, rank, batch, latent, dtype, checkpointing, text_dim, text_len):
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from ..fullsize import quiet_diffusers
    from .model import LORA_TARGETS

    with torch.device("meta"), quiet_diffusers():
        unet = UNet2DConditionModel.from_config(unet_config).to(dtype)
        unet.requires_grad_(False)
        if method != "textual_inversion":
            unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                        target_modules=LORA_TARGETS[method]))
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    own = {p.untyped_storage()._cdata for p in unet.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st._cdata not in own:
            seen[st._cdata] = st.nbytes()
        return t

    x = torch.zeros(batch, unet.config.in_channels, latent, latent, device="meta", dtype=dtype)
    text = torch.zeros(batch, text_len, text_dim, device="meta", dtype=dtype,
                       requires_grad=method == "textual_inversion")
    t = torch.zeros(batch, dtype=torch.long, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda v: v):
        unet(x, t, text, return_dict=False)
    return sum(seen.values()), trainable


def estimate(model, resolution: int, n_tokens: int = 1) -> dict:
    """Bytes a fit of ``model`` (a :class:`~synaug.generate.fit.model.FitModel`) needs;
    ``n_tokens``: classes a textual-inversion unit learns at once."""
    cfg = model.cfg
    weights = sum(p.numel() * p.element_size() for m in (model.unet, model.vae, model.text_encoder)
                  for p in m.parameters())
    batch = cfg.batch_size * (2 if cfg.prior_preservation else 1)
    text_dim = model.unet.config.cross_attention_dim
    latent = max(resolution // model.pipe.vae_scale_factor, 1)
    acts, lora_params = saved_activation_bytes(dict(model.unet.config), cfg.method, cfg.rank, batch, latent,
                                               model.dtype, cfg.gradient_checkpointing, text_dim)
    trainable = lora_params if cfg.method != "textual_inversion" else text_dim * n_tokens
    train_state = 16 * trainable
    return {"weights": weights, "trainable_params": trainable, "train_state": train_state,
            "activations": acts, "total": weights + train_state + acts, "batch": batch,
            "resolution": resolution, "dtype": str(model.dtype).replace("torch.", ""),
            "gradient_checkpointing": cfg.gradient_checkpointing}


def describe(est: dict, free: int | None = None) -> str:
    line = (f"fit memory estimate: {est['total'] / GiB:.2f} GiB = weights {est['weights'] / GiB:.2f} + adapter and "
            f"optimizer {est['train_state'] / 2**20:.1f} MiB + saved activations {est['activations'] / GiB:.2f} "
            f"(batch {est['batch']}, {est['resolution']} px, {est['dtype']}, gradient checkpointing "
            f"{'on' if est['gradient_checkpointing'] else 'off'}; eager attention, no CUDA context)")
    if free is not None:
        line += f"; device free {free / GiB:.2f} GiB"
    return line


def device_free(device) -> int | None:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return None
