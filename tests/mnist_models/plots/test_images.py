"""The first images of the data set, each titled with its label."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_models.plots.images import plot_first_images



def test_first_images_is_a_5_by_5_grid_titled_with_labels(images):
    pixels, labels = images
    figure = plot_first_images(pixels[..., np.newaxis], labels)  # (N, 28, 28, 1) is accepted too
    grid = figure.axes
    assert len(grid) == 25
    assert [axes.get_title() for axes in grid] == [str(label) for label in labels[:25]]
    rows = {round(axes.get_position().y0, 3) for axes in grid}
    columns = {round(axes.get_position().x0, 3) for axes in grid}
    assert len(rows) == 5 and len(columns) == 5
    np.testing.assert_allclose(grid[7].images[0].get_array(), pixels[7])


@pytest.mark.parametrize(
    ("pixels", "labels", "message"),
    [
        (np.zeros((30, 784)), np.zeros(30), "shape"),
        (np.zeros((30, 28, 28)), np.zeros(29), "one label per image"),
        (np.zeros((10, 28, 28)), np.zeros(10), "only 10"),
        (np.full((30, 28, 28), 255.0), np.zeros(30), r"\[0, 1\]"),
    ],
)
def test_first_images_rejects_bad_input(pixels, labels, message):
    with pytest.raises(ValueError, match=message):
        plot_first_images(pixels, labels)
