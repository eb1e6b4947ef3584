"""Generation config (YAML, validated; unknown keys are errors).

Example ``gen.yaml`` for Stable Diffusion on a GPU::

    backend: txt2img
    model: CompVis/stable-diffusion-v1-4   # SD 1.4; or a local folder; random:sd15 for cost only
    dtype: fp16
    scheduler: dpm++
    steps: 10
    batch_size: 16
    resolution: 32          # CIFAR; 256 for ImageNet100-LT

and for the offline pool demo::

    backend: pool
    pool: {manifest: heldout.parquet, shift: synthetic-domain}
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from ..config import Strict, drop_defaults

BACKENDS = ("txt2img", "img2img", "pool")
SCHEDULERS = ("dpm++", "dpm++-karras", "euler", "euler-a", "ddim", "default")


class PoolConfig(Strict):
    """Take images for each cell from an existing labelled set (no diffusion model runs):
    pre-generated images (``dataset: shared-sd14``), or real images (the web-crawled baseline)."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("manifest", "root")
    MAYBE_PATH_MAPS: ClassVar[tuple[str, ...]] = ("options",)

    manifest: str | None = None          # a manifest file of the pool, or "heldout" in `synaug run`
    dataset: str | None = None           # or a registered dataset, e.g. shared-sd14 (Stable Diffusion 1.4)
    root: str | None = None              # root of a plain table's rows / the dataset's data root
    options: dict = Field(default_factory=dict)  # dataset adapter options
    split: str | None = "train"          # only rows of this split (None: all rows)
    name: str | None = None              # pool name (pool:<name> for rows without a generator)
    shift: Literal["none", "synthetic-domain"] = "none"
    match_groups: bool = True            # group cells take images of the same group name
    # a cell needing more images than the pool has reuses them (each once, then again)
    replacement: bool = False

    @model_serializer(mode="wrap")
    def _omit_replacement_off(self, handler):
        # left out while off: the fingerprints (cache keys) of runs made before the key existed stay valid
        out = handler(self)
        if isinstance(out, dict) and not self.replacement:
            out.pop("replacement", None)
        return out


class Img2ImgConfig(Strict):
    """diffusers image-to-image from a real guidance image (the paper's Table 5 baselines)."""

    mode: Literal["intra", "inter"] = "intra"   # intra: same class; inter: any real image
    strength: float = Field(0.75, gt=0.0, le=1.0)
    # inter: the paper draws guides "regardless of the class" (any real image, the item's own
    # class included); true = only images of other classes (the earlier synaug behaviour)
    exclude_own_class: bool = False
    split: str = "train"                        # real rows guides are drawn from


class ClipFilterConfig(Strict):
    """Optional CLIP check (beyond the paper; off by default)."""

    MAYBE_PATH_KEYS: ClassVar[tuple[str, ...]] = ("model",)

    enabled: bool = False
    model: str | None = None                    # CLIPModel id or folder (e.g. openai/clip-vit-base-patch32)
    threshold: float = 0.2                      # cosine similarity image <-> "a photo of {class}"
    max_retries: int = Field(2, ge=0)           # extra seeds tried; the best-scoring image is kept
    template: str = "a photo of {class}"
    local_files_only: bool = False


class ScorerConfig(Strict):
    """The model that scores candidates (``synaug run`` trains it as its ``scorer`` stage).

    ``round1``: a SYNAuG model trained on real + a random selection of the candidates (the
    first round of the feedback loop), then fine-tuned as the run's ``finetune`` section says; it
    has seen synthetic images of every class, so it is the scorer meant for few-shot classes.
    ``real``: the same training on the real training rows only: cheaper, but a long-tailed model
    knows little of its few-shot classes (its scores there are close to noise).
    ``checkpoint``: a model you trained (``path``: a run folder or ``.safetensors``); its classes
    must be the plan's.
    """

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("path",)  # relative to the config file

    model: Literal["round1", "real", "checkpoint"] = "round1"
    path: str | None = None                   # checkpoint: run folder or model .safetensors
    epochs: int | None = Field(None, ge=1)    # its training epochs (default: train.epochs)
    finetune: bool = True                     # fine-tune its head on the balanced real subset first


