"""The training objective of every fit method: noise-prediction MSE on the latents of real
images, as in diffusers' ``train_text_to_image_lora.py``, ``textual_inversion.py`` and
``train_dreambooth_lora.py``.

``latents = vae.encode(x).latent_dist.sample() * scaling_factor``; ``t ~ U{0, T-1}``;
``noisy = scheduler.add_noise(latents, noise, t)``; the target is ``noise`` for
``prediction_type: epsilon`` and ``scheduler.get_velocity(latents, noise, t)`` for
``v_prediction`` (SD 2.x at 768 px); ``loss = mse(unet(noisy, t, text).float(), target.float())``.
DreamBooth's prior preservation adds ``prior_loss_weight * mse`` over base-model images of the
class, concatenated to the batch. Every random number (latent sample, noise, timesteps, flips)
comes from one CPU generator per step, so a step is the same on any device and after a resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class Batch:
    pixels: "torch.Tensor"        # (B, 3, H, W) in [-1, 1]: instance images, then prior images
    captions: list[str]
    n_instance: int


def prediction_target(scheduler, latents, noise, timesteps):
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    from ...errors import SynaugError

    raise SynaugError(f"fit: the model's scheduler has prediction_type {kind!r}; epsilon and v_prediction are supported")


def diffusion_loss(model, adapter, batch: Batch, gen, prior_weight: float = 1.0):
    """The recipes' loss for one batch; ``gen`` is this step's CPU ``torch.Generator``."""
    import torch
    import torch.nn.functional as F

    dev = model.device
    with model.autocast():
        with torch.no_grad():
            dist = model.vae.encode(batch.pixels.to(dev, model.dtype)).latent_dist
            latents = dist.sample(generator=gen) * model.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen).to(latents)
        steps = model.scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (latents.shape[0],), generator=gen).to(dev)
        noisy = model.scheduler.add_noise(latents, noise, t)
        text = adapter.encode(batch.captions)
        pred = model.unet(noisy, t, text.to(model.dtype), return_dict=False)[0]
    if pred.shape[1] == 2 * latents.shape[1]:  # a learned-variance UNet: fit the mean only (as the recipe)
        pred = pred.chunk(2, dim=1)[0]
    target = prediction_target(model.scheduler, latents, noise, t)
    n = batch.n_instance
    loss = F.mse_loss(pred[:n].float(), target[:n].float(), reduction="mean")
    if n < len(pred):
        loss = loss + prior_weight * F.mse_loss(pred[n:].float(), target[n:].float(), reduction="mean")
    return loss


def fixed_draw_loss(model, adapter, bank, captions: Sequence[str], seed: int, key: str, draws: int = 8,
                    batch_size: int = 1) -> float:
    """Mean loss over ``draws`` fixed (image, noise, timestep) draws of the unit's images: the
    same numbers before and after a fit, so "it lowered the loss" is a like-for-like comparison
    (the per-step training loss varies with the random timestep far more than with the fit)."""
    import torch

    from ..base import derive_seed
    from .data import Order

    order = Order(len(bank), 1, seed, key, purpose="fit-eval")
    idx = [order.indices(i)[0] for i in range(draws)]
    total = 0.0
    with torch.no_grad():
        for s in range(0, draws, batch_size):
            chunk = idx[s: s + batch_size]
            gen = torch.Generator().manual_seed(derive_seed(seed, key, s, "fit-eval-noise"))
            b = Batch(bank.batch(chunk, [False] * len(chunk)), [captions[i] for i in chunk], len(chunk))
            total += float(diffusion_loss(model, adapter, b, gen)) * len(chunk)
    return total / draws
