"""Training and validation accuracy per epoch, one panel per model."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_models.plots.accuracy_curves import plot_accuracy_curves



def test_accuracy_curves_plot_training_and_validation_per_model(histories):
    figure = plot_accuracy_curves(histories)
    panels = figure.axes
    assert len(panels) == len(histories)
    for axes, (model, frame) in zip(panels, histories.items()):
        assert axes.get_title().startswith(model)
        training, validation = axes.get_lines()
        np.testing.assert_allclose(training.get_xdata(), frame["epoch"])
        np.testing.assert_allclose(training.get_ydata(), frame["accuracy"])
        np.testing.assert_allclose(validation.get_ydata(), frame["val_accuracy"])
        assert [text.get_text() for text in axes.get_legend().get_texts()] == ["training", "validation"]


def test_accuracy_curves_share_a_y_range_unless_one_model_would_flatten_the_others(histories):
    panels = plot_accuracy_curves(histories).axes
    assert len({axes.get_ylim() for axes in panels}) == 1

    diverged = histories["DNN"].assign(accuracy=0.11, val_accuracy=0.11)  # e.g. learning rate 0.1
    figure = plot_accuracy_curves({**histories, "DNN": diverged})
    convnet = figure.axes[1]
    assert convnet.get_ylim()[0] > 0.5, "the healthy model keeps a readable range"
    assert "differ" in figure.get_suptitle()


def test_accuracy_curves_reject_bad_input(histories):
    with pytest.raises(ValueError, match=r"'DNN'.*missing columns \['val_accuracy'\]"):
        plot_accuracy_curves({"DNN": histories["DNN"].drop(columns="val_accuracy")})
    with pytest.raises(ValueError, match="empty"):
        plot_accuracy_curves({"DNN": histories["DNN"].iloc[0:0]})
