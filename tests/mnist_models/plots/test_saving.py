"""Saving a figure: a PNG at 110 dpi written atomically, from several threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from mnist_models.plots.per_class import plot_confusion_matrix
from mnist_models.plots.saving import save_figure
from tests.mnist_models.plots.synthetic import PNG_SIGNATURE


def test_figures_render_and_save_from_several_threads(figure_makers, tmp_path):
    def render(item):
        name, make = item
        return save_figure(make(), tmp_path / f"{name}.png")

    with ThreadPoolExecutor(max_workers=4) as pool:
        written = list(pool.map(render, figure_makers.items()))
    assert sorted(path.name for path in written) == sorted(f"{name}.png" for name in figure_makers)
    for path in written:
        assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_save_figure_writes_a_png_at_110_dpi_and_leaves_no_temporary(confusion, tmp_path):
    figure = plot_confusion_matrix(confusion, "Confusion")
    target = tmp_path / "figures" / "confusion_dnn.png"

    written = save_figure(figure, target)

    assert written == target
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(target) as image:
        image.verify()
    with Image.open(target) as image:
        assert image.info["dpi"] == pytest.approx((110, 110), abs=0.1)
        assert image.width > 300 and image.height > 300
    assert sorted(path.name for path in target.parent.iterdir()) == ["confusion_dnn.png"]
    assert figure.axes == [], "the figure is released after saving"


def test_save_figure_leaves_nothing_behind_when_rendering_fails(tmp_path, monkeypatch):
    figure = plot_confusion_matrix(np.eye(3, dtype=int) * 5, "Confusion")

    def broken_savefig(*args, **kwargs):
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer exploded"):
        save_figure(figure, tmp_path / "confusion.png")
    assert list(tmp_path.iterdir()) == []


def test_save_figure_rejects_a_non_png_path(tmp_path):
    figure = plot_confusion_matrix(np.eye(3, dtype=int) * 5, "Confusion")
    with pytest.raises(ValueError, match=r"\.png"):
        save_figure(figure, tmp_path / "confusion.svg")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["lr_sweep_across_seeds", "gradient_norm_band"])
def test_across_seed_figures_save_as_png(figure_makers, name, tmp_path):
    written = save_figure(figure_makers[name](), tmp_path / f"{name}.png")
    assert written.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(written) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300
