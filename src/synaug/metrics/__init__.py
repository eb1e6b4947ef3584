"""Evaluation metrics: accuracy (top-1, per class, many/medium/few-shot, per group) and
group-fairness gaps (demographic parity, equal opportunity, equalized odds).

All functions take numpy arrays (or anything ``numpy.asarray`` accepts) of integer labels
and return plain floats / dicts / arrays.
"""
from .classification import (FEW_MAX, MANY_MIN, confusion_matrix, group_accuracy,
                             per_class_accuracy, per_group_accuracy, shot_accuracy, shot_buckets,
                             top1_accuracy)
from .fairness import (demographic_parity, equal_opportunity, equalized_odds, false_positive_rates,
                       selection_rates, true_positive_rates)

__all__ = ["top1_accuracy", "confusion_matrix", "per_class_accuracy", "shot_buckets", "shot_accuracy",
           "per_group_accuracy", "group_accuracy", "selection_rates", "true_positive_rates",
           "false_positive_rates", "demographic_parity", "equal_opportunity", "equalized_odds",
           "MANY_MIN", "FEW_MAX"]
