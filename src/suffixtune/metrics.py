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


MIN_ROWS = 10  # fewer evaluation rows than this are too few to call any answer a collapse
MIN_OTHER_ROWS = 5  # a single class is a collapse only when at least this many rows belong to other classes
RELATIVE_SPREAD = 1e-3  # regression outputs spread less than this fraction of the labels' spread are a constant


def collapse_reason(predictions: np.ndarray, labels: np.ndarray, label_names: tuple[str, ...] | None) -> str | None:
    """Why these predictions are not a result (not finite, all one class, or a constant), or None if they are."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if label_names is None:
        bad = int(np.sum(~np.isfinite(predictions)))
        if bad:
            return f"{bad} of {len(predictions)} predictions are NaN or infinite"
        spread, label_spread = float(np.std(predictions)), float(np.std(labels))
        if len(predictions) >= MIN_ROWS and label_spread > 0 and spread < RELATIVE_SPREAD * label_spread:
            return (f"predictions collapsed to about {np.mean(predictions):.4g} for all {len(predictions)} rows "
                    f"(spread {spread:.3g} against the labels' {label_spread:.3g})")
        return None
    classes = np.unique(predictions)
    if len(classes) == 1 and len(predictions) >= MIN_ROWS and np.sum(labels != classes[0]) >= MIN_OTHER_ROWS:
        share = float(np.mean(labels == classes[0]))
        return (
            f"predictions collapsed to class {label_names[int(classes[0])]!r} for all {len(predictions)} rows "
            f"(accuracy {share:.4f} is just that class's share)"
        )
    return None


def non_finite_reason(logits: np.ndarray) -> str | None:
    """Rows whose outputs are NaN or infinite, which no argmax or metric should hide."""
    rows = np.asarray(logits).reshape(len(logits), -1)
    bad = int(np.sum(~np.isfinite(rows).all(axis=1)))
    return f"{bad} of {len(rows)} rows have NaN or infinite outputs" if bad else None


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
