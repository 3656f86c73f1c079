"""Unit tests for mnist_models.plots on small synthetic data."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_auc_score

from mnist_models import plots
from mnist_models.replicates import spread

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DIGITS = 10


# --------------------------------------------------------------------------- synthetic data


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def images(rng):
    return rng.uniform(0.0, 1.0, size=(30, 28, 28)).astype(np.float32), rng.integers(0, DIGITS, size=30)


def _kernel_histogram(rng: np.random.Generator, epochs: int = 4, bins: int = 12) -> pd.DataFrame:
    frames = []
    weights = rng.uniform(-0.15, 0.15, size=288)
    for epoch in range(epochs + 1):
        counts, edges = np.histogram(weights, bins=bins)
        frames.append(pd.DataFrame({"epoch": epoch, "bin_left": edges[:-1], "bin_right": edges[1:], "count": counts}))
        weights = weights + rng.normal(0.0, 0.01, size=weights.shape)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def kernel_histograms(rng):
    return {
        "without shortcut (resnet_plain)": _kernel_histogram(rng),
        "with shortcut (resnet)": _kernel_histogram(rng),
    }


def _gradient_norms(rng: np.random.Generator, layers: list[str], epochs: int = 5) -> pd.DataFrame:
    rows = [
        {"epoch": epoch, "layer": layer, "gradient_norm": float(rng.uniform(1e-4, 1.0))}
        for epoch in range(1, epochs + 1)
        for layer in layers
    ]
    return pd.DataFrame(rows)


PLAIN_LAYERS = ["target_layer", "conv_b", "conv_a", "dense"]  # deliberately not alphabetical
RESIDUAL_LAYERS = ["target_layer", "conv_b", "shortcut", "conv_a", "dense"]


@pytest.fixture
def gradient_norms(rng):
    return {
        "without shortcut (resnet_plain)": _gradient_norms(rng, PLAIN_LAYERS),
        "with shortcut (resnet)": _gradient_norms(rng, RESIDUAL_LAYERS),
    }


def _history(rng: np.random.Generator, epochs: int = 6) -> pd.DataFrame:
    accuracy = np.sort(rng.uniform(0.9, 0.99, size=epochs))
    return pd.DataFrame(
        {
            "epoch": np.arange(1, epochs + 1),
            "loss": 1 - accuracy,
            "accuracy": accuracy,
            "val_loss": 1 - accuracy + 0.01,
            "val_accuracy": accuracy - 0.005,
            "seconds": 3.0,
        }
    )


@pytest.fixture
def histories(rng):
    return {"DNN": _history(rng), "ConvNet": _history(rng), "ResNet": _history(rng)}


@pytest.fixture
def predictions(rng):
    labels = np.tile(np.arange(DIGITS), 40)
    logits = rng.normal(0.0, 1.0, size=(len(labels), DIGITS))
    logits[np.arange(len(labels)), labels] += 2.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


@pytest.fixture
def per_class(rng):
    return pd.DataFrame(
        {
            "class": np.arange(DIGITS),
            "precision": rng.uniform(0.93, 1.0, DIGITS),
            "recall": rng.uniform(0.93, 1.0, DIGITS),
            "f1": rng.uniform(0.93, 1.0, DIGITS),
        }
    )


STUDY_TABLE_5_1 = {
    "DNN": {0.1: 0.114, 0.01: 0.932, 0.001: 0.962, 0.0001: 0.935},
    "ConvNet": {0.1: 0.114, 0.01: 0.978, 0.001: 0.991, 0.0001: 0.988},
    "ResNet": {0.1: 0.098, 0.01: 0.958, 0.001: 0.99, 0.0001: 0.99},
}


@pytest.fixture
def sweep():
    rows = [
        {"model": model, "learning_rate": rate, "accuracy": accuracy}
        for model, by_rate in STUDY_TABLE_5_1.items()
        for rate, accuracy in sorted(by_rate.items())  # ascending on purpose: the plot must sort
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def confusion(rng):
    matrix = rng.integers(0, 6, size=(DIGITS, DIGITS))
    np.fill_diagonal(matrix, rng.integers(900, 1100, size=DIGITS))
    return matrix


@pytest.fixture
def history():
    rows = []
    for day in range(4):
        for model, accuracy in (("DNN", 0.96), ("ConvNet", 0.988)):
            rows.append(
                {
                    "date": f"2025-03-0{day + 1}T02:00:00",
                    "model": model,
                    "accuracy": accuracy,
                    "accuracy_low": accuracy - 0.004,
                    "accuracy_high": accuracy + 0.004,
                }
            )
    return pd.DataFrame(rows)


SEEDS = (42, 43, 44)
SEED_OFFSETS = {42: -0.002, 43: 0.0005, 44: 0.0015}  # around the study's single run, so cells differ by seed


@pytest.fixture
def seed_sweep():
    """One row per run: the study's table 5.1 shifted per seed."""
    rows = [
        {"model": model, "learning_rate": rate, "seed": seed, "accuracy": accuracy + SEED_OFFSETS[seed]}
        for model, by_rate in STUDY_TABLE_5_1.items()
        for rate, accuracy in by_rate.items()
        for seed in SEEDS
    ]
    return pd.DataFrame(rows)


