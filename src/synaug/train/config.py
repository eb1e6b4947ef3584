"""Configs of ``synaug train`` / ``synaug finetune`` (YAML, validated, unknown keys are errors).

Defaults reproduce the CIFAR-LT recipe used by LDAM-DRW and the paper's ResNet-32 runs:
SGD lr 0.1, momentum 0.9, weight decay 2e-4, batch 128, 200 epochs, 5 linear-warmup
epochs, lr x0.01 at epoch 160 and x0.0001 at 180. The default milestones are fractions of
the run (0.8, 0.9 of ``epochs``: 160 and 180 of 200), so a shorter run decays too.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

from pydantic import Field, model_serializer, model_validator

from ..config import Strict, drop_defaults

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
    """Learning-rate schedule. ``milestones`` (multistep) are epoch numbers (integers >= 1, e.g.
    ``[160, 180]``) or fractions of ``epochs`` (all in (0, 1), e.g. the default ``[0.8, 0.9]``:
    epochs 24 and 27 of 30); from each milestone on the lr is ``optim.lr x factor``."""

    name: Literal["multistep", "cosine", "constant"] = "multistep"
    warmup_epochs: int = Field(5, ge=0)
    milestones: list[int | float] = Field(default_factory=lambda: [0.8, 0.9])
    factors: list[float] = Field(default_factory=lambda: [0.01, 0.0001])  # lr x factor from milestone on
    min_lr: float = Field(0.0, ge=0)  # cosine floor

    @model_validator(mode="after")
    def _check(self):
        if len(self.milestones) != len(self.factors):
            raise ValueError("schedule.milestones and schedule.factors must have the same length")
        if sorted(self.milestones) != self.milestones:
            raise ValueError("schedule.milestones must be increasing")
        fractions = [0 < m < 1 for m in self.milestones]
        if any(fractions) and not all(fractions):
            raise ValueError("schedule.milestones: give all as fractions of epochs (0 < m < 1) or all as epochs (>= 1)")
        if not any(fractions) and any(m != int(m) or m < 1 for m in self.milestones):
            raise ValueError("schedule.milestones: an epoch milestone must be a whole number >= 1 "
                             "(or give fractions of epochs, 0 < m < 1)")
        return self

    def milestone_epochs(self, epochs: int) -> list[int]:
        """The milestones as 0-based epoch numbers for a run of ``epochs`` epochs (fractions
        rounded half up, at least 1)."""
        return [max(1, math.floor(m * epochs + 0.5)) if 0 < m < 1 else int(m) for m in self.milestones]


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
    """Training augmentation. Waterbirds as DFR's ``wb_data.py:get_transform_cub`` does it:
    ``random_resized_crop: true, rrc_scale: [0.7, 1.0], crop_padding: 0, flip: true`` (training)
    with ``data.eval_resize: 256`` (evaluation: Resize 256 -> CenterCrop 224)."""

    crop_padding: int = Field(4, ge=0)    # random crop after zero padding (0 = off)
    flip: bool = True
    random_resized_crop: bool = False     # large images (streaming path): RandomResizedCrop(image_size)
    rrc_scale: tuple[float, float] = (0.08, 1.0)          # torchvision's default; DFR Waterbirds: (0.7, 1.0)
    rrc_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

    @model_validator(mode="after")
    def _check(self):
        lo, hi = self.rrc_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError("augment.rrc_scale must satisfy 0 < min <= max <= 1")
        if not 0 < self.rrc_ratio[0] <= self.rrc_ratio[1]:
            raise ValueError("augment.rrc_ratio must satisfy 0 < min <= max")
        return self


class DataConfig(Strict):
    PATH_KEYS: ClassVar[tuple[str, ...]] = ("cache_dir",)  # relative to the config file

    mode: Literal["auto", "memory", "stream"] = "auto"  # memory: decoded uint8 tensor; stream: DataLoader
    #                                                     (auto picks stream when eval_resize is set)
    image_size: Optional[int] = Field(None, ge=8)       # resize to a square of this size (default: as stored)
    # evaluation / feature extraction: Resize to eval_resize x eval_resize, then CenterCrop(image_size)
    # (DFR's wb_data.py: 256 -> 224). None: resize straight to image_size. Needs the streaming path.
    eval_resize: Optional[int] = Field(None, ge=8)
    memory_limit_mb: int = Field(4096, ge=1)            # auto picks memory below this
    cache_dir: Optional[str] = None                     # default: $SYNAUG_CACHE/tensors
    num_workers: int = Field(2, ge=0)                   # streaming path / decoding threads
    eval_batch_size: int = Field(512, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if self.eval_resize is not None:
            if self.image_size is None:
                raise ValueError("data.eval_resize needs data.image_size (the centre crop's size)")
            if self.eval_resize < self.image_size:
                raise ValueError("data.eval_resize must be at least data.image_size")
            if self.mode == "memory":
                raise ValueError("data.eval_resize needs the streaming path (data.mode: stream or auto)")
        return self


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
    """Online Group DRO as ``kohpangwei/group_DRO`` trains it (``--robust --reweight_groups``)."""

    eta: float = Field(0.01, gt=0)     # step size of the group weights (--robust_step_size)
    by: Literal["cell", "class", "group"] = "cell"
    adjustment: float = Field(0.0, ge=0)  # generalization adjustment C / sqrt(n_g)
    # group-balanced sampling: rows drawn with replacement ∝ 1 / count(their DRO group)
    # (--reweight_groups, the reference's setting); false: a plain shuffle
    reweight_groups: bool = True


class WeightBalancingConfig(Strict):
    """Alshammari et al. 2022 as ``ShadeAlsha/LTR-weight-balancing`` does it: stage 1 = CE with
    (high) ``optim.weight_decay``; stage 2 (``demo2_second-stage-training.py``) = head only, its
    class-balanced softmax loss (``CB_loss(..., "softmax", beta, ...)``), SGD lr 0.01 with cosine
    annealing over the stage-2 epochs (stepped at the start of every epoch), weight decay 0.1,
    and MaxNorm (``MaxNorm_via_PGD``): after every epoch each class vector of the head is
    projected into a ball whose radius is fixed at the start of stage 2 as
    ``min + max_norm_ratio * (max - min)`` of the per-class weight norms (the bias is free).

    Named options: ``max_norm: absolute`` (radius ``max_norm_radius`` for every class, the
    earlier synaug behaviour), ``project_every: step``, ``stage2_loss: weighted_ce``,
    ``stage2_schedule: constant``."""

    stage2_epochs: int = Field(10, ge=0)
    stage2_lr: float = Field(0.01, gt=0)
    stage2_schedule: Literal["cosine", "constant"] = "cosine"
    stage2_weight_decay: float = Field(0.1, ge=0)
    stage2_loss: Literal["cb_softmax", "weighted_ce"] = "cb_softmax"
    max_norm: Literal["relative", "absolute"] = "relative"
    max_norm_ratio: float = Field(0.1, ge=0, le=1)      # relative threshold (the reference's thresh)
    max_norm_radius: float = Field(0.1, gt=0)           # absolute radius (max_norm: absolute)
    project_every: Literal["epoch", "step"] = "epoch"   # the reference projects once per epoch
    beta: float = Field(0.9999, ge=0, lt=1)


class AlgorithmConfig(Strict):
    name: Literal["ce", "resample", "reweight", "balanced_softmax", "ldam_drw", "group_dro",
                  "weight_balancing"] = "ce"
    resample: ResampleConfig = Field(default_factory=ResampleConfig)
    reweight: ReweightConfig = Field(default_factory=ReweightConfig)
    ldam: LDAMConfig = Field(default_factory=LDAMConfig)
    group_dro: GroupDROConfig = Field(default_factory=GroupDROConfig)
    weight_balancing: WeightBalancingConfig = Field(default_factory=WeightBalancingConfig)


class SyntheticConfig(Strict):
    """Synthetic-aware training (beyond the paper; every key off by default = the paper's step 2).

    * ``loss_weight``: weight of a synthetic row's loss; the batch loss is the weighted mean
      ``sum_i w_i l_i / sum_i w_i`` (real rows weigh 1). A Mixup / CutMix row weighs what its
      label is made of: ``lab_w w_i + (1 - lab_w) w_partner`` (``lab_w`` = lam for Mixup, the
      unpasted area share for CutMix). Needs an algorithm with per-row losses (``ce``).
    * ``label_smoothing``: synthetic rows learn ``(1 - eps) onehot + eps / C`` (real rows keep
      hard labels); mixed rows mix the smoothed labels.
    * ``batch_share``: every batch holds ``round(share x batch_size)`` synthetic rows (a sampler
      drawing real and synthetic rows from two shuffled streams; an epoch is still N rows).
      ``batch_share_end``: the share moves linearly from ``batch_share`` (first epoch) to this
      value (last main epoch): e.g. 0.9 -> 0.25 is synthetic-first, then real-heavy.
    * ``separate_bn``: during training, synthetic rows are normalised by batch statistics of the
      synthetic rows only, real rows by those of the real rows; only real rows update the running
      statistics used at test (DISEF-style; mixed rows follow their larger part).
    * ``color_match``: shift every synthetic image's per-channel mean / std to those of the real
      training images (``global``) or of its class's real images (``class``; classes with fewer
      than ``color_match_min_real`` real images use the global statistics). In-memory data only.
    """

    loss_weight: float = Field(1.0, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    batch_share: Optional[float] = Field(None, ge=0, le=1)
    batch_share_end: Optional[float] = Field(None, ge=0, le=1)
    separate_bn: bool = False
    color_match: Literal["off", "global", "class"] = "off"
    color_match_min_real: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if self.batch_share_end is not None and self.batch_share is None:
            raise ValueError("synthetic.batch_share_end needs synthetic.batch_share (the first epoch's share)")
        return self

    @property
    def active(self) -> bool:
        """Whether any option differs from the paper's step 2."""
        return self != SyntheticConfig()


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
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)  # synthetic-aware options (off)
    data: DataConfig = Field(default_factory=DataConfig)
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    channels_last: bool = True           # fastest on this CPU and on GPUs
    # torch.compile the step's forward; auto: on for runs long enough to repay the cold start
    # where a toolchain exists (synaug.train.precision.resolve_compile)
    compile: bool | Literal["auto", "default", "max-autotune"] = "auto"
    cuda_graph: Literal["auto", "on", "off"] = "auto"  # whole step as CUDA graphs (auto: on where possible)
    # auto: bf16 where the device has native bf16 units (AMX / AVX512-BF16 CPUs, CUDA >= 8.0), else fp32;
    # bf16-emulated: bf16 numerics with fp32 kernels, to check accuracy without bf16 units (slower)
    amp: Literal["auto", "off", "bf16", "fp16", "bf16-emulated"] = "auto"
    select_metric: Literal["top1", "mean_class", "worst_group"] = "top1"  # on the val split
    eval_every: int = Field(1, ge=1)     # validation every N epochs (and at the last)
    keep_checkpoints: int = Field(1, ge=1)
    progress: bool = True

    @model_serializer(mode="wrap")
    def _dump(self, handler):  # at its default, the newer section leaves cached runs' keys unchanged
        return drop_defaults(self, handler(self), ("synthetic",))


