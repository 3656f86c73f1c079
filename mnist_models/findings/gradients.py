"""Section 3, Gradient vanishing: the residual network's gradient norms with and without its shortcut."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from mnist_models import outputs
from mnist_models.architectures import model_entry
from mnist_models.findings.numbers import Number, none_if_missing
from mnist_models.records import Record
from mnist_models.study_reference import DIVERGED_BELOW, TARGET_LAYER


class LayerGradient(Record):
    """One layer's mean gradient norm per variant (in `GradientExperiment.models` order)."""

    layer: str
    mean_norms: tuple[Number, ...]
    with_over_without: Number


class SeedRatios(Record):
    """target_layer's with ÷ without ratio in each seed of the gradient experiment."""

    seeds: tuple[int, ...]
    ratios: tuple[Number, ...]  # one per seed
    lowest: Number
    highest: Number
    increased: int  # seeds in which the shortcut increased the gradient (ratio above 1)


class RatioInterval(Record):
    """target_layer's with ÷ without ratio over some epochs: the geometric mean of its per-epoch values, with a 95%
    t-interval on its logarithm over the seeds (or over the epochs of one seed), and what that interval says."""

    first_epoch: int
    last_epoch: int
    typical_ratio: Number
    ratio_low: Number = None  # None with a single measurement: no interval, no verdict
    ratio_high: Number = None
    interval_over: Literal["seeds", "epochs"] | None = None
    replicates: int = 1
    effect: Literal["increased", "lowered", "unchanged"] | None = None


class VariantOutcome(Record):
    """What one variant of a pair came to in each seed: its test accuracy, and whether it ever trained."""

    model: str
    seeds: tuple[int, ...]
    accuracies: tuple[Number, ...]  # per seed; None where the run has no accuracy (failed)
    mean_accuracy: Number
    lowest_accuracy: Number
    # Seeds in which target_layer's gradient is exactly zero in every epoch after initialisation: the network never
    # left its initial state (its ReLUs went silent), so no ratio of that seed's trained epochs exists.
    silent_seeds: tuple[int, ...] = ()
    # Seeds whose run ended at chance (test accuracy below DIVERGED_BELOW): silent ones, and ones whose gradient
    # never grew enough to move the network in the epochs it had.
    chance_seeds: tuple[int, ...] = ()


class GradientExperiment(Record):
    """The residual network's gradient norms with and without its shortcut, averaged over the epochs (and seeds)."""

    models: tuple[str, ...]  # the plain variant first
    first_epoch: int
    last_epoch: int
    layers: tuple[LayerGradient, ...]  # network order
    plain_model: str | None  # None when the run lacks the variant without the shortcut
    shortcut_model: str | None  # None when the run lacks a variant with the shortcut
    target_without: Number  # target_layer's mean gradient norm without the shortcut
    target_with: Number
    ratio: Number  # target_with ÷ target_without; None when either is missing or the denominator is zero
    # What the shortcut did to target_layer's gradient, by the interval below: "increased" when it lies above 1,
    # "lowered" below 1, "unchanged" when it holds 1; None without an interval.
    effect: Literal["increased", "lowered", "unchanged"] | None
    seeds: int = 1  # the means above pool this many seeds
    per_seed: SeedRatios | None = None  # None with one seed
    # The shortcut's effect as a ratio with its 95% interval: the geometric mean of target_layer's with ÷ without
    # ratio, epoch by epoch, and a t-interval on its logarithm over the seeds (each seed's mean over the epochs),
    # or over the epochs of the one seed (consecutive epochs are not independent: a rougher interval).
    typical_ratio: Number = None
    ratio_low: Number = None
    ratio_high: Number = None
    interval_over: Literal["seeds", "epochs"] | None = None
    replicates: int = 0  # the seeds, or the epochs, the interval is over
    depth: int | None = None  # the blocks of a deep pair (architectures/deep.py); None for the study's pair
    # The verdict by phase, as the pooled interval above mixes them: before any training step (epoch 0, where a
    # vanishing gradient shows in its pure form) and over the trained epochs (the networks that escaped it).
    at_initialisation: RatioInterval | None = None
    during_training: RatioInterval | None = None
    outcomes: tuple[VariantOutcome, ...] = ()  # per variant, the plain one first; empty without a summary table


class DepthComparison(Record):
    """The gradient experiment at several depths in one run: where the gradient without shortcuts falls below."""

    experiments: tuple[GradientExperiment, ...]  # shallowest first; the study's pair counts as depth 1
    # The smallest depth at which target_layer's gradient with shortcuts is significantly larger (its interval
    # above 1) at initialisation, and over the trained epochs; None where no depth shows it.
    vanishes_at_initialisation_from: int | None
    vanishes_during_training_from: int | None
    # The smallest depth at which some network without shortcuts ends at chance while none with them does.
    untrained_without_from: int | None = None