def _replicates(seed_sweep: pd.DataFrame) -> pd.DataFrame:
    """The replicates table's columns, built with the pipeline's own `spread` (NaN interval for one seed)."""
    rows = []
    for (model, rate), runs in seed_sweep.groupby(["model", "learning_rate"], sort=False):
        mean, std, low, high = spread(runs["accuracy"])
        rows.append(
            {
                "model": model,
                "learning_rate": rate,
                "seeds": len(runs),
                "seed_list": ",".join(str(seed) for seed in sorted(runs["seed"])),
                "accuracy_mean": mean,
                "accuracy_std": std,
                "accuracy_mean_low": low,
                "accuracy_mean_high": high,
                "map_mean": mean,  # MAP is not drawn; the table carries it
                "map_std": std,
                "map_mean_low": low,
                "map_mean_high": high,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture
def replicates(seed_sweep):
    return _replicates(seed_sweep)


GRADIENT_VARIANTS = {"without shortcut (resnet_plain)": 1e-4, "with shortcut (resnet)": 1e-1}


@pytest.fixture
def seed_gradients(rng):
    """One row per variant, seed, epoch and layer; the plain variant's target_layer norms vanish."""
    rows = [
        {"variant": variant, "seed": seed, "epoch": epoch, "layer": layer,
         "gradient_norm": scale * float(rng.uniform(0.5, 2.0)) / epoch * (1e4 if layer == "dense" else 1.0)}
        for variant, scale in GRADIENT_VARIANTS.items()
        for seed in SEEDS
        for epoch in range(1, 6)
        for layer in ("target_layer", "dense")
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def figure_makers(
    images,
    kernel_histograms,
    gradient_norms,
    histories,
    predictions,
    per_class,
    sweep,
    confusion,
    history,
    replicates,
    seed_sweep,
    seed_gradients,
):
    """Name -> zero-argument callable building that figure from the synthetic data."""
    labels, probabilities = predictions
    return {
        "first_25_images": lambda: plots.plot_first_images(*images),
        "kernel_histograms": lambda: plots.plot_kernel_histograms(kernel_histograms),
        "gradient_norms": lambda: plots.plot_gradient_norms(gradient_norms),
        "accuracy_curves": lambda: plots.plot_accuracy_curves(histories),
        "roc_dnn": lambda: plots.plot_roc_curves(labels, probabilities, "ROC, DNN"),
        "f1_dnn": lambda: plots.plot_f1_per_class(per_class, "F1, DNN"),
        "lr_sweep_heatmap": lambda: plots.plot_lr_sweep_heatmap(sweep),
        "confusion_dnn": lambda: plots.plot_confusion_matrix(confusion, "Confusion, DNN"),
        "history": lambda: plots.plot_history(history),
        "lr_sweep_across_seeds": lambda: plots.plot_lr_sweep_across_seeds(replicates, seed_sweep),
        "gradient_norm_band": lambda: plots.plot_gradient_norm_band(seed_gradients),
    }


def _data_axes(figure: Figure) -> list:
    """Axes that carry data: not colorbars, not zoom insets."""
    return [axes for axes in figure.axes if axes.get_label() not in ("<colorbar>", "zoom")]


def _figure_title(figure: Figure) -> str:
    suptitle = figure.get_suptitle()
    return suptitle or " ".join(axes.get_title() for axes in figure.axes).strip()


# --------------------------------------------------------------------------- every figure


@pytest.mark.parametrize(
    "name",
    [
        "first_25_images",
        "kernel_histograms",
        "gradient_norms",
        "accuracy_curves",
        "roc_dnn",
        "f1_dnn",
        "lr_sweep_heatmap",
        "confusion_dnn",
        "history",
        "lr_sweep_across_seeds",
        "gradient_norm_band",
    ],
)
def test_every_figure_has_a_title_and_labelled_axes(figure_makers, name):
    figure = figure_makers[name]()
    assert isinstance(figure, Figure)
    assert _figure_title(figure)
    data_axes = _data_axes(figure)
    assert data_axes
    for axes in data_axes:
        if name == "first_25_images":
            assert axes.get_title(), "every image is titled with its label"
        else:
            assert axes.get_xlabel() and axes.get_ylabel(), f"{name}: axes {axes.get_title()!r} lacks a label"
    figure.canvas.draw()  # renders without error


def test_library_imports_no_pyplot_prefect_or_keras():
    code = (
        "import sys, mnist_models.plots; "
        "print(sorted(m for m in ('matplotlib.pyplot', 'prefect', 'keras', 'tensorflow') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_figures_render_and_save_from_several_threads(figure_makers, tmp_path):
    def render(item):
        name, make = item
        return plots.save_figure(make(), tmp_path / f"{name}.png")

    with ThreadPoolExecutor(max_workers=4) as pool:
        written = list(pool.map(render, figure_makers.items()))
    assert sorted(path.name for path in written) == sorted(f"{name}.png" for name in figure_makers)
    for path in written:
        assert path.read_bytes()[:8] == PNG_SIGNATURE


# --------------------------------------------------------------------------- save_figure


def test_save_figure_writes_a_png_at_110_dpi_and_leaves_no_temporary(confusion, tmp_path):
    figure = plots.plot_confusion_matrix(confusion, "Confusion")
    target = tmp_path / "figures" / "confusion_dnn.png"

    written = plots.save_figure(figure, target)

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
    figure = plots.plot_confusion_matrix(np.eye(3, dtype=int) * 5, "Confusion")

    def broken_savefig(*args, **kwargs):
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer exploded"):
        plots.save_figure(figure, tmp_path / "confusion.png")
    assert list(tmp_path.iterdir()) == []


def test_save_figure_rejects_a_non_png_path(tmp_path):
    figure = plots.plot_confusion_matrix(np.eye(3, dtype=int) * 5, "Confusion")
    with pytest.raises(ValueError, match=r"\.png"):
        plots.save_figure(figure, tmp_path / "confusion.svg")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- first images


def test_first_images_is_a_5_by_5_grid_titled_with_labels(images):
    pixels, labels = images
    figure = plots.plot_first_images(pixels[..., np.newaxis], labels)  # (N, 28, 28, 1) is accepted too
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
        plots.plot_first_images(pixels, labels)


# --------------------------------------------------------------------------- kernel histograms


def test_kernel_histograms_draw_one_ridge_per_epoch_in_one_panel_per_variant(kernel_histograms):
    figure = plots.plot_kernel_histograms(kernel_histograms)
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
        plots.plot_kernel_histograms({})
    residual = kernel_histograms["with shortcut (resnet)"]
    broken = {**kernel_histograms, "with shortcut (resnet)": residual.drop(columns="count")}
    with pytest.raises(ValueError, match=r"with shortcut.*missing columns \['count'\]"):
        plots.plot_kernel_histograms(broken)
    inverted = residual.rename(columns={"bin_left": "bin_right", "bin_right": "bin_left"})
    with pytest.raises(ValueError, match="bin_right > bin_left"):
        plots.plot_kernel_histograms({"inverted": inverted})


# --------------------------------------------------------------------------- gradient norms


def test_gradient_norms_keep_layer_order_log_scale_and_a_shared_y_range(gradient_norms):
    figure = plots.plot_gradient_norms(gradient_norms)
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
        plots.plot_gradient_norms({"twice": pd.concat([frame, frame.head(1)])})
    with pytest.raises(ValueError, match=r"missing columns \['gradient_norm'\]"):
        plots.plot_gradient_norms({"renamed": frame.rename(columns={"gradient_norm": "norm"})})
    with pytest.raises(ValueError, match="non-empty dict"):
        plots.plot_gradient_norms([])


# --------------------------------------------------------------------------- accuracy curves


def test_accuracy_curves_plot_training_and_validation_per_model(histories):
    figure = plots.plot_accuracy_curves(histories)
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
    panels = plots.plot_accuracy_curves(histories).axes
    assert len({axes.get_ylim() for axes in panels}) == 1

    diverged = histories["DNN"].assign(accuracy=0.11, val_accuracy=0.11)  # e.g. learning rate 0.1
    figure = plots.plot_accuracy_curves({**histories, "DNN": diverged})
    convnet = figure.axes[1]
    assert convnet.get_ylim()[0] > 0.5, "the healthy model keeps a readable range"
    assert "differ" in figure.get_suptitle()


def test_accuracy_curves_reject_bad_input(histories):
    with pytest.raises(ValueError, match=r"'DNN'.*missing columns \['val_accuracy'\]"):
        plots.plot_accuracy_curves({"DNN": histories["DNN"].drop(columns="val_accuracy")})
    with pytest.raises(ValueError, match="empty"):
        plots.plot_accuracy_curves({"DNN": histories["DNN"].iloc[0:0]})


# --------------------------------------------------------------------------- ROC


def test_roc_curves_have_ten_entries_with_sklearn_aucs(predictions):
    labels, probabilities = predictions
    figure = plots.plot_roc_curves(labels, probabilities, "ROC, DNN on test data")
    main = _data_axes(figure)[0]
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
        plots.plot_roc_curves(labels, probabilities, "ROC")


# --------------------------------------------------------------------------- F1 per class


def test_f1_per_class_draws_grouped_bars_up_to_one(per_class):
    figure = plots.plot_f1_per_class(per_class, "F1, DNN")
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
        plots.plot_f1_per_class(per_class.drop(columns="f1"), "F1")
    with pytest.raises(ValueError, match=r"recall must lie in \[0, 1\]"):
        plots.plot_f1_per_class(per_class.assign(recall=per_class["recall"] * 100), "F1")


# --------------------------------------------------------------------------- learning-rate sweep


def test_lr_sweep_heatmap_sorts_rates_descending_and_annotates_cells(sweep):
    figure = plots.plot_lr_sweep_heatmap(sweep)
    axes = _data_axes(figure)[0]
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
    axes = _data_axes(plots.plot_lr_sweep_heatmap(repeated))[0]
    cells = {(round(text.get_position()[1]), round(text.get_position()[0])): text.get_text() for text in axes.texts}
    assert cells[(1, 2)] == "0.990"
    assert "mean of" in axes.get_title()


def test_lr_sweep_heatmap_rejects_bad_input(sweep):
    with pytest.raises(ValueError, match=r"missing columns \['learning_rate'\]"):
        plots.plot_lr_sweep_heatmap(sweep.rename(columns={"learning_rate": "lr"}))
    with pytest.raises(ValueError, match="empty"):
        plots.plot_lr_sweep_heatmap(sweep.iloc[0:0])


# --------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_annotates_counts_with_true_rows_and_predicted_columns():
    matrix = np.diag(np.arange(100, 110))
    matrix[3, 8] = 7  # seven true 3s predicted as 8
    figure = plots.plot_confusion_matrix(matrix, "Confusion, DNN")
    axes = _data_axes(figure)[0]
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
        plots.plot_confusion_matrix(matrix, "Confusion")


# --------------------------------------------------------------------------- history


def test_history_draws_one_series_per_model_over_dates(history):
    figure = plots.plot_history(history)
    axes = figure.axes[0]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["DNN", "ConvNet"]
    series = list(axes.containers)
    assert len(series) == 2
    dnn_line = series[0].lines[0]
    np.testing.assert_allclose(np.asarray(dnn_line.get_ydata(), dtype=float), [0.96] * 4)
    assert len(axes.collections) >= 2, "each model has an interval band"


def test_history_accepts_datetimes_as_well_as_iso_strings(history):
    as_datetimes = history.assign(date=pd.to_datetime(history["date"]))
    figure = plots.plot_history(as_datetimes)
    assert len(figure.axes[0].containers) == 2


def test_history_with_a_single_run_keeps_a_readable_date_range(history):
    first_night = history[history["date"] == history["date"].iloc[0]]
    axes = plots.plot_history(first_night).axes[0]
    low, high = axes.get_xlim()  # matplotlib date numbers are days
    assert 0 < high - low <= 3


def test_history_rejects_bad_input(history):
    with pytest.raises(ValueError, match="does not contain"):
        plots.plot_history(history.assign(accuracy_high=history["accuracy"] - 0.01))
    with pytest.raises(ValueError, match="'date'"):
        plots.plot_history(history.assign(date="last tuesday"))
    with pytest.raises(ValueError, match=r"missing columns \['accuracy_low', 'accuracy_high'\]"):
        plots.plot_history(history.drop(columns=["accuracy_low", "accuracy_high"]))


# --------------------------------------------------------------------------- learning-rate sweep across seeds


def _mean_lines(axes) -> list:
    return [line for line in axes.get_lines() if not line.get_label().startswith("_")]


def test_lr_sweep_across_seeds_draws_means_intervals_and_every_seed(replicates, seed_sweep):
    # a t-interval is symmetric; widen its top so that the bars' two ends are told apart
    replicates = replicates.assign(accuracy_mean_high=replicates["accuracy_mean_high"] + 0.001)
    figure = plots.plot_lr_sweep_across_seeds(replicates, seed_sweep)
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
    axes = plots.plot_lr_sweep_across_seeds(_replicates(healthy), healthy).axes[0]
    assert axes.get_yscale() == "linear"
    assert axes.get_ylabel() == "test accuracy"


def test_lr_sweep_across_seeds_with_one_seed_draws_no_interval(seed_sweep):
    single = seed_sweep[seed_sweep["seed"] == 42]
    replicates = _replicates(single)
    assert replicates["accuracy_mean_low"].isna().all()
    figure = plots.plot_lr_sweep_across_seeds(replicates, single)
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
    axes = plots.plot_lr_sweep_across_seeds(_replicates(uneven), uneven).axes[0]
    assert [line.get_label() for line in _mean_lines(axes)][-1] == "ResNet (1–3 seeds)"
    resnet_bars = np.array(axes.containers[-1].lines[2][0].get_segments())
    assert len(resnet_bars) == 3, "one bar per learning rate with two seeds or more"
    assert "across up to 3 seeds" in axes.get_title()


def test_lr_sweep_across_seeds_rejects_bad_input(replicates, seed_sweep):
    with pytest.raises(ValueError, match=r"replicates table: missing columns \['accuracy_mean_high'\]"):
        plots.plot_lr_sweep_across_seeds(replicates.drop(columns="accuracy_mean_high"), seed_sweep)
    with pytest.raises(ValueError, match=r"one row per seed\): missing columns \['seed'\]"):
        plots.plot_lr_sweep_across_seeds(replicates, seed_sweep.drop(columns="seed"))
    with pytest.raises(ValueError, match="2 seeds in the sweep but 3 in the replicates table"):
        plots.plot_lr_sweep_across_seeds(replicates, seed_sweep[seed_sweep["seed"] != 44])
    with pytest.raises(ValueError, match="'ResNet' at learning rate 0.0001 has runs but no row"):
        plots.plot_lr_sweep_across_seeds(replicates.iloc[:-1], seed_sweep)
    with pytest.raises(ValueError, match="does not contain accuracy_mean"):
        below = replicates.assign(accuracy_mean_high=replicates["accuracy_mean"] - 0.01)
        plots.plot_lr_sweep_across_seeds(below, seed_sweep)
    half_open = replicates.assign(accuracy_mean_high=np.nan)
    with pytest.raises(ValueError, match="both be finite or both NaN"):
        plots.plot_lr_sweep_across_seeds(half_open, seed_sweep)
    with pytest.raises(ValueError, match="appears more than once"):
        plots.plot_lr_sweep_across_seeds(pd.concat([replicates, replicates.head(1)]), seed_sweep)
    with pytest.raises(ValueError, match="learning rates must be positive"):
        plots.plot_lr_sweep_across_seeds(replicates.assign(learning_rate=0.0), seed_sweep)


# --------------------------------------------------------------------------- gradient norm band across seeds


def test_gradient_norm_band_draws_the_mean_and_a_min_max_band_per_variant(seed_gradients):
    figure = plots.plot_gradient_norm_band(seed_gradients)
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
    axes = plots.plot_gradient_norm_band(dense, layer="dense").axes[0]
    assert axes.get_yscale() == "linear" and axes.get_ylabel() == "gradient norm of dense"
    (line,) = axes.get_lines()
    expected = dense[dense["layer"] == "dense"].groupby("epoch")["gradient_norm"].mean()
    np.testing.assert_allclose(line.get_ydata(), expected)
    assert "dense" in axes.get_title()


def test_gradient_norm_band_with_one_seed_draws_lines_without_a_band(seed_gradients):
    single = seed_gradients[seed_gradients["seed"] == 43]
    figure = plots.plot_gradient_norm_band(single)
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
        plots.plot_gradient_norm_band(seed_gradients, layer="conv_z")
    with pytest.raises(ValueError, match=r"missing columns \['variant'\]"):
        plots.plot_gradient_norm_band(seed_gradients.rename(columns={"variant": "model"}))
    with pytest.raises(ValueError, match=r"'target_layer' rows\): variant .* epoch 1 appears more than once"):
        plots.plot_gradient_norm_band(pd.concat([seed_gradients, seed_gradients.head(1)]))
    with pytest.raises(ValueError, match="non-negative"):
        plots.plot_gradient_norm_band(seed_gradients.assign(gradient_norm=-seed_gradients["gradient_norm"]))
    with pytest.raises(ValueError, match="every gradient norm of layer 'target_layer' is zero"):
        plots.plot_gradient_norm_band(seed_gradients.assign(gradient_norm=0.0))


# --------------------------------------------------------------------------- saving the across-seed figures


@pytest.mark.parametrize("name", ["lr_sweep_across_seeds", "gradient_norm_band"])
def test_across_seed_figures_save_as_png(figure_makers, name, tmp_path):
    written = plots.save_figure(figure_makers[name](), tmp_path / f"{name}.png")
    assert written.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(written) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300


def test_lr_sweep_heatmap_marks_diverged_and_failed_cells():
    from mnist_models.plots import plot_lr_sweep_heatmap

    sweep = pd.DataFrame({"model": ["dnn", "dnn", "convnet", "convnet"], "learning_rate": [0.1, 0.001, 0.1, 0.001],
                          "accuracy": [0.098, 0.96, np.nan, 0.98],
                          "status": ["diverged at epoch 1", "trained", "failed", "trained"]})
    figure = plot_lr_sweep_heatmap(sweep)
    texts = sorted(text.get_text() for text in figure.axes[0].texts)
    assert texts == ["0.098\ndiverged", "0.960", "0.980", "failed"]
    with pytest.raises(ValueError, match="finite numbers"):  # only a failed run may lack its accuracy
        plot_lr_sweep_heatmap(sweep.assign(status="trained"))
