"""Training engine: SYNAuG step 2 (Mixup training on the uniformized set), step 3 (last-layer
fine-tuning on balanced real data), the baselines as algorithm plug-ins, and evaluation.

Python API::

    from synaug.train import TrainConfig, FinetuneConfig, train_model, finetune_last_layer, evaluate

    res = train_model(train_manifest, val_manifest, TrainConfig(), "runs/cifar-lt")
    model = finetune_last_layer(res.model, real_manifest, FinetuneConfig(), "runs/cifar-lt/ft")
    metrics = evaluate(model, test_manifest, train_counts=real_counts, out_dir="runs/cifar-lt/eval",
                       counts_source="real train rows before uniformization")

CLI: ``synaug train``, ``synaug finetune``, ``synaug evaluate`` (see ``--help``).
"""
from .algorithms import Algorithm, DataInfo, list_algorithms, register_algorithm
from .checkpoint import load_checkpoint, save_model
from .config import (AlgorithmConfig, AugmentConfig, DataConfig, FinetuneConfig, MixConfig, ModelConfig,
                     OptimConfig, ScheduleConfig, SyntheticConfig, TrainConfig)
from .data import ImageSet, decode_manifest, refuse_test_rows
from .evaluate import compute_metrics, evaluate, predict_logits, real_train_counts
from .finetune import balanced_subset, finetune_last_layer, real_train_rows
from .loop import TrainResult, train_model

__all__ = ["train_model", "TrainResult", "finetune_last_layer", "balanced_subset", "real_train_rows",
           "evaluate", "compute_metrics", "real_train_counts", "predict_logits", "load_checkpoint", "save_model",
           "TrainConfig", "FinetuneConfig", "ModelConfig", "OptimConfig", "ScheduleConfig", "MixConfig",
           "AugmentConfig", "DataConfig", "AlgorithmConfig", "SyntheticConfig", "Algorithm", "DataInfo",
           "register_algorithm", "list_algorithms", "ImageSet", "decode_manifest", "refuse_test_rows"]
