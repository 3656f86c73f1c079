"""Fixtures of the figure tests: synthetic data for every figure family, and a maker per figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mnist_models.plots.accuracy_curves import plot_accuracy_curves
from mnist_models.plots.gradients import plot_gradient_norm_band, plot_gradient_norms, plot_kernel_histograms
from mnist_models.plots.history import plot_history
from mnist_models.plots.images import plot_first_images
from mnist_models.plots.lr_sweep import plot_lr_sweep_across_seeds, plot_lr_sweep_heatmap
from mnist_models.plots.per_class import plot_confusion_matrix, plot_f1_per_class, plot_roc_curves
from tests.mnist_models.plots.synthetic import (DIGITS, GRADIENT_VARIANTS, PLAIN_LAYERS, RESIDUAL_LAYERS,
                                                SEED_OFFSETS, SEEDS, STUDY_TABLE_5_1, gradient_norm_rows,
                                                kernel_histogram, replicates_of, training_history)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def images(rng):
    return rng.uniform(0.0, 1.0, size=(30, 28, 28)).astype(np.float32), rng.integers(0, DIGITS, size=30)


@pytest.fixture
def kernel_histograms(rng):
    return {
        "without shortcut (resnet_plain)": kernel_histogram(rng),
        "with shortcut (resnet)": kernel_histogram(rng),
    }


@pytest.fixture
def gradient_norms(rng):
    return {
        "without shortcut (resnet_plain)": gradient_norm_rows(rng, PLAIN_LAYERS),
        "with shortcut (resnet)": gradient_norm_rows(rng, RESIDUAL_LAYERS),
    }


@pytest.fixture
def histories(rng):
    return {"DNN": training_history(rng), "ConvNet": training_history(rng), "ResNet": training_history(rng)}


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


@pytest.fixture
def replicates(seed_sweep):
    return replicates_of(seed_sweep)


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
        "first_25_images": lambda: plot_first_images(*images),
        "kernel_histograms": lambda: plot_kernel_histograms(kernel_histograms),
        "gradient_norms": lambda: plot_gradient_norms(gradient_norms),
        "accuracy_curves": lambda: plot_accuracy_curves(histories),
        "roc_dnn": lambda: plot_roc_curves(labels, probabilities, "ROC, DNN"),
        "f1_dnn": lambda: plot_f1_per_class(per_class, "F1, DNN"),
        "lr_sweep_heatmap": lambda: plot_lr_sweep_heatmap(sweep),
        "confusion_dnn": lambda: plot_confusion_matrix(confusion, "Confusion, DNN"),
        "history": lambda: plot_history(history),
        "lr_sweep_across_seeds": lambda: plot_lr_sweep_across_seeds(replicates, seed_sweep),
        "gradient_norm_band": lambda: plot_gradient_norm_band(seed_gradients),
    }
