"""Everything that reads the evaluation rows: single rows (`lookups`), accuracy on feedback
(`accuracy`: live evaluation of a version, champion against challenger) and label-free per-day
figures (`monitoring`: drift, operations). Callers import the functions from here."""

from classifier.evaluation.selectors.accuracy import champion_vs_challenger, live_evaluation
from classifier.evaluation.selectors.lookups import (
    champion_classes,
    feedback_for,
    feedback_get,
    model_version_by_alias,
    model_version_get,
)
from classifier.evaluation.selectors.monitoring import drift, operations

__all__ = [
    "champion_classes",
    "champion_vs_challenger",
    "drift",
    "feedback_for",
    "feedback_get",
    "live_evaluation",
    "model_version_by_alias",
    "model_version_get",
    "operations",
]
