"""Evaluation metrics: accuracy (top-1, per class, many/medium/few-shot, per group) and
group-fairness gaps over the sensitive attribute (demographic parity, equal opportunity,
equalized odds worst-case and averaged, Jung et al.'s class-wise accuracy gap), each with its
written definition (:data:`DEFINITIONS`) and the readings of the paper's DP / EO / ED
(:data:`DEFINITION_SETS`).

All functions take numpy arrays (or anything ``numpy.asarray`` accepts) of integer labels
and return plain floats / dicts / arrays.
"""
from .classification import (FEW_MAX, MANY_MIN, confusion_matrix, group_accuracy,
                             per_class_accuracy, per_group_accuracy, shot_accuracy, shot_buckets,
                             top1_accuracy)
from .fairness import (DEFINITION_SETS, DEFINITIONS, HEADLINE_SET, PAPER_SET, class_accuracy_gap, class_accuracy_gaps,
                       definition_set_values, demographic_parity, demographic_parity_population,
                       equal_opportunity, equalized_odds, equalized_odds_mean, fairness_metrics,
                       false_positive_rates, selection_rates, true_positive_rates)

__all__ = ["top1_accuracy", "confusion_matrix", "per_class_accuracy", "shot_buckets", "shot_accuracy",
           "per_group_accuracy", "group_accuracy", "selection_rates", "true_positive_rates",
           "false_positive_rates", "demographic_parity", "demographic_parity_population", "equal_opportunity",
           "equalized_odds", "equalized_odds_mean", "class_accuracy_gap", "class_accuracy_gaps", "fairness_metrics",
           "definition_set_values", "DEFINITIONS", "DEFINITION_SETS", "HEADLINE_SET", "PAPER_SET", "MANY_MIN",
           "FEW_MAX"]
