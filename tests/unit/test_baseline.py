"""The training baseline: it learns a known signal, names its metrics as the network's with
the baseline prefix, is deterministic for a seed, and rejects bad splits by name."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_info

from mlops.config import TaskType
from mlops.training.baseline import (
    BASELINE_MODEL,
    EARLY_STOPPING_MIN_ROWS,
    BaselineResult,
    fit_baseline,
)
from mlops.training.model import quality_metrics

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
N_FEATURES = 8


def make_split(task: TaskType, rows: int = 2_000, classes: int = 2, seed: int = 0) -> Split:
    """Float32 features with a known signal: a linear score plus a threshold effect, so
    labels depend on the features well beyond chance; the last fifth is the test split."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
    score = x @ rng.normal(size=N_FEATURES) + 2.0 * (x[:, 0] > 0.5)
    if task == TaskType.regression:
        y = score + rng.normal(scale=0.3, size=rows)
    elif classes == 2:
        y = (score + rng.logistic(scale=0.3, size=rows) > np.median(score)).astype(float)
    else:  # integer codes 0..classes-1 by quantile of the score
        y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    cut = rows * 4 // 5
    y = y.astype(np.float32)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def network_metric_names(task: TaskType, y_test: np.ndarray, classes: int = 2) -> set[str]:
    """The test metric names the network gets from quality_metrics for this split."""
    y_pred = (y_test if task == TaskType.regression
              else np.full((len(y_test), classes), 1 / classes) if task == TaskType.multiclass
              else np.full(len(y_test), 0.5))
    return set(quality_metrics(task, y_test, y_pred, "test"))


# --- learns the signal -----------------------------------------------------------------------

def test_classifier_beats_chance_clearly() -> None:
    split = make_split(TaskType.classification)
    result = fit_baseline(TaskType.classification, *split, seed=1)
    assert result.metrics["baseline_test_auc"] > 0.8
    assert result.metrics["baseline_test_accuracy"] > 0.75
    assert result.model == BASELINE_MODEL
    assert result.fit_seconds > 0


def test_regressor_error_is_well_below_the_label_spread() -> None:
    x_train, y_train, x_test, y_test = make_split(TaskType.regression)
    result = fit_baseline(TaskType.regression, x_train, y_train, x_test, y_test, seed=1)
    assert result.metrics["baseline_test_rmse"] < 0.5 * float(np.std(y_test))
    assert result.metrics["baseline_test_mae"] <= result.metrics["baseline_test_rmse"]


@pytest.mark.parametrize(("task", "classes"), [
    (TaskType.classification, 2), (TaskType.regression, 2), (TaskType.multiclass, 3)])
def test_metric_names_are_the_networks_with_the_baseline_prefix(task: TaskType,
                                                               classes: int) -> None:
    split = make_split(task, classes=classes)
    result = fit_baseline(task, *split, seed=1, classes=classes)
    assert set(result.metrics) == {f"baseline_{name}" for name in
                                   network_metric_names(task, split[3], classes)}
    assert all(np.isfinite(value) for value in result.metrics.values())


# --- multiclass --------------------------------------------------------------------------------

def test_multiclass_reports_accuracy_and_one_vs_rest_auc() -> None:
    split = make_split(TaskType.classification, classes=3)
    result = fit_baseline(TaskType.classification, *split, seed=1, classes=3)
    assert set(result.metrics) == {"baseline_test_accuracy", "baseline_test_auc_ovr"}
    assert result.metrics["baseline_test_accuracy"] > 0.6  # chance is about 1/3
    assert result.metrics["baseline_test_auc_ovr"] > 0.85


def test_multiclass_without_every_class_in_test_has_no_auc() -> None:
    x_train, y_train, x_test, y_test = make_split(TaskType.classification, classes=3)
    keep = y_test != 2
    result = fit_baseline(TaskType.classification, x_train, y_train, x_test[keep],
                          y_test[keep], seed=1, classes=3)
    assert set(result.metrics) == {"baseline_test_accuracy"}


def test_multiclass_class_missing_from_train_still_scores() -> None:
    x_train, y_train, x_test, y_test = make_split(TaskType.classification, classes=3)
    # The model never sees the middle class: its column gets probability 0, and the
    # others' probabilities must still land in their own columns (0 and 2, not 0 and 1).
    keep = y_train != 1
    result = fit_baseline(TaskType.classification, x_train[keep], y_train[keep], x_test,
                          y_test, seed=1, classes=3)
    accuracy = result.metrics["baseline_test_accuracy"]
    assert 0.5 < accuracy <= float(np.mean(y_test != 1)) + 1e-9
    assert 0.6 < result.metrics["baseline_test_auc_ovr"] < 1.0


# --- determinism and purity ----------------------------------------------------------------

