"""Synthetic data for the figure tests, and helpers that read a drawn figure back."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mnist_models.replicates import spread

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DIGITS = 10


def kernel_histogram(rng: np.random.Generator, epochs: int = 4, bins: int = 12) -> pd.DataFrame:
    frames = []
    weights = rng.uniform(-0.15, 0.15, size=288)
    for epoch in range(epochs + 1):
        counts, edges = np.histogram(weights, bins=bins)
        frames.append(pd.DataFrame({"epoch": epoch, "bin_left": edges[:-1], "bin_right": edges[1:], "count": counts}))
        weights = weights + rng.normal(0.0, 0.01, size=weights.shape)
    return pd.concat(frames, ignore_index=True)


def gradient_norm_rows(rng: np.random.Generator, layers: list[str], epochs: int = 5) -> pd.DataFrame:
    rows = [
        {"epoch": epoch, "layer": layer, "gradient_norm": float(rng.uniform(1e-4, 1.0))}
        for epoch in range(1, epochs + 1)
        for layer in layers
    ]
    return pd.DataFrame(rows)


PLAIN_LAYERS = ["target_layer", "conv_b", "conv_a", "dense"]  # deliberately not alphabetical
RESIDUAL_LAYERS = ["target_layer", "conv_b", "shortcut", "conv_a", "dense"]


def training_history(rng: np.random.Generator, epochs: int = 6) -> pd.DataFrame:
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


STUDY_TABLE_5_1 = {
    "DNN": {0.1: 0.114, 0.01: 0.932, 0.001: 0.962, 0.0001: 0.935},
    "ConvNet": {0.1: 0.114, 0.01: 0.978, 0.001: 0.991, 0.0001: 0.988},
    "ResNet": {0.1: 0.098, 0.01: 0.958, 0.001: 0.99, 0.0001: 0.99},
}

SEEDS = (42, 43, 44)
SEED_OFFSETS = {42: -0.002, 43: 0.0005, 44: 0.0015}  # around the study's single run, so cells differ by seed


def replicates_of(seed_sweep: pd.DataFrame) -> pd.DataFrame:
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


GRADIENT_VARIANTS = {"without shortcut (resnet_plain)": 1e-4, "with shortcut (resnet)": 1e-1}


def data_axes(figure: Figure) -> list:
    """Axes that carry data: not colorbars, not zoom insets."""
    return [axes for axes in figure.axes if axes.get_label() not in ("<colorbar>", "zoom")]


def figure_title(figure: Figure) -> str:
    suptitle = figure.get_suptitle()
    return suptitle or " ".join(axes.get_title() for axes in figure.axes).strip()
