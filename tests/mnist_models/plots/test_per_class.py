"""One run's figures per class: ROC curves (AUCs checked against scikit-learn), F1 bars, confusion matrix."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mnist_models.plots.per_class import plot_confusion_matrix, plot_f1_per_class, plot_roc_curves
from tests.mnist_models.plots.synthetic import DIGITS, data_axes


def test_roc_curves_have_ten_entries_with_sklearn_aucs(predictions):
    labels, probabilities = predictions
    figure = plot_roc_curves(labels, probabilities, "ROC, DNN on test data")
    main = data_axes(figure)[0]
    assert main.get_title() == "ROC, DNN on test data"
    entries = [text.get_text() for text in main.get_legend().get_texts()]
    assert len(entries) == DIGITS
    for digit, entry in enumerate(entries):
        assert entry.startswith(str(digit))
        plotted = float(re.search(r"AUC ([0-9.]+)", entry).group(1))
        expected = roc_auc_score(labels == digit, probabilities[:, digit])
        assert plotted == pytest.approx(expected, abs=5e-4)
    diagonal = [0, 1]
    chance = [line for line in main.get_lines() if list(line.get_xdata()) == list(line.get_ydata()) == diagonal]
    assert len(chance) == 1


@pytest.mark.parametrize(
    ("labels", "probabilities", "message"),
    [
        (np.arange(10), np.full((9, 10), 0.1), "one per example"),
        (np.arange(10), np.full((10,), 0.1), "shape"),
        (np.zeros(10, dtype=int), np.full((10, 10), 0.1), "no examples"),
        (np.arange(10) + 1, np.full((10, 10), 0.1), "0..9"),
    ],
)
def test_roc_curves_reject_bad_input(labels, probabilities, message):
    with pytest.raises(ValueError, match=message):
        plot_roc_curves(labels, probabilities, "ROC")


def test_f1_per_class_draws_grouped_bars_up_to_one(per_class):
    figure = plot_f1_per_class(per_class, "F1, DNN")
    axes = figure.axes[0]
    bars = axes.patches
    assert len(bars) == 3 * DIGITS
    heights = np.array([bar.get_height() for bar in bars]).reshape(3, DIGITS)
    np.testing.assert_allclose(heights, per_class[["precision", "recall", "f1"]].to_numpy().T)
    low, high = axes.get_ylim()
    assert high == 1.0
    assert 0.0 <= low < per_class[["precision", "recall", "f1"]].min().min()
    assert low > 0.5, "a strong model's bars should not be squashed against a zero baseline"
    assert [label.get_text() for label in axes.get_xticklabels()] == [str(digit) for digit in range(DIGITS)]


def test_f1_per_class_rejects_bad_input(per_class):
    with pytest.raises(ValueError, match=r"missing columns \['f1'\]"):
        plot_f1_per_class(per_class.drop(columns="f1"), "F1")
    with pytest.raises(ValueError, match=r"recall must lie in \[0, 1\]"):
        plot_f1_per_class(per_class.assign(recall=per_class["recall"] * 100), "F1")


def test_confusion_matrix_annotates_counts_with_true_rows_and_predicted_columns():
    matrix = np.diag(np.arange(100, 110))
    matrix[3, 8] = 7  # seven true 3s predicted as 8
    figure = plot_confusion_matrix(matrix, "Confusion, DNN")
    axes = data_axes(figure)[0]
    assert axes.get_ylabel() == "true label" and axes.get_xlabel() == "predicted label"
    cells = {(round(text.get_position()[1]), round(text.get_position()[0])): text.get_text() for text in axes.texts}
    assert len(cells) == 100
    assert cells[(3, 8)] == "7" and cells[(8, 3)] == "0"
    assert cells[(9, 9)] == "109"
    assert "Confusion, DNN" in axes.get_title()


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.ones((10, 9), dtype=int), "square"),
        (np.ones(10, dtype=int), "square"),
        (-np.eye(10, dtype=int), "non-negative"),
        (np.zeros((10, 10), dtype=int), "all zeros"),
    ],
)
def test_confusion_matrix_rejects_bad_input(matrix, message):
    with pytest.raises(ValueError, match=message):
        plot_confusion_matrix(matrix, "Confusion")