class SelectConfig(Strict):
    """Selection from a larger candidate set (beyond the paper; off by default).

    The backend makes ``candidates`` x the images each cell needs (the pool offers that many
    distinct images, txt2img generates them), and the ``selector`` keeps the needed number:

    * ``random``: a seeded draw (``candidates: 1`` is exactly today's generation);
    * ``confidence``: the scorer's probability of the intended class (ranked by its log); ``keep`` ``most`` (most
      confident), ``least`` (hardest) or ``middle`` (the uncertain middle of the ranking);
    * ``typicality``: cosine similarity, in the scorer's feature space, to the real images of the
      class: their centroid (``knn: 0``) or the mean over the ``knn`` nearest;
    * ``diversity``: k-center greedy coverage of the cell's candidates (no near-duplicates);
    * ``typical-diverse``: the ``typical_share`` most typical candidates, then k-center among them;
    * ``rotate``: keeps every candidate and splits each cell's into ``candidates`` rounds of the
      needed number, in the backend's order (round 0 = today's images); training uses round
      ``epoch mod candidates`` of the synthetic rows in each epoch (a new set of images per
      epoch at the same number of images per epoch: all ``candidates`` x the images are used).
    """

    candidates: int = Field(1, ge=1)
    selector: Literal["random", "confidence", "typicality", "diversity", "typical-diverse", "rotate"] = "random"
    keep: Literal["most", "least", "middle"] = "most"
    knn: int = Field(0, ge=0)
    typical_share: float = Field(0.5, gt=0, le=1)
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)

    @model_validator(mode="after")
    def _check(self):
        if self.selector != "random" and self.candidates < 2:
            raise ValueError(f"selector {self.selector} keeps as many images as it is offered with candidates 1: "
                             "set select.candidates >= 2")
        if self.scorer.model == "checkpoint" and not self.scorer.path:
            raise ValueError("select.scorer.model checkpoint needs select.scorer.path")
        return self

    @property
    def active(self) -> bool:
        """Whether the run selects (anything else is today's generation, image for image)."""
        return self.candidates > 1 or self.selector != "random"

    @property
    def needs_scorer(self) -> bool:
        return self.selector not in ("random", "rotate")


class GenerateConfig(Strict):
    """Everything ``synaug generate`` needs besides the plan. See ``synaug generate --help``."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("prompts", "adapters")
    MAYBE_PATH_KEYS: ClassVar[tuple[str, ...]] = ("model", "modifiers")  # also Hub ids / shipped names

    backend: Literal["txt2img", "img2img", "pool"] = "txt2img"
    # diffusion model (txt2img / img2img)
    model: str | None = None
    pipeline: Literal["auto", "sd", "sdxl"] = "auto"
    local_files_only: bool = False
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"   # auto: fp16 on CUDA, fp32 on CPU
    device: str = "auto"                                      # auto: this rank's GPU, else CPU
    scheduler: Literal["dpm++", "dpm++-karras", "euler", "euler-a", "ddim", "default"] = "dpm++"
    steps: int = Field(10, ge=1)
    guidance_scale: float = Field(7.5, ge=0.0)
    negative_prompt: str = ""
    gen_size: int | None = Field(None, ge=8)                  # generation side; None: model's native
    attention_slicing: bool = False
    channels_last: bool = False     # UNet + VAE in channels_last memory format (GPUs)
    compile_unet: bool | Literal["default", "reduce-overhead", "max-autotune"] = False  # torch.compile the UNet
    batch_invariant: bool = False   # denoise images one by one: bit-identical whatever batch size
    adapters: str | None = None     # folder of a `synaug fit`: each class is generated by its fitted adapter
    # output
    batch_size: int = Field(8, ge=1)
    resolution: int = Field(32, ge=1)                         # saved images are resolution^2 RGB PNG
    resize_filter: Literal["lanczos", "bicubic", "box"] = "lanczos"
    seed: int = 0
    # prompts
    task: Literal["cifar", "imagenet", "utkface", "waterbirds", "plain"] = "cifar"
    template: str | None = None
    modifiers: str = "auto"       # auto | none | cifar10 | cifar100 | path to a JSON file
    prompts: str | None = None    # JSON {class: [full prompts]} overriding the template
    # backends
    pool: PoolConfig = PoolConfig()
    img2img: Img2ImgConfig = Img2ImgConfig()
    clip_filter: ClipFilterConfig = ClipFilterConfig()
    select: SelectConfig = SelectConfig()  # selection from more candidates (synaug run; off by default)
    verify_on_resume: bool = True  # decode finished images again before trusting them

    @model_serializer(mode="wrap")
    def _dump(self, handler):  # at its default, the newer section leaves cached runs' keys unchanged
        return drop_defaults(self, handler(self), ("select", "adapters"))

    @field_validator("model")
    @classmethod
    def _no_blank_model(cls, v):
        if v is not None and not v.strip():
            raise ValueError("model must not be empty")
        return v


# Keys that do not change which image a (cell, index) gets; everything else must match on resume.
NON_RESULT_KEYS = {"batch_size", "device", "verify_on_resume", "attention_slicing", "local_files_only",
                   "channels_last", "compile_unet"}
