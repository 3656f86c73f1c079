"""Test accuracy by learning rate: the heatmap, and the means with intervals and seeds across seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb

from mnist_models.plots.lr_sweep import plot_lr_sweep_across_seeds, plot_lr_sweep_heatmap
from tests.mnist_models.plots.synthetic import SEED_OFFSETS, STUDY_TABLE_5_1, data_axes, replicates_of


def test_lr_sweep_heatmap_sorts_rates_descending_and_annotates_cells(sweep):
    figure = plot_lr_sweep_heatmap(sweep)
    axes = data_axes(figure)[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["0.1", "0.01", "0.001", "0.0001"]
    assert [label.get_text() for label in axes.get_yticklabels()] == list(STUDY_TABLE_5_1)
    cells = {(round(text.get_position()[1]), round(text.get_position()[0])): text for text in axes.texts}
    assert len(cells) == 12
    assert cells[(2, 0)].get_text() == "0.098"  # ResNet at LR 0.1
    assert cells[(1, 2)].get_text() == "0.991"  # ConvNet at LR 0.001
    assert cells[(2, 3)].get_text() == "0.990"  # three decimals, trailing zero kept
    # readable text: white on the dark (low accuracy) cell, black on the bright one
    assert to_rgb(cells[(2, 0)].get_color()) == (1.0, 1.0, 1.0)
    assert to_rgb(cells[(1, 2)].get_color()) == (0.0, 0.0, 0.0)
    assert any(axes.get_label() == "<colorbar>" and axes.get_ylabel() for axes in figure.axes)


def test_lr_sweep_heatmap_averages_repeated_runs_and_says_so(sweep):
    repeated = pd.concat([sweep, sweep.assign(accuracy=sweep["accuracy"] - 0.002)], ignore_index=True)
    axes = data_axes(plot_lr_sweep_heatmap(repeated))[0]
    cells = {(round(text.get_position()[1]), round(text.get_position()[0])): text.get_text() for text in axes.texts}
    assert cells[(1, 2)] == "0.990"
    assert "mean of" in axes.get_title()


def test_lr_sweep_heatmap_rejects_bad_input(sweep):
    with pytest.raises(ValueError, match=r"missing columns \['learning_rate'\]"):
        plot_lr_sweep_heatmap(sweep.rename(columns={"learning_rate": "lr"}))
    with pytest.raises(ValueError, match="empty"):
        plot_lr_sweep_heatmap(sweep.iloc[0:0])


def test_lr_sweep_heatmap_marks_diverged_and_failed_cells():
    sweep = pd.DataFrame({"model": ["dnn", "dnn", "convnet", "convnet"], "learning_rate": [0.1, 0.001, 0.1, 0.001],
                          "accuracy": [0.098, 0.96, np.nan, 0.98],
                          "status": ["diverged at epoch 1", "trained", "failed", "trained"]})
    figure = plot_lr_sweep_heatmap(sweep)
    texts = sorted(text.get_text() for text in figure.axes[0].texts)
    assert texts == ["0.098\ndiverged", "0.960", "0.980", "failed"]
    with pytest.raises(ValueError, match="finite numbers"):  # only a failed run may lack its accuracy
        plot_lr_sweep_heatmap(sweep.assign(status="trained"))


def _mean_lines(axes) -> list:
    return [line for line in axes.get_lines() if not line.get_label().startswith("_")]


def test_lr_sweep_across_seeds_draws_means_intervals_and_every_seed(replicates, seed_sweep):
    # a t-interval is symmetric; widen its top so that the bars' two ends are told apart
    replicates = replicates.assign(accuracy_mean_high=replicates["accuracy_mean_high"] + 0.001)
    figure = plot_lr_sweep_across_seeds(replicates, seed_sweep)
    axes = figure.axes[0]
    models = list(STUDY_TABLE_5_1)
    means = _mean_lines(axes)
    assert [line.get_label() for line in means] == [f"{model} (3 seeds)" for model in models]
    bars = axes.containers
    dots = [collection for collection in axes.collections if isinstance(collection, PathCollection)]
    assert len(bars) == len(dots) == len(models)
    for model, line, container, scatter in zip(models, means, bars, dots):
        cells = replicates[replicates["model"] == model].sort_values("learning_rate")
        np.testing.assert_allclose(line.get_ydata(), cells["accuracy_mean"])
        # models are nudged sideways by under a tenth of a decade, never onto a neighbouring rate
        np.testing.assert_allclose(np.log10(line.get_xdata()), np.log10(cells["learning_rate"]), atol=0.1)
        segments = np.array(container.lines[2][0].get_segments())  # one vertical bar per learning rate
        np.testing.assert_allclose(segments[:, 0, 1], cells["accuracy_mean_low"])
        np.testing.assert_allclose(segments[:, 1, 1], cells["accuracy_mean_high"])
        runs = seed_sweep[seed_sweep["model"] == model]
        np.testing.assert_allclose(sorted(scatter.get_offsets()[:, 1]), sorted(runs["accuracy"]))
    assert axes.get_xscale() == "log"
    left, right = axes.get_xlim()
    assert left > 0.1 > 0.0001 > right, "largest learning rate on the left, as in study table 5.1"
    assert sorted(label.get_text() for label in axes.get_xticklabels()) == ["0.0001", "0.001", "0.01", "0.1"]
    # the diverged LR 0.1 (accuracy ~0.1) beside 0.99 models: logit keeps both readable
    assert axes.get_yscale() == "logit" and "logit" in axes.get_ylabel()
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        *(f"{model} (3 seeds)" for model in models),
        "one seed's accuracy",
        "mean, 95% t-interval across seeds",
    ]
    assert axes.get_title() == "Test accuracy by learning rate: mean and 95% interval across 3 seeds"


def test_lr_sweep_across_seeds_keeps_a_linear_axis_without_a_diverged_rate(seed_sweep):
    healthy = seed_sweep[seed_sweep["learning_rate"] <= 0.001]
    axes = plot_lr_sweep_across_seeds(replicates_of(healthy), healthy).axes[0]
    assert axes.get_yscale() == "linear"
    assert axes.get_ylabel() == "test accuracy"


def test_lr_sweep_across_seeds_with_one_seed_draws_no_interval(seed_sweep):
    single = seed_sweep[seed_sweep["seed"] == 42]
    replicates = replicates_of(single)
    assert replicates["accuracy_mean_low"].isna().all()
    figure = plot_lr_sweep_across_seeds(replicates, single)
    axes = figure.axes[0]
    assert axes.containers == [], "no error bars where there is no interval"
    dnn = [STUDY_TABLE_5_1["DNN"][rate] + SEED_OFFSETS[42] for rate in (0.0001, 0.001, 0.01, 0.1)]
    np.testing.assert_allclose(_mean_lines(axes)[0].get_ydata(), dnn)
    assert [text.get_text() for text in axes.get_legend().get_texts()][-1] == "one seed's accuracy"
    assert "one seed" in axes.get_title() and "interval" in axes.get_title()
    figure.canvas.draw()


def test_lr_sweep_across_seeds_says_when_cells_have_different_seed_counts(seed_sweep):
    # ResNet at LR 0.1 has only seed 42: that cell gets no bar, the legend and title say "up to"
    dropped = (seed_sweep["model"] == "ResNet") & (seed_sweep["learning_rate"] == 0.1) & (seed_sweep["seed"] != 42)
    uneven = seed_sweep[~dropped]
    axes = plot_lr_sweep_across_seeds(replicates_of(uneven), uneven).axes[0]
    assert [line.get_label() for line in _mean_lines(axes)][-1] == "ResNet (1–3 seeds)"
    resnet_bars = np.array(axes.containers[-1].lines[2][0].get_segments())
    assert len(resnet_bars) == 3, "one bar per learning rate with two seeds or more"
    assert "across up to 3 seeds" in axes.get_title()


def test_lr_sweep_across_seeds_rejects_bad_input(replicates, seed_sweep):
    with pytest.raises(ValueError, match=r"replicates table: missing columns \['accuracy_mean_high'\]"):
        plot_lr_sweep_across_seeds(replicates.drop(columns="accuracy_mean_high"), seed_sweep)
    with pytest.raises(ValueError, match=r"one row per seed\): missing columns \['seed'\]"):
        plot_lr_sweep_across_seeds(replicates, seed_sweep.drop(columns="seed"))
    with pytest.raises(ValueError, match="2 seeds in the sweep but 3 in the replicates table"):
        plot_lr_sweep_across_seeds(replicates, seed_sweep[seed_sweep["seed"] != 44])
    with pytest.raises(ValueError, match="'ResNet' at learning rate 0.0001 has runs but no row"):
        plot_lr_sweep_across_seeds(replicates.iloc[:-1], seed_sweep)
    with pytest.raises(ValueError, match="does not contain accuracy_mean"):
        below = replicates.assign(accuracy_mean_high=replicates["accuracy_mean"] - 0.01)
        plot_lr_sweep_across_seeds(below, seed_sweep)
    half_open = replicates.assign(accuracy_mean_high=np.nan)
    with pytest.raises(ValueError, match="both be finite or both NaN"):
        plot_lr_sweep_across_seeds(half_open, seed_sweep)
    with pytest.raises(ValueError, match="appears more than once"):
        plot_lr_sweep_across_seeds(pd.concat([replicates, replicates.head(1)]), seed_sweep)
    with pytest.raises(ValueError, match="learning rates must be positive"):
        plot_lr_sweep_across_seeds(replicates.assign(learning_rate=0.0), seed_sweep)
