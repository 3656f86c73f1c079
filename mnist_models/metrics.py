"""Per-class evaluation, bootstrap intervals and McNemar comparisons for the MNIST study (section VI).

Everything works on plain arrays: integer labels (n,) and softmax probabilities (n, 10).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mnist_models.prediction import (  # noqa: F401 - predictions_frame and probabilities_from_frame re-exported
    NUM_CLASSES,
    predictions_frame,
    probabilities_from_frame,
)
from mnist_models.prediction import validate_predictions as _validate_predictions

# scikit-learn and scipy are imported where they are used: a cached rerun, which computes no metric,
# does not pay for importing them (about 0.6 s of its 10).


# Keras clips probabilities to [epsilon, 1 - epsilon] before taking the log.
_KERAS_EPSILON = 1e-7
# Upper bound on the number of indices drawn at once by the bootstrap (about 8 MB of int64).
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 20

_METRIC_COLUMNS = ["precision", "recall", "f1", "roc_auc", "average_precision"]
_SIGNIFICANCE_COLUMNS = [
    "model_a",
    "model_b",
    "accuracy_a",
    "accuracy_b",
    "only_a_correct",
    "only_b_correct",
    "statistic",
    "p_value",
    "method",
    "significant",
    "verdict",
]


@dataclass(frozen=True)
class Evaluation:
    """Everything section VI reports about one model on one test set."""

    accuracy: float
    loss: float
    per_class: pd.DataFrame
    averages: pd.DataFrame
    mean_average_precision: float
    confusion: np.ndarray
    accuracy_interval: tuple[float, float]


@dataclass(frozen=True)
class McNemarResult:
    """Outcome of McNemar's test on two models' correctness over the same test images."""

    only_a_correct: int
    only_b_correct: int
    statistic: float
    p_value: float
    method: str


def evaluate_predictions(
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Evaluation:
    """Compute accuracy, loss, per-class and averaged precision/recall/F1/AUC/AP, MAP and the confusion matrix."""
    from sklearn.metrics import (average_precision_score, confusion_matrix, precision_recall_fscore_support,
                                 roc_auc_score)

    labels, probabilities = _validate_predictions(labels, probabilities)
    classes = list(range(NUM_CLASSES))
    predicted = probabilities.argmax(axis=1)
    correct = predicted == labels

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    roc_auc = np.full(NUM_CLASSES, np.nan)
    average_precision = np.full(NUM_CLASSES, np.nan)
    for digit in classes:
        is_digit = labels == digit
        scores = probabilities[:, digit]
        # A class absent from the labels has no positives: its AUC and AP are undefined, not zero.
        if is_digit.any():
            average_precision[digit] = average_precision_score(is_digit, scores)
            if not is_digit.all():
                roc_auc[digit] = roc_auc_score(is_digit, scores)

    per_class = pd.DataFrame(
        {
            "class": np.arange(NUM_CLASSES, dtype=np.int64),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "roc_auc": roc_auc,
            "average_precision": average_precision,
            "support": support.astype(np.int64),
        }
    )

    averages_rows = []
    for average in ("macro", "weighted"):
        averaged_precision, averaged_recall, averaged_f1, _ = precision_recall_fscore_support(
            labels, predicted, labels=classes, average=average, zero_division=0
        )
        weights = support if average == "weighted" else np.ones(NUM_CLASSES)
        averages_rows.append(
            {
                "average": average,
                "precision": float(averaged_precision),
                "recall": float(averaged_recall),
                "f1": float(averaged_f1),
                "roc_auc": _nan_weighted_mean(roc_auc, weights),
                "average_precision": _nan_weighted_mean(average_precision, weights),
            }
        )
    averages = pd.DataFrame(averages_rows, columns=["average", *_METRIC_COLUMNS])

    return Evaluation(
        accuracy=float(correct.mean()),
        loss=_categorical_crossentropy(labels, probabilities),
        per_class=per_class,
        averages=averages,
        mean_average_precision=_nan_weighted_mean(average_precision, np.ones(NUM_CLASSES)),
        confusion=confusion_matrix(labels, predicted, labels=classes),
        accuracy_interval=bootstrap_accuracy_interval(
            correct, confidence=confidence, resamples=resamples, seed=seed
        ),
    )


def bootstrap_accuracy_interval(
    correct: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval for the accuracy given per-image correctness."""
    correct = _as_correct_vector(correct, "correct")
    if correct.size == 0:
        raise ValueError("correct is empty; expected at least one test image")
    if isinstance(confidence, bool) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer (e.g. 2000), got {resamples!r}")

    size = correct.size
    generator = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // size)
    means = np.empty(resamples)
    for start in range(0, resamples, rows_per_chunk):
        stop = min(start + rows_per_chunk, resamples)
        indices = generator.integers(0, size, size=(stop - start, size))
        means[start:stop] = correct[indices].mean(axis=1)

    tail = (1.0 - float(confidence)) / 2.0
    lower, upper = np.quantile(means, [tail, 1.0 - tail])
    return float(lower), float(upper)


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray, *, exact_below: int = 25) -> McNemarResult:
    """McNemar's test of two models on the same images: exact binomial for few discordant pairs, else chi-square."""
    from scipy import stats

    correct_a = _as_correct_vector(correct_a, "correct_a")
    correct_b = _as_correct_vector(correct_b, "correct_b")
    if correct_a.shape != correct_b.shape:
        raise ValueError(
            f"correct_a has {correct_a.size} images and correct_b has {correct_b.size}; "
            "expected correctness vectors over the same test images"
        )
    if isinstance(exact_below, bool) or not isinstance(exact_below, (int, np.integer)) or exact_below < 0:
        raise ValueError(f"exact_below must be a non-negative integer, got {exact_below!r}")

    only_a = int(np.count_nonzero(correct_a & ~correct_b))
    only_b = int(np.count_nonzero(~correct_a & correct_b))
    discordant = only_a + only_b
    if discordant == 0:
        # Identical correctness: no evidence of any difference.
        return McNemarResult(only_a, only_b, statistic=0.0, p_value=1.0, method="exact")
    if discordant < exact_below:
        # statsmodels reports the smaller discordant count as the exact statistic; follow it.
        smaller = min(only_a, only_b)
        p_value = stats.binomtest(smaller, discordant, 0.5, alternative="two-sided").pvalue
        return McNemarResult(only_a, only_b, statistic=float(smaller), p_value=float(min(1.0, p_value)), method="exact")
    # Continuity correction floored at zero so that equal discordant counts give p = 1.
    statistic = max(abs(only_a - only_b) - 1, 0) ** 2 / discordant
    p_value = stats.chi2.sf(statistic, df=1)
    return McNemarResult(only_a, only_b, statistic=float(statistic), p_value=float(p_value), method="chi2")


