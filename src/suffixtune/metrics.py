"""Task metrics by name, and the check that a run did not collapse to one answer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .errors import ConfigError

Metric = Callable[[np.ndarray, np.ndarray], float]

METRICS: dict[str, Metric] = {
    "accuracy": lambda predictions, labels: accuracy_score(labels, predictions),
    "f1": lambda predictions, labels: f1_score(labels, predictions),
    "mcc": lambda predictions, labels: matthews_corrcoef(labels, predictions),
    "pearson": lambda predictions, labels: pearsonr(predictions, labels)[0],
    "spearman": lambda predictions, labels: spearmanr(predictions, labels)[0],
}


def predictions_from_logits(logits: np.ndarray, regression: bool) -> np.ndarray:
    return logits.reshape(-1) if regression else logits.argmax(-1)


def compute_metrics(names: tuple[str, ...], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
    return {name: float(METRICS[name](predictions, labels)) for name in names}


def collapse_reason(predictions: np.ndarray, labels: np.ndarray, label_names: tuple[str, ...] | None) -> str | None:
    """Why these predictions are not a result (all one class, or a constant), or None if they are."""
    if label_names is None:
        if len(predictions) > 1 and np.ptp(labels) > 0 and np.std(predictions) < 1e-6:
            return f"predictions collapsed to the constant {predictions[0]:.4g} for all {len(predictions)} rows"
        return None
    classes = np.unique(predictions)
    if len(classes) == 1 and len(np.unique(labels)) > 1:
        share = float(np.mean(labels == classes[0]))
        return (
            f"predictions collapsed to class {label_names[int(classes[0])]!r} for all {len(predictions)} rows "
            f"(accuracy {share:.4f} is just that class's share)"
        )
    return None


def did_not_learn(predictions: np.ndarray, labels: np.ndarray, label_names: tuple[str, ...] | None, margin: float = 0.02) -> str | None:
    """Why a classifier's predictions show no learning: accuracy within `margin` of the majority class's share.

    A warning, not a failure (a hard task may truly sit there); None for regression or a run that learned.
    """
    if label_names is None or len(labels) == 0:
        return None
    labels = np.asarray(labels).astype(int)
    majority = np.bincount(labels).max() / len(labels)
    accuracy = float(np.mean(np.asarray(predictions).astype(int) == labels))
    if accuracy > majority + margin:
        return None
    return (f"accuracy {accuracy:.4f} is within {margin} of always answering the most common class "
            f"({majority:.4f}): the run did not learn")