@pytest.mark.parametrize("task", list(TaskType))
def test_same_seed_same_metrics_with_early_stopping(task: TaskType) -> None:
    # Above the row threshold early stopping holds out a seeded part of the train split.
    split = make_split(task, rows=(EARLY_STOPPING_MIN_ROWS + 1_000) * 5 // 4)
    first = fit_baseline(task, *split, seed=3)
    second = fit_baseline(task, *split, seed=3)
    other_seed = fit_baseline(task, *split, seed=4)
    assert first.metrics == second.metrics
    assert other_seed.metrics != first.metrics  # the seed reaches the estimator


def test_thread_count_does_not_change_the_fit() -> None:
    split = make_split(TaskType.classification, rows=1_000)
    one = fit_baseline(TaskType.classification, *split, seed=3, threads=1)
    two = fit_baseline(TaskType.classification, *split, seed=3, threads=2)
    assert one.metrics == two.metrics


def test_fit_runs_on_the_given_number_of_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[int]] = []
    original_fit = HistGradientBoostingClassifier.fit

    def recording_fit(self: HistGradientBoostingClassifier, *args: object,
                      **kwargs: object) -> HistGradientBoostingClassifier:
        seen.append({pool["num_threads"] for pool in threadpool_info()
                     if pool["user_api"] == "openmp"})
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(HistGradientBoostingClassifier, "fit", recording_fit)
    fit_baseline(TaskType.classification, *make_split(TaskType.classification, rows=200),
                 seed=1)
    assert seen == [{1}]  # the default: one thread, whatever the machine has


def test_inputs_are_not_modified() -> None:
    split = make_split(TaskType.classification)
    copies = [array.copy() for array in split]
    fit_baseline(TaskType.classification, *split, seed=1)
    for array, copy in zip(split, copies, strict=True):
        np.testing.assert_array_equal(array, copy)
        assert array.dtype == np.float32


def test_result_is_frozen() -> None:
    result = BaselineResult(model=BASELINE_MODEL, metrics={}, fit_seconds=0.1)
    with pytest.raises(ValidationError):
        result.fit_seconds = 1.0  # type: ignore[misc]


# --- bad input -------------------------------------------------------------------------------

def bad_split(case: str) -> tuple[Split, int]:
    """A split with one named problem, and the classes argument to pass with it."""
    x_train, y_train, x_test, y_test = make_split(TaskType.classification, rows=200)
    classes = 2
    if case == "empty train":
        x_train, y_train = x_train[:0], y_train[:0]
    elif case == "empty test":
        x_test, y_test = x_test[:0], y_test[:0]
    elif case == "train lengths":
        y_train = y_train[:-1]
    elif case == "test lengths":
        x_test = x_test[:-3]
    elif case == "columns":
        x_test = x_test[:, :-1]
    elif case == "labels 2-D":
        y_train = y_train[:, None]
    elif case == "nan":
        x_train = x_train.copy()
        x_train[5, 2] = np.nan
    elif case == "label out of range":
        y_test = y_test.copy()
        y_test[0] = 2.0
    elif case == "fractional label":
        y_train = y_train.copy()
        y_train[0] = 0.5
    elif case == "single class":
        y_train = np.zeros_like(y_train)
    elif case == "classes":
        classes = 1
    return (x_train, y_train, x_test, y_test), classes


@pytest.mark.parametrize(("case", "message"), [
    ("empty train", "train split is empty"),
    ("empty test", "test split is empty"),
    ("train lengths", r"train split: 160 feature rows but 159 labels"),
    ("test lengths", r"test split: 37 feature rows but 40 labels"),
    ("columns", "train split has 8 feature columns but test split has 7"),
    ("labels 2-D", "labels 1-D"),
    ("nan", "train split holds NaN"),
    ("label out of range", r"test labels must be integer codes 0\.\.1; found \[2\.0\]"),
    ("fractional label", r"train labels must be integer codes 0\.\.1; found \[0\.5\]"),
    ("single class", r"train split has a single class \(\[0\.0\]\)"),
    ("classes", "classes must be at least 2, got 1"),
])
def test_bad_input_raises_naming_the_problem(case: str, message: str) -> None:
    split, classes = bad_split(case)
    with pytest.raises(ValueError, match=message):
        fit_baseline(TaskType.classification, *split, seed=1, classes=classes)


def test_threads_below_one_are_rejected() -> None:
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        fit_baseline(TaskType.regression, *make_split(TaskType.regression, rows=200), seed=1,
                     threads=0)


def test_regression_accepts_any_finite_label() -> None:
    x_train, y_train, x_test, y_test = make_split(TaskType.regression, rows=200)
    y_train = y_train * 1000.0 - 0.25  # fractional and negative: fine for regression
    result = fit_baseline(TaskType.regression, x_train, y_train, x_test, y_test, seed=1)
    assert set(result.metrics) == {"baseline_test_rmse", "baseline_test_mae"}
