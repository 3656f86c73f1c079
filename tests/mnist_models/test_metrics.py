"""Unit tests for mnist_models.metrics on tiny arrays, checked by hand and against scikit-learn/statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from mnist_models.metrics import (
    NUM_CLASSES,
    Evaluation,
    bootstrap_accuracy_interval,
    evaluate_predictions,
    mcnemar_test,
    predictions_frame,
    probabilities_from_frame,
    significance_table,
)

# Hand example: six images of digits 0, 1, 2.
#   labels    0 0 1 1 2 2
#   predicted 0 1 1 1 2 0
# The predicted class gets 0.7; on a wrong row the true class gets 0.2 and the other 8 share 0.1;
# on a right row the other 9 share 0.3.
HAND_LABELS = np.array([0, 0, 1, 1, 2, 2])
HAND_PREDICTED = np.array([0, 1, 1, 1, 2, 0])


def _hand_probabilities() -> np.ndarray:
    rows = []
    for label, predicted in zip(HAND_LABELS, HAND_PREDICTED):
        if label == predicted:
            row = np.full(NUM_CLASSES, 0.3 / 9)
        else:
            row = np.full(NUM_CLASSES, 0.1 / 8)
            row[label] = 0.2
        row[predicted] = 0.7
        rows.append(row)
    return np.array(rows)


def _random_predictions(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(NUM_CLASSES), generator.integers(0, NUM_CLASSES, size - NUM_CLASSES)])
    probabilities = generator.dirichlet(np.ones(NUM_CLASSES), size=size)
    # Lean towards the true class so the metrics are informative rather than all near chance.
    probabilities[np.arange(size), labels] += generator.uniform(0.0, 1.5, size)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return labels, probabilities


def _correctness_pair(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    correct_a = np.array([True] * both + [True] * only_a + [False] * only_b + [False] * neither)
    correct_b = np.array([True] * both + [False] * only_a + [True] * only_b + [False] * neither)
    return correct_a, correct_b


@pytest.fixture(scope="module")
def hand_evaluation() -> Evaluation:
    return evaluate_predictions(HAND_LABELS, _hand_probabilities(), resamples=200)


def test_hand_example_accuracy_confusion_and_loss(hand_evaluation: Evaluation) -> None:
    assert hand_evaluation.accuracy == pytest.approx(4 / 6)
    expected_confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    # Rows are true labels: 0 -> {0, 1}, 1 -> {1, 1}, 2 -> {2, 0}.
    expected_confusion[:3, :3] = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    np.testing.assert_array_equal(hand_evaluation.confusion, expected_confusion)
    # True-class probability is 0.7 on the four right rows and 0.2 on the two wrong ones.
    assert hand_evaluation.loss == pytest.approx(-(4 * np.log(0.7) + 2 * np.log(0.2)) / 6)


def test_hand_example_per_class(hand_evaluation: Evaluation) -> None:
    per_class = hand_evaluation.per_class.set_index("class")
    # Class 0: TP 1, FP 1 (image 5), FN 1 (image 1) -> P 1/2, R 1/2, F1 1/2.
    # Class 1: TP 2, FP 1 (image 1), FN 0          -> P 2/3, R 1,   F1 0.8.
    # Class 2: TP 1, FP 0, FN 1 (image 5)          -> P 1,   R 1/2, F1 2/3.
    np.testing.assert_allclose(per_class.loc[[0, 1, 2], "precision"], [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(per_class.loc[[0, 1, 2], "recall"], [1 / 2, 1, 1 / 2])
    np.testing.assert_allclose(per_class.loc[[0, 1, 2], "f1"], [1 / 2, 0.8, 2 / 3])
    np.testing.assert_array_equal(per_class["support"], [2, 2, 2, 0, 0, 0, 0, 0, 0, 0])
    # Class 0 scores: positives 0.7, 0.2; negatives 0.7 (image 5), 1/30 x3.
    # Pairs won: 0.7 beats 3 and ties 1 (3.5), 0.2 beats 3 -> AUC 6.5 / 8.
    assert per_class.loc[0, "roc_auc"] == pytest.approx(6.5 / 8)
    # Ranking 0.7 {pos, neg}, 0.2 {pos}: P 1/2 at R 1/2, P 2/3 at R 1 -> AP 1/2*1/2 + 1/2*2/3.
    assert per_class.loc[0, "average_precision"] == pytest.approx(0.25 + 1 / 3)
    # Digits 3..9 never occur, so their AUC and AP are undefined rather than zero.
    assert per_class.loc[3:, ["roc_auc", "average_precision"]].isna().all().all()
    macro = hand_evaluation.averages.set_index("average").loc["macro"]
    # Macro over all ten digits, absent ones counting as 0: (1/2 + 2/3 + 1) / 10.
    assert macro["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 10)
    low, high = hand_evaluation.accuracy_interval
    assert 0.0 <= low <= 4 / 6 <= high <= 1.0


def test_frame_layout_and_round_trip() -> None:
    probabilities = _hand_probabilities()
    frame = predictions_frame(HAND_LABELS, probabilities)
    assert list(frame.columns) == ["label", "predicted", *[f"prob_{digit}" for digit in range(10)]]
    assert frame["label"].dtype == np.uint8 and frame["predicted"].dtype == np.uint8
    assert (frame[[f"prob_{digit}" for digit in range(10)]].dtypes == np.float32).all()
    np.testing.assert_array_equal(frame["predicted"], HAND_PREDICTED)
    labels, recovered = probabilities_from_frame(frame)
    np.testing.assert_array_equal(labels, HAND_LABELS)
    assert recovered.shape == (6, NUM_CLASSES)
    np.testing.assert_allclose(recovered, probabilities, rtol=1e-6)


def test_averages_and_auc_match_sklearn() -> None:
    labels, probabilities = _random_predictions(300, seed=1)
    predicted = probabilities.argmax(axis=1)
    evaluation = evaluate_predictions(labels, probabilities, resamples=100)
    averages = evaluation.averages.set_index("average")
    assert list(averages.index) == ["macro", "weighted"]
    for average in ("macro", "weighted"):
        row = averages.loc[average]
        assert row["precision"] == pytest.approx(precision_score(labels, predicted, average=average, zero_division=0))
        assert row["recall"] == pytest.approx(recall_score(labels, predicted, average=average, zero_division=0))
        assert row["f1"] == pytest.approx(f1_score(labels, predicted, average=average, zero_division=0))
        assert row["roc_auc"] == pytest.approx(
            roc_auc_score(labels, probabilities, multi_class="ovr", average=average)
        )
    one_hot = np.eye(NUM_CLASSES)[labels]
    np.testing.assert_allclose(
        evaluation.per_class["roc_auc"], roc_auc_score(one_hot, probabilities, average=None)
    )
    assert evaluation.accuracy == pytest.approx(np.mean(predicted == labels))


def test_map_is_mean_of_sklearn_average_precision() -> None:
    labels, probabilities = _random_predictions(300, seed=2)
    evaluation = evaluate_predictions(labels, probabilities, resamples=100)
    per_class = [average_precision_score(labels == digit, probabilities[:, digit]) for digit in range(NUM_CLASSES)]
    np.testing.assert_allclose(evaluation.per_class["average_precision"], per_class)
    assert evaluation.mean_average_precision == pytest.approx(np.mean(per_class))


def test_loss_matches_sklearn_log_loss() -> None:
    labels, probabilities = _random_predictions(300, seed=3)
    evaluation = evaluate_predictions(labels, probabilities, resamples=100)
    assert evaluation.loss == pytest.approx(log_loss(labels, probabilities, labels=range(NUM_CLASSES)))


def test_loss_clips_like_keras() -> None:
    probabilities = np.zeros((1, NUM_CLASSES))
    probabilities[0, 1] = 1.0
    # The true class has probability 0: Keras clips it to 1e-7 instead of returning infinity.
    assert evaluate_predictions([0], probabilities, resamples=10).loss == pytest.approx(-np.log(1e-7))


def test_bootstrap_interval_contains_accuracy_and_narrows_with_more_data() -> None:
    generator = np.random.default_rng(4)
    small = generator.random(100) < 0.9
    large = generator.random(10_000) < 0.9
    small_low, small_high = bootstrap_accuracy_interval(small, resamples=400)
    large_low, large_high = bootstrap_accuracy_interval(large, resamples=400)
    assert small_low <= small.mean() <= small_high
    assert large_low <= large.mean() <= large_high
    assert large_high - large_low < (small_high - small_low) / 3


def test_bootstrap_interval_is_reproducible_for_a_seed() -> None:
    correct = np.random.default_rng(5).random(500) < 0.8
    first = bootstrap_accuracy_interval(correct, resamples=300, seed=7)
    assert bootstrap_accuracy_interval(correct, resamples=300, seed=7) == first
    assert bootstrap_accuracy_interval(correct, resamples=300, seed=8) != first
    narrower = bootstrap_accuracy_interval(correct, confidence=0.5, resamples=300, seed=7)
    assert first[0] < narrower[0] and narrower[1] < first[1]


@pytest.mark.parametrize(
    ("counts", "method"),
    [((50, 3, 9, 8), "exact"), ((50, 0, 6, 8), "exact"), ((900, 40, 20, 40), "chi2"), ((900, 12, 30, 40), "chi2")],
)
def test_mcnemar_matches_statsmodels(counts: tuple[int, int, int, int], method: str) -> None:
    both, only_a, only_b, neither = counts
    correct_a, correct_b = _correctness_pair(*counts)
    result = mcnemar_test(correct_a, correct_b)
    reference = statsmodels_mcnemar([[both, only_a], [only_b, neither]], exact=method == "exact", correction=True)
    assert (result.only_a_correct, result.only_b_correct, result.method) == (only_a, only_b, method)
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)


def test_mcnemar_without_evidence_gives_p_one() -> None:
    assert mcnemar_test(*_correctness_pair(10, 0, 0, 2)).p_value == 1.0
    # Equal discordant counts: the continuity correction is floored at zero.
    tied = mcnemar_test(*_correctness_pair(10, 30, 30, 2))
    assert (tied.method, tied.statistic, tied.p_value) == ("chi2", 0.0, 1.0)


def test_significance_table_rows_and_verdicts() -> None:
    generator = np.random.default_rng(6)
    convnet = generator.random(2000) < 0.99
    resnet = convnet.copy()
    # Resnet loses 4 of convnet's right answers and gains 2 of its wrong ones: p = 0.69.
    resnet[np.flatnonzero(convnet)[:4]] = False
    resnet[np.flatnonzero(~convnet)[:2]] = True
    dnn = convnet & (generator.random(2000) < 0.9)
    table = significance_table({"dnn": dnn, "convnet": convnet, "resnet": resnet})
    assert len(table) == 3
    assert list(zip(table["model_a"], table["model_b"])) == [("dnn", "convnet"), ("dnn", "resnet"), ("convnet", "resnet")]
    assert table["significant"].dtype == bool
    first, _, last = table.to_dict("records")
    assert first["significant"] and first["accuracy_a"] == pytest.approx(dnn.mean())
    assert first["verdict"].startswith("convnet is significantly more accurate than dnn (p = ")
    assert not last["significant"] and last["p_value"] == pytest.approx(0.6875)
    assert last["verdict"] == f"no significant difference between convnet and resnet (p = {last['p_value']:.2g})"
    assert significance_table({"dnn": dnn}).empty


@pytest.mark.parametrize(
    ("labels", "probabilities", "message"),
    [
        (np.zeros(5, dtype=int), np.full((6, 10), 0.1), "5 entries but probabilities has 6 rows"),
        (np.zeros(6, dtype=int), np.full((6, 9), 1 / 9), r"shape \(n, 10\)"),
        (np.array([0, 1, 10]), np.full((3, 10), 0.1), r"0\.\.9, got \[10\]"),
        (np.eye(10)[[0, 1]], np.full((2, 10), 0.1), "one-hot"),
        (np.array([0, 1]), np.full((2, 10), 2.0), "not logits"),
        (np.array([], dtype=int), np.empty((0, 10)), "empty"),
    ],
)
def test_bad_predictions_raise_value_error(labels: np.ndarray, probabilities: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_predictions(labels, probabilities)
    with pytest.raises(ValueError, match=message):
        predictions_frame(labels, probabilities)


def test_bad_correctness_raises_value_error() -> None:
    with pytest.raises(ValueError, match="same test images"):
        mcnemar_test(np.ones(5, dtype=bool), np.ones(6, dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        mcnemar_test(np.ones(5), np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="different numbers of test images"):
        significance_table({"a": np.ones(5, dtype=bool), "b": np.ones(6, dtype=bool)})
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_accuracy_interval(np.ones(5, dtype=bool), confidence=95)
    with pytest.raises(ValueError, match="lacks columns"):
        probabilities_from_frame(pd.DataFrame({"label": [0]}))
