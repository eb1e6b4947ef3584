"""Configs of ``synaug train`` / ``synaug finetune`` (YAML, validated, unknown keys are errors).

Defaults reproduce the CIFAR-LT recipe used by LDAM-DRW and the paper's ResNet-32 runs:
SGD lr 0.1, momentum 0.9, weight decay 2e-4, batch 128, 200 epochs, 5 linear-warmup
epochs, lr x0.01 at epoch 160 and x0.0001 at 180.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from ..config import Strict

ALGORITHMS = ("ce", "resample", "reweight", "balanced_softmax", "ldam_drw", "group_dro",
              "weight_balancing")


class ModelConfig(Strict):
    name: str = "resnet32"
    head: Literal["auto", "linear", "cosine"] = "auto"  # auto: cosine for ldam_drw, else linear
    width: Optional[int] = Field(None, ge=1)             # CIFAR ResNets only (16 = paper)
    cifar_stem: bool = False                             # torchvision ResNets only
    pretrained: bool = False                             # only weights already cached locally
    kwargs: dict = Field(default_factory=dict)           # passed on to timm.create_model


class OptimConfig(Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(2e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(Strict):
    name: Literal["multistep", "cosine", "constant"] = "multistep"
    warmup_epochs: int = Field(5, ge=0)
    milestones: list[int] = Field(default_factory=lambda: [160, 180])
    factors: list[float] = Field(default_factory=lambda: [0.01, 0.0001])  # lr x factor from milestone on
    min_lr: float = Field(0.0, ge=0)  # cosine floor

    @model_validator(mode="after")
    def _check(self):
        if len(self.milestones) != len(self.factors):
            raise ValueError("schedule.milestones and schedule.factors must have the same length")
        if sorted(self.milestones) != self.milestones:
            raise ValueError("schedule.milestones must be increasing")
        return self


class MixConfig(Strict):
    """Batch-level Mixup / CutMix over real and synthetic rows (drawn per batch on the host,
    applied on the device inside the training step; see ``synaug.train.step``).

    A batch is offered for mixing with probability ``prob``; with both mixers on, one of them
    is picked uniformly. Mixup then mixes it (every offered batch); CutMix pastes a box into it
    with probability ``cutmix_prob`` (CutMix's CIFAR recipe: 0.5), else it stays unmixed.
    """

    mixup: bool = True
    mixup_alpha: float = Field(1.0, gt=0)
    cutmix: bool = False
    cutmix_alpha: float = Field(1.0, gt=0)
    cutmix_prob: float = Field(0.5, ge=0, le=1)  # CutMix applied to this share of the batches offered
    prob: float = Field(1.0, ge=0, le=1)  # share of batches offered for mixing


class AugmentConfig(Strict):
    crop_padding: int = Field(4, ge=0)    # random crop after zero padding (0 = off)
    flip: bool = True
    random_resized_crop: bool = False     # large images (streaming path): RandomResizedCrop
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)


class DataConfig(Strict):
    mode: Literal["auto", "memory", "stream"] = "auto"  # memory: decoded uint8 tensor; stream: DataLoader
    image_size: Optional[int] = Field(None, ge=8)       # resize to a square of this size (default: as stored)
    memory_limit_mb: int = Field(4096, ge=1)            # auto picks memory below this
    cache_dir: Optional[str] = None                     # default: $SYNAUG_CACHE/tensors
    num_workers: int = Field(2, ge=0)                   # streaming path / decoding threads
    eval_batch_size: int = Field(512, ge=1)


class ResampleConfig(Strict):
    by: Literal["class", "cell"] = "class"  # cell = class x group


class ReweightConfig(Strict):
    kind: Literal["inverse", "effective"] = "effective"
    beta: float = Field(0.9999, ge=0, lt=1)  # effective number (Cui et al., 2019)


class LDAMConfig(Strict):
    max_m: float = Field(0.5, gt=0)  # largest margin (the rarest class)
    s: float = Field(30.0, gt=0)
    drw_epoch: int = Field(160, ge=0)  # re-weighting starts at this epoch (0-based)
    beta: float = Field(0.9999, ge=0, lt=1)


class GroupDROConfig(Strict):
    eta: float = Field(0.01, gt=0)     # step size of the group weights
    by: Literal["cell", "class", "group"] = "cell"
    adjustment: float = Field(0.0, ge=0)  # generalization adjustment C / sqrt(n_g)


class WeightBalancingConfig(Strict):
    """Alshammari et al. 2022: stage 1 = CE with (high) optim.weight_decay; stage 2 =
    head only, class-balanced CE, MaxNorm on the head's class vectors."""

    stage2_epochs: int = Field(10, ge=0)
    stage2_lr: float = Field(0.005, gt=0)
    stage2_weight_decay: float = Field(0.1, ge=0)
    max_norm: float = Field(0.1, gt=0)
    beta: float = Field(0.9999, ge=0, lt=1)


class AlgorithmConfig(Strict):
    name: Literal["ce", "resample", "reweight", "balanced_softmax", "ldam_drw", "group_dro",
                  "weight_balancing"] = "ce"
    resample: ResampleConfig = Field(default_factory=ResampleConfig)
    reweight: ReweightConfig = Field(default_factory=ReweightConfig)
    ldam: LDAMConfig = Field(default_factory=LDAMConfig)
    group_dro: GroupDROConfig = Field(default_factory=GroupDROConfig)
    weight_balancing: WeightBalancingConfig = Field(default_factory=WeightBalancingConfig)


class TrainConfig(Strict):
    """Step 2 of SYNAuG: train encoder f and head g (with Mixup) on the uniformized set."""

    seed: int = 0
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    channels_last: bool = True           # fastest on this CPU and on GPUs
    compile: bool | Literal["default", "max-autotune"] = False  # torch.compile the step's forward (cold start)
    cuda_graph: Literal["auto", "on", "off"] = "auto"  # whole step as CUDA graphs (auto: on where possible)
    amp: Literal["off", "bf16", "fp16"] = "off"
    select_metric: Literal["top1", "mean_class", "worst_group"] = "top1"  # on the val split
    eval_every: int = Field(1, ge=1)     # validation every N epochs (and at the last)
    keep_checkpoints: int = Field(1, ge=1)
    progress: bool = True


class FinetuneConfig(Strict):
    """Step 3 of SYNAuG: only the head g, on a class-balanced subset of the REAL train rows."""

    mode: Literal["finetune", "retrain", "dfr"] = "finetune"
    seed: int = 0
    balance_by: Literal["class", "cell"] = "class"   # cell = class x group
    per_cell: Optional[int] = Field(None, ge=1)       # default: the smallest cell count
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    augment_views: int = Field(0, ge=0)  # extra augmented feature copies per image (0 = plain)
    # DFR (Kirichenko et al., 2023): logistic regression on frozen features
    dfr_Cs: list[float] = Field(default_factory=lambda: [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01])
    dfr_penalty: Literal["l1", "l2"] = "l1"
    dfr_repeats: int = Field(10, ge=1)   # average coefficients over this many balanced draws
    dfr_select: Literal["worst_group", "top1", "mean_class"] = "worst_group"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    device: str = "auto"
    channels_last: bool = True
    progress: bool = True
