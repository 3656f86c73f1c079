"""The nightly runs' accuracy per model over the dates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mnist_models.plots.history import plot_history



def test_history_draws_one_series_per_model_over_dates(history):
    figure = plot_history(history)
    axes = figure.axes[0]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["DNN", "ConvNet"]
    series = list(axes.containers)
    assert len(series) == 2
    dnn_line = series[0].lines[0]
    np.testing.assert_allclose(np.asarray(dnn_line.get_ydata(), dtype=float), [0.96] * 4)
    assert len(axes.collections) >= 2, "each model has an interval band"


def test_history_accepts_datetimes_as_well_as_iso_strings(history):
    as_datetimes = history.assign(date=pd.to_datetime(history["date"]))
    figure = plot_history(as_datetimes)
    assert len(figure.axes[0].containers) == 2


def test_history_with_a_single_run_keeps_a_readable_date_range(history):
    first_night = history[history["date"] == history["date"].iloc[0]]
    axes = plot_history(first_night).axes[0]
    low, high = axes.get_xlim()  # matplotlib date numbers are days
    assert 0 < high - low <= 3


def test_history_rejects_bad_input(history):
    with pytest.raises(ValueError, match="does not contain"):
        plot_history(history.assign(accuracy_high=history["accuracy"] - 0.01))
    with pytest.raises(ValueError, match="'date'"):
        plot_history(history.assign(date="last tuesday"))
    with pytest.raises(ValueError, match=r"missing columns \['accuracy_low', 'accuracy_high'\]"):
        plot_history(history.drop(columns=["accuracy_low", "accuracy_high"]))