def significance_table(correct_by_model: Mapping[str, np.ndarray], *, alpha: float = 0.05) -> pd.DataFrame:
    """McNemar's test for every unordered pair of models, with accuracies and a one-line verdict."""
    if not isinstance(correct_by_model, Mapping):
        raise ValueError(
            f"expected a mapping of model name to boolean correctness vector, got {type(correct_by_model).__name__}"
        )
    if isinstance(alpha, bool) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1 (e.g. 0.05), got {alpha!r}")
    vectors = {str(name): _as_correct_vector(values, f"correctness of {name!r}") for name, values in correct_by_model.items()}
    sizes = {name: vector.size for name, vector in vectors.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"models were scored on different numbers of test images {sizes}; expected the same images for all")

    rows = []
    for model_a, model_b in itertools.combinations(vectors, 2):
        result = mcnemar_test(vectors[model_a], vectors[model_b])
        significant = result.p_value < alpha
        rows.append(
            {
                "model_a": model_a,
                "model_b": model_b,
                "accuracy_a": float(vectors[model_a].mean()),
                "accuracy_b": float(vectors[model_b].mean()),
                "only_a_correct": result.only_a_correct,
                "only_b_correct": result.only_b_correct,
                "statistic": result.statistic,
                "p_value": result.p_value,
                "method": result.method,
                "significant": significant,
                "verdict": _verdict(model_a, model_b, result, significant),
            }
        )
    table = pd.DataFrame(rows, columns=_SIGNIFICANCE_COLUMNS)
    return table.astype({"only_a_correct": np.int64, "only_b_correct": np.int64, "significant": bool})


def _verdict(model_a: str, model_b: str, result: McNemarResult, significant: bool) -> str:
    p_text = f"p = {result.p_value:.2g}"
    if not significant:
        return f"no significant difference between {model_a} and {model_b} ({p_text})"
    better, worse = (model_a, model_b) if result.only_a_correct > result.only_b_correct else (model_b, model_a)
    return f"{better} is significantly more accurate than {worse} ({p_text})"


def _categorical_crossentropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    # Same arithmetic as keras.losses.categorical_crossentropy(from_logits=False): renormalise, clip, log.
    normalised = probabilities / probabilities.sum(axis=1, keepdims=True)
    true_class = normalised[np.arange(labels.size), labels]
    clipped = np.clip(true_class, _KERAS_EPSILON, 1.0 - _KERAS_EPSILON)
    return float(-np.log(clipped).mean())


def _nan_weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    defined = ~np.isnan(values)
    if not defined.any() or weights[defined].sum() == 0:
        return float("nan")
    return float(np.average(values[defined], weights=weights[defined]))


def _as_correct_vector(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype != np.bool_:
        raise ValueError(
            f"{name} must be a 1-D boolean vector (e.g. predicted == labels), "
            f"got dtype {array.dtype} with shape {array.shape}"
        )
    return array
