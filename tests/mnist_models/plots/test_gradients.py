"""The gradient experiment's figures: kernel histograms, gradient norms, the band across seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb

from mnist_models.plots.gradients import plot_gradient_norm_band, plot_gradient_norms, plot_kernel_histograms
from tests.mnist_models.plots.synthetic import GRADIENT_VARIANTS, PLAIN_LAYERS, RESIDUAL_LAYERS


def test_kernel_histograms_draw_one_ridge_per_epoch_in_one_panel_per_variant(kernel_histograms):
    figure = plot_kernel_histograms(kernel_histograms)
    panels = figure.axes
    assert [axes.get_title() for axes in panels] == list(kernel_histograms)
    for axes, frame in zip(panels, kernel_histograms.values()):
        epochs = sorted(frame["epoch"].unique())
        assert len(axes.collections) == len(epochs)
        tick_labels = [label.get_text() for label in axes.get_yticklabels()]
        assert "0" in tick_labels and str(epochs[-1]) in tick_labels
        assert "epoch" in axes.get_ylabel()
        assert "weight" in axes.get_xlabel()
        # colour darkens with epoch: the last ridge is darker than the first
        first, last = (to_rgb(axes.collections[index].get_facecolor()[0]) for index in (0, -1))
        assert sum(last) < sum(first)
        # the x range covers every bin edge
        low, high = axes.get_xlim()
        assert low <= frame["bin_left"].min() and high >= frame["bin_right"].max()


def test_kernel_histograms_reject_bad_input(kernel_histograms):
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_kernel_histograms({})
    residual = kernel_histograms["with shortcut (resnet)"]
    broken = {**kernel_histograms, "with shortcut (resnet)": residual.drop(columns="count")}
    with pytest.raises(ValueError, match=r"with shortcut.*missing columns \['count'\]"):
        plot_kernel_histograms(broken)
    inverted = residual.rename(columns={"bin_left": "bin_right", "bin_right": "bin_left"})
    with pytest.raises(ValueError, match="bin_right > bin_left"):
        plot_kernel_histograms({"inverted": inverted})


def test_gradient_norms_keep_layer_order_log_scale_and_a_shared_y_range(gradient_norms):
    figure = plot_gradient_norms(gradient_norms)
    panels = figure.axes
    assert [axes.get_title() for axes in panels] == list(gradient_norms)
    for axes, layers in zip(panels, (PLAIN_LAYERS, RESIDUAL_LAYERS)):
        assert axes.get_yscale() == "log"
        assert [text.get_text() for text in axes.get_legend().get_texts()] == layers
        assert [line.get_label() for line in axes.get_lines()] == layers
    assert panels[0].get_ylim() == panels[1].get_ylim()
    frame = gradient_norms["with shortcut (resnet)"]
    shortcut = panels[1].get_lines()[RESIDUAL_LAYERS.index("shortcut")]
    expected = frame[frame["layer"] == "shortcut"].sort_values("epoch")
    np.testing.assert_allclose(shortcut.get_ydata(), expected["gradient_norm"])


def test_gradient_norms_reject_bad_input(gradient_norms):
    frame = gradient_norms["with shortcut (resnet)"]
    with pytest.raises(ValueError, match="more than once"):
        plot_gradient_norms({"twice": pd.concat([frame, frame.head(1)])})
    with pytest.raises(ValueError, match=r"missing columns \['gradient_norm'\]"):
        plot_gradient_norms({"renamed": frame.rename(columns={"gradient_norm": "norm"})})
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_gradient_norms([])


def test_gradient_norm_band_draws_the_mean_and_a_min_max_band_per_variant(seed_gradients):
    figure = plot_gradient_norm_band(seed_gradients)
    axes = figure.axes[0]
    variants = list(GRADIENT_VARIANTS)
    target = seed_gradients[seed_gradients["layer"] == "target_layer"]
    lines = axes.get_lines()
    bands = [collection for collection in axes.collections if isinstance(collection, PolyCollection)]
    assert len(lines) == len(bands) == len(variants)
    for variant, line, band in zip(variants, lines, bands):
        rows = target[target["variant"] == variant]
        per_epoch = rows.groupby("epoch")["gradient_norm"].agg(["mean", "min", "max"])
        np.testing.assert_allclose(line.get_xdata(), per_epoch.index)
        np.testing.assert_allclose(line.get_ydata(), per_epoch["mean"])
        vertices = band.get_paths()[0].vertices
        for epoch, row in per_epoch.iterrows():
            heights = vertices[np.isclose(vertices[:, 0], epoch), 1]
            assert heights.min() == pytest.approx(row["min"]) and heights.max() == pytest.approx(row["max"])
    assert axes.get_yscale() == "log", "target_layer norms span 1e-5..1e-1"
    assert "log" in axes.get_ylabel() and "target_layer" in axes.get_ylabel()
    expected = [(f"{variant} (mean of 3 seeds)", f"{variant}: min–max across 3 seeds") for variant in variants]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [text for pair in expected for text in pair]
    assert axes.get_title() == "Gradient norm of target_layer per epoch: mean and min–max band across 3 seeds"


def test_gradient_norm_band_draws_only_the_named_layer_on_a_linear_axis_when_norms_are_close(seed_gradients):
    # dense norms are 1e4 times target_layer's and within a factor of 100 of each other; none of target_layer's show
    dense = seed_gradients[seed_gradients["variant"] == "with shortcut (resnet)"]
    axes = plot_gradient_norm_band(dense, layer="dense").axes[0]
    assert axes.get_yscale() == "linear" and axes.get_ylabel() == "gradient norm of dense"
    (line,) = axes.get_lines()
    expected = dense[dense["layer"] == "dense"].groupby("epoch")["gradient_norm"].mean()
    np.testing.assert_allclose(line.get_ydata(), expected)
    assert "dense" in axes.get_title()


def test_gradient_norm_band_with_one_seed_draws_lines_without_a_band(seed_gradients):
    single = seed_gradients[seed_gradients["seed"] == 43]
    figure = plot_gradient_norm_band(single)
    axes = figure.axes[0]
    assert [collection for collection in axes.collections if isinstance(collection, PolyCollection)] == []
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend == [f"{variant} (1 seed)" for variant in GRADIENT_VARIANTS]
    expected = single[(single["layer"] == "target_layer") & (single["variant"] == "with shortcut (resnet)")]
    np.testing.assert_allclose(axes.get_lines()[1].get_ydata(), expected.sort_values("epoch")["gradient_norm"])
    assert "no band" in axes.get_title()
    figure.canvas.draw()


def test_gradient_norm_band_rejects_bad_input(seed_gradients):
    with pytest.raises(ValueError, match=r"no rows for layer 'conv_z'; layers present: \['target_layer', 'dense'\]"):
        plot_gradient_norm_band(seed_gradients, layer="conv_z")
    with pytest.raises(ValueError, match=r"missing columns \['variant'\]"):
        plot_gradient_norm_band(seed_gradients.rename(columns={"variant": "model"}))
    with pytest.raises(ValueError, match=r"'target_layer' rows\): variant .* epoch 1 appears more than once"):
        plot_gradient_norm_band(pd.concat([seed_gradients, seed_gradients.head(1)]))
    with pytest.raises(ValueError, match="non-negative"):
        plot_gradient_norm_band(seed_gradients.assign(gradient_norm=-seed_gradients["gradient_norm"]))
    with pytest.raises(ValueError, match="every gradient norm of layer 'target_layer' is zero"):
        plot_gradient_norm_band(seed_gradients.assign(gradient_norm=0.0))


def test_gradient_norms_of_several_seeds_draw_a_band_per_layer():
    rows = [{"seed": seed, "epoch": epoch, "layer": layer, "gradient_norm": scale * (1 + epoch) * (1 + 0.1 * seed)}
            for seed in (1, 2, 3) for epoch in range(4) for layer, scale in (("target_layer", 0.01), ("dense", 1.0))]
    figure = plot_gradient_norms({"with shortcut (resnet)": pd.DataFrame(rows)})
    axes = figure.axes[0]
    assert len(axes.collections) == 2  # one min–max band per layer
    target = axes.get_lines()[0]
    assert np.allclose(target.get_ydata(), [0.01 * (1 + epoch) * 1.2 for epoch in range(4)])  # the mean of the seeds
    assert "3 seeds" in axes.get_title()
