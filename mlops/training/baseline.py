"""A baseline fitted on the network's own split, so every run shows whether the network earns
its keep: its test metrics are logged beside the baseline's under the same names.

The baseline is scikit-learn's histogram gradient boosting, not a linear model. Gradient
boosted trees are the usual strong reference on tabular data: they need no scaling, are
indifferent to monotone transforms of a feature, and capture thresholds and interactions a
linear model misses, so a network that only matches a linear model is not yet shown to be
useful. The histogram variant bins each feature to at most 255 values once and then grows
trees over the bins, which keeps a fit of a hundred thousand rows to seconds on two cores;
the number of boosting rounds is bounded, and on large train splits early stopping on a
seeded held-out part of the train split ends it sooner. With a fixed ``random_state`` the
fit is deterministic, and the same whatever the number of threads. Only the train split is
fitted and only the test split scored, as for the network, so the two sets of metrics are
comparable.

The fit runs on one OpenMP thread unless told otherwise: the baseline is a side
measurement, and on a busy shared machine scikit-learn's OpenMP threads spin against the
other processes' work and make the fit several times slower, not faster.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from mlops.config import TaskType
from mlops.training.model import quality_metrics

log = logging.getLogger(__name__)

BASELINE_MODEL = "hist_gradient_boosting"
BASELINE_PREFIX = "baseline_test"
# Boosting rounds at most (per class beyond two); early stopping usually ends sooner.
MAX_ITER = 200
# scikit-learn's own rule for early_stopping="auto", stated here so it does not drift with
# the library: below it a held-out tenth of the train split is too small to judge by.
EARLY_STOPPING_MIN_ROWS = 10_000

Estimator = HistGradientBoostingClassifier | HistGradientBoostingRegressor


class BaselineResult(BaseModel):
    """What a baseline fit hands back: its name, its test metrics, how long it took."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    metrics: dict[str, float]
    fit_seconds: float


def fit_baseline(task: TaskType, x_train: np.ndarray, y_train: np.ndarray,
                 x_test: np.ndarray, y_test: np.ndarray, seed: int,
                 classes: int = 2, *, threads: int = 1) -> BaselineResult:
    """Fit the baseline on the train split and score it on the test split.

    Metric names are the network's test metrics prefixed ``baseline_``, computed by the
    network's own ``quality_metrics``: from the probability of class 1 for a binary
    classifier (labels 0 and 1); with ``classes`` > 2 (or a multiclass task) the labels
    are integer codes 0..classes-1 and the metrics are accuracy and the macro one-vs-rest
    ROC AUC (``baseline_test_auc_ovr``, only when every class occurs in the test split).
    ``classes`` is ignored for regression. ``threads``
    caps scikit-learn's OpenMP threads for the fit and the scoring.
    """
    check_split(task, x_train, y_train, x_test, y_test, classes)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    estimator = build_estimator(task, seed, len(x_train))
    target = y_train if task == TaskType.regression else y_train.astype(np.int64)
    with threadpool_limits(limits=threads, user_api="openmp"):
        started = time.perf_counter()
        estimator.fit(x_train, target)
        fit_seconds = time.perf_counter() - started
        metrics = score_baseline(task, estimator, x_test, y_test, classes)
    log.info("baseline %s fitted on %d rows in %.2f s (%d rounds): %s", BASELINE_MODEL,
             len(x_train), fit_seconds, estimator.n_iter_, metrics)
    return BaselineResult(model=BASELINE_MODEL, metrics=metrics, fit_seconds=fit_seconds)


def build_estimator(task: TaskType, seed: int, train_rows: int) -> Estimator:
    """An unfitted estimator with the bounded, seeded settings the module docstring gives."""
    common = {
        "max_iter": MAX_ITER,
        "early_stopping": train_rows > EARLY_STOPPING_MIN_ROWS,
        "random_state": seed,
    }
    if task == TaskType.regression:
        return HistGradientBoostingRegressor(**common)
    return HistGradientBoostingClassifier(**common)


def score_baseline(task: TaskType, estimator: Estimator, x_test: np.ndarray,
                   y_test: np.ndarray, classes: int) -> dict[str, float]:
    """Test metrics named as the network's, with the baseline prefix."""
    if task == TaskType.regression:
        return quality_metrics(task, y_test, estimator.predict(x_test), BASELINE_PREFIX)
    proba = class_probabilities(estimator, x_test, classes)
    if task == TaskType.classification and classes == 2:
        return quality_metrics(task, y_test, proba[:, 1], BASELINE_PREFIX)
    return quality_metrics(TaskType.multiclass, y_test, proba, BASELINE_PREFIX)


def class_probabilities(estimator: HistGradientBoostingClassifier, x: np.ndarray,
                        classes: int) -> np.ndarray:
    """A [rows, classes] probability matrix; a class absent from the train split gets 0."""
    proba = np.zeros((len(x), classes), dtype=np.float64)
    proba[:, estimator.classes_.astype(np.int64)] = estimator.predict_proba(x)
    return proba


def check_split(task: TaskType, x_train: np.ndarray, y_train: np.ndarray,
                x_test: np.ndarray, y_test: np.ndarray, classes: int) -> None:
    """Raise ValueError naming the first problem with the arrays, before any fitting."""
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 2 or y.ndim != 1:
            raise ValueError(f"{name} split: features must be 2-D and labels 1-D, "
                             f"got shapes {x.shape} and {y.shape}")
        if len(x) == 0:
            raise ValueError(f"{name} split is empty: the baseline needs rows to "
                             f"{'fit' if name == 'train' else 'score'}")
        if len(x) != len(y):
            raise ValueError(f"{name} split: {len(x)} feature rows but {len(y)} labels")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError(f"{name} split holds NaN or infinite values; "
                             "features must be numeric and imputed before training")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train split has {x_train.shape[1]} feature columns but test "
                         f"split has {x_test.shape[1]}")
    if task != TaskType.regression:
        check_labels(y_train, y_test, classes)


def check_labels(y_train: np.ndarray, y_test: np.ndarray, classes: int) -> None:
    """Class labels are integer codes 0..classes-1, and the train split has at least two."""
    if classes < 2:
        raise ValueError(f"classes must be at least 2, got {classes}")
    for name, y in (("train", y_train), ("test", y_test)):
        bad = (y != np.round(y)) | (y < 0) | (y >= classes)
        if bad.any():
            raise ValueError(f"{name} labels must be integer codes 0..{classes - 1}; "
                             f"found {np.unique(y[bad])[:5].tolist()}")
    present = np.unique(y_train)
    if len(present) < 2:
        raise ValueError(f"train split has a single class ({present.tolist()}); "
                         "a classifier needs at least two")
