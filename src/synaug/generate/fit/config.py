"""Fit config (YAML, validated; unknown keys are errors): ``synaug fit --config`` or the ``fit:``
section of a ``synaug run`` config.

Example (the paper's "class distribution fitting", Table 5, on a GPU)::

    method: dreambooth_lora      # lora | textual_inversion | dreambooth_lora
    per: class                   # one adapter per class; dataset: one for all classes
    model: CompVis/stable-diffusion-v1-4   # synaug run: taken from generate.model
    steps: 500
    resolution: 512
    prior_preservation: true
    mixed_precision: fp16

Defaults follow the diffusers training recipes (``examples/text_to_image/train_text_to_image_lora.py``,
``examples/textual_inversion/textual_inversion.py``, ``examples/dreambooth/train_dreambooth_lora.py``
and their READMEs): LoRA rank 4 with alpha = rank, AdamW (weight decay 1e-2), a constant learning
rate, gradient-norm clipping at 1.0, batch size 1, a checkpoint every 100 steps.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ...config import Strict

METHODS = ("lora", "textual_inversion", "dreambooth_lora")

#: steps and learning rate when the config leaves them out (the recipes' README commands:
#: DreamBooth LoRA 500 steps at 1e-4, textual inversion 3000 steps at 5e-4)
METHOD_DEFAULTS = {"lora": {"steps": 500, "lr": 1e-4},
                   "dreambooth_lora": {"steps": 500, "lr": 1e-4},
                   "textual_inversion": {"steps": 3000, "lr": 5e-4}}


class FitConfig(Strict):
    """Fine-tune Stable Diffusion on the real training images of each class (or of the whole
    dataset) so that generation samples from the user's class distributions."""

    method: Literal["lora", "textual_inversion", "dreambooth_lora"] = "lora"
    per: Literal["class", "dataset"] = "class"
    MAYBE_PATH_KEYS: ClassVar[tuple[str, ...]] = ("model",)  # a Hub id or a folder next to the config

    model: str | None = None                 # a Hub id or diffusers folder; synaug run: generate.model
    local_files_only: bool = False
    steps: int | None = Field(None, ge=1)    # optimizer steps per adapter (method default when left out)
    lr: float | None = Field(None, gt=0)     # constant learning rate (method default when left out)
    rank: int = Field(4, ge=1)               # LoRA rank (alpha = rank)
    resolution: int | None = Field(None, ge=8)   # training side in pixels; None: the model's native size
    batch_size: int = Field(1, ge=1)
    weight_decay: float = Field(1e-2, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    random_flip: bool = True
    # caption "a photo of {class}": None = the generation template without {modifier}
    template: str | None = None
    identifier: str = "sks"                  # dreambooth_lora: the rare word before the class name
    prior_preservation: bool = False         # dreambooth_lora: also fit base-model images of the class
    prior_loss_weight: float = Field(1.0, ge=0)
    num_class_images: int = Field(100, ge=1)     # prior images per class
    prior_steps: int = Field(25, ge=1)           # denoising steps of the prior images
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"   # auto: fp16 on CUDA, no on CPU
    gradient_checkpointing: bool = False
    save_every: int = Field(100, ge=1)       # checkpoint (adapter + optimizer) every N steps
    device: str = "auto"                     # auto: this rank's GPU, else CPU
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data):
        if isinstance(data, dict):
            base = METHOD_DEFAULTS.get(data.get("method", "lora"), {})
            data = {**data, **{k: v for k, v in base.items() if data.get(k) is None}}
        return data

    @field_validator("model", "identifier")
    @classmethod
    def _not_blank(cls, v):
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, v):
        if v is not None and v % 8:
            raise ValueError("must be a multiple of 8 (the VAE and UNet halve it several times)")
        return v

    @model_validator(mode="after")
    def _prior_needs_dreambooth(self):
        if self.prior_preservation and self.method != "dreambooth_lora":
            raise ValueError(f"prior_preservation is part of method dreambooth_lora, not {self.method}")
        return self


# keys that do not change the adapter a fit makes (free to change when resuming)
NON_RESULT_KEYS = {"device", "save_every", "local_files_only", "gradient_checkpointing"}