class FinetuneConfig(Strict):
    """Step 3 of SYNAuG: only the head g, on frozen encoder features.

    ``mode``:

    * ``finetune`` (SYNAuG): start from the trained head, SGD on a class- (or cell-) balanced
      subset of the REAL training rows;
    * ``retrain``: the same, with the head re-initialised first (seeded). This is the one
      meaning of "re-train" in every table (Table 1 (d), Table 4 "SYNAuG (re-train)");
    * ``dfr``: Deep Feature Reweighting (Kirichenko et al., 2023), a method of its own. Default
      ``dfr_data: val`` = DFR^Tr_Val as ``deep_feature_reweighting/dfr_evaluate_spurious.py``
      does it: L1 logistic regression (liblinear) on standardised features of group-balanced
      draws of the VALIDATION rows; C tuned on one random half of val (fit on its balanced
      draw, scored by worst-group accuracy on the other half); the scaler fit on all real
      training features; the final head averages the coefficients of ``dfr_repeats`` (20)
      balanced draws of the whole validation split. ``dfr_data: train`` is the earlier
      synaug behaviour (balanced draws of the real TRAINING rows, scaler fit on the first
      draw, C scored on all of val, 10 draws). DFR^Tr_Val balances by ``balance_by`` (``cell`` =
      the reference's class x place groups) with the smallest group's count; ``per_cell`` and the
      SGD settings below do not apply to it.

    ``balance_by``: ``auto`` (default) = ``cell`` (class x group) for ``dfr`` on data whose rows
    all have a group, as the reference balances Waterbirds' groups (its "worst group" is then a
    class x group cell), and ``class`` otherwise; ``class`` / ``cell`` choose explicitly.

    The SGD step's size is not given by the paper: ``per_cell`` (images per class / cell),
    ``epochs``, ``lr``, ``weight_decay``, ``batch_size``, ``schedule`` are exposed; the defaults
    are justified by the validation sweep of ``synaug.experiments.step3`` (docs/results.md).
    """

    mode: Literal["finetune", "retrain", "dfr"] = "finetune"
    seed: int = 0
    balance_by: Literal["auto", "class", "cell"] = "auto"   # cell = class x group; auto: see above
    per_cell: Optional[int] = Field(None, ge=1)       # default: the smallest cell count
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    augment_views: int = Field(0, ge=0)  # extra augmented feature copies per image (0 = plain)
    # beyond the head: also fine-tune the last N blocks of the encoder (0 = the paper's head-only
    # step); earlier blocks stay bit-identical, BatchNorm statistics stay fixed (eval mode)
    train_blocks: int = Field(0, ge=0)
    blocks_lr: Optional[float] = Field(None, gt=0)    # their learning rate (default: lr)
    # which real rows step 3 sees: ``subset`` = the paper's class-balanced subset (per_cell images
    # per class, drawn once); ``class_balanced`` = every real training row, each epoch drawn with
    # replacement with probability 1 / (its class's count), so classes weigh the same but the
    # head classes show all their images (cRT's class-balanced sampling, Kang et al. ICLR 2020)
    sampling: Literal["subset", "class_balanced"] = "subset"
    samples_per_epoch: Optional[int] = Field(None, ge=1)  # class_balanced draws per epoch (default: the rows)
    # in ``synaug run``, the trained model step 3 starts from: ``selected`` = the epoch the validation
    # split chose (train/model.safetensors), ``last`` = the last epoch (train/last.json), whatever
    # the validation split said (a 200-image split can pick an early, high-learning-rate epoch)
    start: Literal["selected", "last"] = "selected"
    # DFR (Kirichenko et al., 2023): logistic regression on frozen features
    dfr_data: Literal["val", "train"] = "val"   # val: DFR^Tr_Val (reference); train: earlier synaug variant
    dfr_Cs: list[float] = Field(default_factory=lambda: [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01])
    dfr_penalty: Literal["l1", "l2"] = "l1"
    dfr_repeats: Optional[int] = Field(None, ge=1)  # balanced draws averaged; default 20 (val) / 10 (train)
    dfr_tune_repeats: int = Field(1, ge=1)          # random val halves the C score is summed over
    dfr_select: Literal["worst_group", "top1", "mean_class"] = "worst_group"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    device: str = "auto"
    channels_last: bool = True
    amp: Literal["auto", "off", "bf16", "bf16-emulated"] = "auto"  # feature extraction (head fit in fp32)
    progress: bool = True

    def balance_for(self, every_row_has_a_group: bool) -> str:
        """``balance_by`` resolved for rows that all have a group (or not): ``class`` or ``cell``."""
        if self.balance_by != "auto":
            return self.balance_by
        return "cell" if self.mode == "dfr" and every_row_has_a_group else "class"

    @model_serializer(mode="wrap")
    def _dump(self, handler):  # at their defaults, the newer keys leave cached runs' keys unchanged
        return drop_defaults(self, handler(self), ("train_blocks", "blocks_lr", "sampling", "samples_per_epoch",
                                                   "start"))

    @model_validator(mode="after")
    def _check_blocks(self):
        if self.train_blocks and self.mode == "dfr":
            raise ValueError("finetune.train_blocks works with mode finetune / retrain, not dfr")
        if self.train_blocks and self.augment_views:
            raise ValueError("finetune.train_blocks trains on images; augment_views (feature copies) does not apply")
        if self.sampling != "subset" and self.mode == "dfr":
            raise ValueError("finetune.sampling: class_balanced works with mode finetune / retrain, not dfr")
        if self.sampling == "class_balanced" and self.per_cell is not None:
            raise ValueError("finetune.per_cell sizes the paper's subset; sampling: class_balanced draws from every "
                             "real training row (size an epoch with samples_per_epoch)")
        if self.sampling == "subset" and self.samples_per_epoch is not None:
            raise ValueError("finetune.samples_per_epoch needs finetune.sampling: class_balanced")
        return self

    @property
    def dfr_draws(self) -> int:
        """Balanced draws DFR averages: ``dfr_repeats``, else 20 (DFR^Tr_Val) / 10 (train)."""
        if self.dfr_repeats is not None:
            return self.dfr_repeats
        return 20 if self.dfr_data == "val" else 10


#: the keys a short run needs, with their defaults (also in README's own-data section)
TRAIN_KEYS_HELP = """\
Key defaults (the CIFAR-LT recipe of the paper's ResNet-32 runs):
  epochs 200, batch_size 128, optim.lr 0.1 (sgd, momentum 0.9, weight_decay 2e-4)
  model.name resnet32 (CIFAR ResNets resnet20/32/44/56/110, torchvision resnet18/34/50, timm
    names); model.width 16 = channels of the first stage of a CIFAR ResNet (the paper's;
    8 or 4: a smaller, faster model)
  schedule.name multistep (or cosine, constant); schedule.warmup_epochs 5 (linear warm-up);
  schedule.milestones [0.8, 0.9] with schedule.factors [0.01, 0.0001]: lr x 0.01 from 80 % of
    the run, x 0.0001 from 90 % (fractions of epochs; whole numbers >= 1 are epoch numbers, e.g.
    [160, 180]); schedule.min_lr 0 (cosine floor)
  example of a short run that decays: --set epochs=30 --set schedule.warmup_epochs=2"""