def gradient_experiments(gradients: pd.DataFrame, summary: pd.DataFrame | None = None) -> tuple[GradientExperiment, ...]:
    """One experiment per pair in the table, shallowest first (the study's pair is depth 1)."""
    depths = gradients["model"].map(lambda model: _depth(model) or 1)
    return tuple(gradient_experiment(gradients[depths == depth], summary) for depth in sorted(set(depths)))


def depth_comparison(experiments: tuple[GradientExperiment, ...]) -> DepthComparison | None:
    """Where along the depths the shortcut's effect appears; None with fewer than two depths."""
    if len(experiments) < 2:
        return None

    def first_depth(holds) -> int | None:
        return next((experiment.depth or 1 for experiment in experiments if holds(experiment)), None)

    def increased(phase: RatioInterval | None) -> bool:
        return phase is not None and phase.effect == "increased"

    def stuck_without_shortcuts(experiment: GradientExperiment) -> bool:
        outcomes = {outcome.model: outcome for outcome in experiment.outcomes}
        without, with_ = outcomes.get(experiment.plain_model), outcomes.get(experiment.shortcut_model)
        return bool(without and with_ and without.chance_seeds and not with_.chance_seeds)

    return DepthComparison(
        experiments=experiments,
        vanishes_at_initialisation_from=first_depth(lambda experiment: increased(experiment.at_initialisation)),
        vanishes_during_training_from=first_depth(lambda experiment: increased(experiment.during_training)),
        untrained_without_from=first_depth(stuck_without_shortcuts))


def gradient_experiment(gradients: pd.DataFrame, summary: pd.DataFrame | None = None) -> GradientExperiment:
    """Mean gradient norm per layer and variant of one pair, what the shortcut did to target_layer's (over all
    epochs, at initialisation, during training), and with the summary table what each variant's runs came to."""
    means = gradients.groupby(["layer", "model"], sort=False)["gradient_norm"].mean().unstack("model")
    models = sorted(dict.fromkeys(gradients["model"]), key=lambda model: not outputs.is_plain(model))
    means = means.reindex(index=list(dict.fromkeys(gradients["layer"])), columns=models).astype(float)
    plain = next((model for model in models if outputs.is_plain(model)), None)
    shortcut = next((model for model in models if not outputs.is_plain(model)), None)

    def mean(layer: str, model: str | None) -> float | None:
        return none_if_missing(means.at[layer, model]) if model and layer in means.index else None

    without, with_ = mean(TARGET_LAYER, plain), mean(TARGET_LAYER, shortcut)
    ratio = _ratio(with_, without)
    seeds = gradients["seed"].nunique()
    interval = _ratio_interval(gradients, plain, shortcut)
    epochs = gradients["epoch"]
    return GradientExperiment(
        models=tuple(str(model) for model in models),
        first_epoch=int(gradients["epoch"].min()),
        last_epoch=int(gradients["epoch"].max()),
        layers=tuple(LayerGradient(layer=str(layer), mean_norms=tuple(means.loc[layer]),
                                   with_over_without=_ratio(mean(layer, shortcut), mean(layer, plain)))
                     for layer in means.index),
        plain_model=plain,
        shortcut_model=shortcut,
        target_without=without,
        target_with=with_,
        ratio=ratio,
        effect=_effect(interval),
        seeds=max(int(seeds), 1),
        per_seed=_seed_ratios(gradients, plain, shortcut) if seeds > 1 else None,
        depth=_depth(plain or shortcut),
        at_initialisation=_phase(gradients[epochs == epochs.min()], plain, shortcut),
        during_training=_phase(gradients[epochs > epochs.min()], plain, shortcut),
        outcomes=() if summary is None else tuple(
            _outcome(model, summary, gradients) for model in (plain, shortcut) if model is not None),
        **interval,
    )


def _phase(gradients: pd.DataFrame, plain: str | None, shortcut: str | None) -> RatioInterval | None:
    """The ratio over these epochs, with its interval where there are two measurements or more."""
    logs = _log_ratios(gradients, plain, shortcut)
    if logs is None or logs.empty:
        return None
    epochs = logs.index.get_level_values("epoch")
    interval = _interval(logs)
    if not interval:  # one measurement: the ratio alone
        return RatioInterval(first_epoch=int(epochs.min()), last_epoch=int(epochs.max()),
                             typical_ratio=float(np.exp(logs.mean())))
    return RatioInterval(first_epoch=int(epochs.min()), last_epoch=int(epochs.max()), effect=_effect(interval),
                         **interval)


def _outcome(model: str, summary: pd.DataFrame, gradients: pd.DataFrame) -> VariantOutcome:
    runs = summary[(summary["model"] == model)
                   & summary["roles"].map(lambda roles: "gradient" in str(roles).split(","))].sort_values("seed")
    accuracies = tuple(none_if_missing(value) for value in runs["accuracy"])
    seeds = tuple(int(seed) for seed in runs["seed"])
    known = [accuracy for accuracy in accuracies if accuracy is not None]
    target = gradients[(gradients["model"] == model) & (gradients["layer"] == TARGET_LAYER)
                       & (gradients["epoch"] > gradients["epoch"].min())]
    silent = target.groupby("seed")["gradient_norm"].max()
    return VariantOutcome(model=model, seeds=seeds, accuracies=accuracies,
                          chance_seeds=tuple(seed for seed, accuracy in zip(seeds, accuracies)
                                             if accuracy is not None and accuracy < DIVERGED_BELOW),
                          mean_accuracy=float(np.mean(known)) if known else None,
                          lowest_accuracy=min(known, default=None),
                          silent_seeds=tuple(int(seed) for seed, norm in silent.items() if norm == 0))


def _depth(model: str | None) -> int | None:
    try:
        return model_entry(model)[1] if model else None
    except ValueError:  # a model this registry does not know (an older table): no depth to tell
        return None


def _ratio_interval(gradients: pd.DataFrame, plain: str | None, shortcut: str | None,
                    confidence: float = 0.95) -> dict:
    """target_layer's with ÷ without ratio as a geometric mean with a t-interval on its log, over the seeds (or
    the epochs of a single seed); empty when there are fewer than two positive pairs to go on."""
    logs = _log_ratios(gradients, plain, shortcut)
    return {} if logs is None else _interval(logs, confidence)


def _log_ratios(gradients: pd.DataFrame, plain: str | None, shortcut: str | None) -> pd.Series | None:
    """log(with ÷ without) of target_layer's norm per seed and epoch where both are positive; None without a pair."""
    if plain is None or shortcut is None:
        return None
    target = gradients[gradients["layer"] == TARGET_LAYER]
    norms = target.pivot_table(index=["seed", "epoch"], columns="model", values="gradient_norm", aggfunc="mean")
    if plain not in norms.columns or shortcut not in norms.columns:
        return None
    pairs = norms[[plain, shortcut]].dropna()
    pairs = pairs[(pairs > 0).all(axis=1)]
    return np.log(pairs[shortcut] / pairs[plain])


def _interval(logs: pd.Series, confidence: float = 0.95) -> dict:
    """Geometric mean and t-interval of these log ratios over the seeds (each seed's mean over its epochs), or over
    the epochs of a single seed; empty with fewer than two samples."""
    seeds = logs.index.get_level_values("seed").nunique()
    samples, over = (logs.groupby(level="seed").mean(), "seeds") if seeds > 1 else (logs, "epochs")
    if len(samples) < 2:
        return {}
    center, spread = float(samples.mean()), float(samples.std(ddof=1)) / np.sqrt(len(samples))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(samples) - 1)) * spread
    return {"typical_ratio": float(np.exp(center)), "ratio_low": float(np.exp(center - half)),
            "ratio_high": float(np.exp(center + half)), "interval_over": over, "replicates": len(samples)}


def _effect(interval: dict) -> Literal["increased", "lowered", "unchanged"] | None:
    if not interval:
        return None
    return "increased" if interval["ratio_low"] > 1 else "lowered" if interval["ratio_high"] < 1 else "unchanged"


def _seed_ratios(gradients: pd.DataFrame, plain: str | None, shortcut: str | None) -> SeedRatios | None:
    """target_layer's ratio of mean gradient norms, with over without the shortcut, in each seed."""
    target = gradients[gradients["layer"] == TARGET_LAYER]
    means = target.groupby(["seed", "model"])["gradient_norm"].mean().unstack("model")
    if plain not in means.columns or shortcut not in means.columns:
        return None
    ratios = tuple(_ratio(none_if_missing(row[shortcut]), none_if_missing(row[plain])) for _, row in means.iterrows())
    known = [ratio for ratio in ratios if ratio is not None]
    return SeedRatios(seeds=tuple(int(seed) for seed in means.index), ratios=ratios, lowest=min(known, default=None),
                      highest=max(known, default=None), increased=sum(ratio > 1 for ratio in known))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator
