"""Seed replicates: spread across seeds, and model comparisons that tell a real difference from seed noise.

One training per cell cannot tell a real difference from seed noise, and the bootstrap interval of a
run covers test-set sampling only. Here each model and learning rate has one sweep run per seed:
`replicates_table` gives the mean, spread and t-interval across seeds, `seed_comparisons` a paired t-test
across seeds beside the per-seed McNemar tests, and `conclusions_across_seeds` the report's findings as
data. Every distribution comes from scipy. The nightly gate (`mnist_models.nightly`) uses `spread` too.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from mnist_models import metrics, table_builders
from mnist_models.records import Record
from mnist_models.study_reference import STUDY_TABLE_5_1

CONFIDENCE = 0.95  # of every across-seed interval
ALPHA = 0.05  # significance level of the paired t-test, McNemar's test and the nightly gate
MIN_PAIRED_SEEDS = 3  # a paired t-test on fewer seeds has too few degrees of freedom to mean much
REPLICATE_METRICS = ("accuracy", "map")
_STATISTICS = ("mean", "std", "mean_low", "mean_high")
# Named `<metric>_mean_low`/`_high` (the interval of the mean across seeds), apart from the summary's
# `accuracy_low`/`accuracy_high` (one run's bootstrap interval over test images).
REPLICATES_COLUMNS = ("model", "learning_rate", "seeds", "seed_list",
                      *(f"{metric}_{statistic}" for metric in REPLICATE_METRICS for statistic in _STATISTICS))
ACROSS_SEED_COLUMNS = tuple(f"accuracy_{statistic}" for statistic in _STATISTICS)
COMPARISON_COLUMNS = ("learning_rate", "model_a", "model_b", "seeds", "seed_list", "accuracy_a_mean",
                      "accuracy_b_mean", "difference_mean", "difference_low", "difference_high", "t_statistic",
                      "p_value", "significant", "better", "mcnemar_a_better", "mcnemar_b_better", "mcnemar_p_min",
                      "mcnemar_p_max", "verdict")
_SWEEP_SUFFIXES = {"accuracy_std": "std", "accuracy_mean_low": "low", "accuracy_mean_high": "high"}


# ---- across-seed tables ---------------------------------------------------------------------------------

def replicates_table(summary: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per model and learning rate of the sweep: seeds, and mean, std and t-interval of accuracy and MAP across them."""
    check_level(confidence, "confidence")
    rows = _sweep_rows(summary)
    cells = [_replicate_row(model, learning_rate, runs, confidence)
             for (model, learning_rate), runs in rows.groupby(["model", "learning_rate"], sort=False)]
    return pd.DataFrame(cells, columns=list(REPLICATES_COLUMNS)).astype({"seeds": np.int64})


def _replicate_row(model: str, learning_rate: float, runs: pd.DataFrame, confidence: float) -> dict:
    row = {"model": model, "learning_rate": learning_rate, "seeds": len(runs),
           "seed_list": ",".join(str(int(seed)) for seed in sorted(runs["seed"]))}
    for metric in REPLICATE_METRICS:
        row.update(zip((f"{metric}_{statistic}" for statistic in _STATISTICS), spread(runs[metric], confidence)))
    return row


def spread(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """Mean, standard deviation (ddof=1) and t-interval of the mean; std and interval are NaN for one value."""
    from scipy import stats  # imported where used: a cached rerun computes no statistic

    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"expected a non-empty 1-D sequence of values (one per seed), got shape {values.shape}")
    mean = float(values.mean())
    if values.size == 1:
        return mean, math.nan, math.nan, math.nan
    deviation = float(values.std(ddof=1))
    if deviation == 0:  # identical seeds: scipy's interval is undefined at scale 0, the mean is exact
        return mean, 0.0, mean, mean
    low, high = stats.t.interval(confidence, values.size - 1, loc=mean, scale=deviation / math.sqrt(values.size))
    return mean, deviation, float(low), float(high)


def several_seeds(replicates: pd.DataFrame) -> bool:
    """Whether some cell of the replicates table has more than one seed (then across-seed columns mean something)."""
    return bool(len(replicates)) and int(replicates["seeds"].max()) > 1


def across_seed_columns(table: pd.DataFrame, replicates: pd.DataFrame,
                        keys: Sequence[str] = ("model", "learning_rate")) -> pd.DataFrame:
    """`table` with ACROSS_SEED_COLUMNS joined on `keys` when there are several seeds; unchanged with one seed."""
    if not several_seeds(replicates):
        return table
    _require(table, keys, "table")
    columns = [*keys, *ACROSS_SEED_COLUMNS]
    return table.merge(replicates[columns], on=list(keys), how="left", validate="many_to_one")


def across_seed_sweep(sweep: pd.DataFrame, replicates: pd.DataFrame) -> pd.DataFrame:
    """The wide lr_sweep table with each `lr X` cell the mean across seeds, followed by `lr X std`, `lr X low`,
    `lr X high`; unchanged with one seed."""
    if not several_seeds(replicates):
        return sweep
    _require(sweep, ["model"], "lr_sweep table")
    wide = replicates.pivot_table(index="model", columns="learning_rate", values=list(ACROSS_SEED_COLUMNS),
                                  aggfunc="first", sort=False, dropna=False)
    table = sweep[["model"]].copy()
    for rate in sorted(replicates["learning_rate"].unique(), reverse=True):
        name = table_builders.learning_rate_column(rate)
        table[name] = table["model"].map(wide[("accuracy_mean", rate)])
        for column, suffix in _SWEEP_SUFFIXES.items():
            table[f"{name} {suffix}"] = table["model"].map(wide[(column, rate)])
    return table


# ---- model comparisons across seeds ---------------------------------------------------------------------

def seed_comparisons(summary: pd.DataFrame, correct_by_run: Mapping[str, np.ndarray], alpha: float = ALPHA,
                     confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per learning rate and pair of models: a paired t-test across seeds, the per-seed McNemar tests, a verdict."""
    check_level(alpha, "alpha")
    check_level(confidence, "confidence")
    per_seed = _per_seed_significance(summary, correct_by_run, alpha)
    rows = [_comparison_row(pair, seeds, alpha, confidence)
            for pair, seeds in per_seed.groupby(["learning_rate", "model_a", "model_b"], sort=False)]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS)).astype({"seeds": np.int64, "significant": bool})


def _per_seed_significance(summary: pd.DataFrame, correct_by_run: Mapping[str, np.ndarray],
                           alpha: float) -> pd.DataFrame:
    """metrics.significance_table for each learning rate and seed, with those two as columns."""
    if not isinstance(correct_by_run, Mapping):
        raise ValueError("expected a mapping of run_id to boolean correctness vector, "
                         f"got {type(correct_by_run).__name__}")
    rows = _sweep_rows(summary).sort_values(["learning_rate", "seed"], ascending=[False, True], kind="stable")
    frames = []
    for (learning_rate, seed), runs in rows.groupby(["learning_rate", "seed"], sort=False):
        vectors = {model: _correct_of(correct_by_run, run_id) for model, run_id in zip(runs["model"], runs["run_id"])}
        frames.append(metrics.significance_table(vectors, alpha=alpha).assign(learning_rate=learning_rate, seed=seed))
    if not frames:
        return pd.DataFrame(columns=["learning_rate", "model_a", "model_b"])
    return pd.concat(frames, ignore_index=True)


def _correct_of(correct_by_run: Mapping[str, np.ndarray], run_id: str) -> np.ndarray:
    if run_id not in correct_by_run:
        raise ValueError(f"correct_by_run has no correctness vector of sweep run {run_id!r}; expected one for every "
                         "sweep run of the summary (evaluation.correct_vector of its predictions)")
    return correct_by_run[run_id]


def _comparison_row(pair: tuple, seeds: pd.DataFrame, alpha: float, confidence: float) -> dict:
    learning_rate, model_a, model_b = pair
    seeds = seeds.sort_values("seed")
    test = paired_test(seeds["accuracy_a"], seeds["accuracy_b"], confidence)
    significant = test.p_value is not None and test.p_value < alpha
    better = (model_a if test.difference > 0 else model_b) if significant else None
    favours_a = seeds["only_a_correct"] > seeds["only_b_correct"]
    row = {"learning_rate": learning_rate, "model_a": model_a, "model_b": model_b, "seeds": test.seeds,
           "seed_list": ",".join(str(int(seed)) for seed in seeds["seed"]),
           "accuracy_a_mean": float(seeds["accuracy_a"].mean()), "accuracy_b_mean": float(seeds["accuracy_b"].mean()),
           "difference_mean": test.difference, "difference_low": _nan(test.difference_low),
           "difference_high": _nan(test.difference_high), "t_statistic": _nan(test.statistic),
           "p_value": _nan(test.p_value), "significant": significant, "better": better,
           "mcnemar_a_better": int((seeds["significant"] & favours_a).sum()),
           "mcnemar_b_better": int((seeds["significant"] & ~favours_a).sum()),
           "mcnemar_p_min": float(seeds["p_value"].min()), "mcnemar_p_max": float(seeds["p_value"].max())}
    return {**row, "verdict": _comparison_verdict(row, model_a, model_b)}


class PairedTest(Record):
    """A paired t-test across seeds of two models' accuracies; test fields are None with too few seeds."""

    seeds: int
    difference: float  # mean of a − b across seeds
    difference_low: float | None  # t-interval of the mean difference
    difference_high: float | None
    statistic: float | None
    p_value: float | None


def paired_test(accuracies_a: Sequence[float], accuracies_b: Sequence[float],
                confidence: float = CONFIDENCE) -> PairedTest:
    """scipy's paired t-test (ttest_rel) of a − b when there are MIN_PAIRED_SEEDS seeds or more; identical
    differences of zero give p = 1."""
    from scipy import stats  # imported where used: a cached rerun computes no statistic

    a, b = np.asarray(accuracies_a, dtype=float), np.asarray(accuracies_b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"expected two equally long, non-empty 1-D sequences of per-seed accuracies, got shapes "
                         f"{a.shape} and {b.shape}")
    difference = float((a - b).mean())
    if a.size < MIN_PAIRED_SEEDS:
        return PairedTest(seeds=a.size, difference=difference, difference_low=None, difference_high=None,
                          statistic=None, p_value=None)
    with warnings.catch_warnings():  # nearly constant differences: scipy warns about precision, its answer stands
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(a, b)
        interval = result.confidence_interval(confidence)
    if np.isnan(result.pvalue):  # every difference is zero: no evidence of any difference
        return PairedTest(seeds=a.size, difference=difference, difference_low=0.0, difference_high=0.0,
                          statistic=0.0, p_value=1.0)
    return PairedTest(seeds=a.size, difference=difference, difference_low=float(interval.low),
                      difference_high=float(interval.high), statistic=float(result.statistic),
                      p_value=float(result.pvalue))


def _comparison_verdict(row: Mapping, model_a: str, model_b: str) -> str:
    seeds, p_value = row["seeds"], row["p_value"]
    if seeds < MIN_PAIRED_SEEDS:
        significant = row["mcnemar_a_better"] + row["mcnemar_b_better"]
        directions = (f" ({model_a} better in {row['mcnemar_a_better']}, {model_b} in {row['mcnemar_b_better']})"
                      if significant else "")
        return (f"too few seeds for a paired test ({seeds}); McNemar significant in {significant} of {seeds} "
                f"seed{'s' if seeds != 1 else ''}{directions}")
    if row["better"] is None:
        return f"within seed noise across {seeds} seeds (paired t p={p_value:.2g})"
    worse = model_b if row["better"] == model_a else model_a
    return f"{row['better']} better than {worse} across {seeds} seeds (paired t p={p_value:.2g})"


# ---- the report's findings across seeds -----------------------------------------------------------------

class SeedConclusion(Record):
    """Whether "`better` beats `worse` at this learning rate" holds across seeds."""

    learning_rate: float
    better: str  # the claim's better model
    worse: str
    from_study: bool  # the claim is the study's table 5.1 ranking; else this run's mean accuracies across seeds
    seeds: int
    difference: float  # mean accuracy of `better` − `worse` across seeds (negative when reversed)
    difference_low: float | None  # its t-interval; None with too few seeds
    difference_high: float | None
    p_value: float | None  # paired t; None with too few seeds
    outcome: Literal["holds", "reversed", "within_noise", "too_few_seeds"]
    mcnemar_for: int  # seeds in which McNemar finds `better` significantly better
    mcnemar_against: int  # seeds in which McNemar finds `worse` significantly better


class CellSpread(Record):
    """One cell's spread across seeds beside the smallest non-zero accuracy gap to another model at its rate."""

    model: str
    learning_rate: float
    seeds: int
    std: float
    study_gap: float | None  # smallest non-zero |gap| to another model in the study's table 5.1
    study_rival: str | None
    run_gap: float | None  # smallest non-zero |gap| between mean accuracies across seeds in this run
    run_rival: str | None
    exceeds_study_gap: bool
    exceeds_run_gap: bool


class AcrossSeeds(Record):
    """What the report says about seeds: each pairwise conclusion and each cell's spread against the gaps."""

    conclusions: tuple[SeedConclusion, ...]  # in the comparisons table's order
    spreads: tuple[CellSpread, ...]  # cells with two seeds or more, in the replicates table's order


def conclusions_across_seeds(replicates: pd.DataFrame, comparisons: pd.DataFrame,
                             study: Mapping[str, Mapping[float, float]] = STUDY_TABLE_5_1) -> AcrossSeeds:
    """Which conclusions hold across seeds, and which cells' spread exceeds the gaps conclusions are drawn from."""
    _require(replicates, REPLICATES_COLUMNS, "replicates table")
    _require(comparisons, COMPARISON_COLUMNS, "comparisons table")
    conclusions = tuple(_conclusion(row, study) for row in comparisons.to_dict(orient="records"))
    cells = replicates[replicates["seeds"] > 1]
    return AcrossSeeds(conclusions=conclusions,
                       spreads=tuple(_cell_spread(cell, replicates, study) for cell in cells.to_dict(orient="records")))


def _conclusion(row: Mapping, study: Mapping[str, Mapping[float, float]]) -> SeedConclusion:
    a, b, rate = row["model_a"], row["model_b"], row["learning_rate"]
    study_a, study_b = _study_value(study, a, rate), _study_value(study, b, rate)
    from_study = study_a is not None and study_b is not None and study_a != study_b
    a_claimed = study_a > study_b if from_study else row["difference_mean"] >= 0
    sign = 1 if a_claimed else -1
    low, high = (row["difference_low"], row["difference_high"])[::sign]
    return SeedConclusion(
        learning_rate=rate, better=a if a_claimed else b, worse=b if a_claimed else a, from_study=from_study,
        seeds=row["seeds"], difference=sign * row["difference_mean"], difference_low=_none(sign * low),
        difference_high=_none(sign * high), p_value=_none(row["p_value"]),
        outcome=_outcome(row, a if a_claimed else b),
        mcnemar_for=row["mcnemar_a_better" if a_claimed else "mcnemar_b_better"],
        mcnemar_against=row["mcnemar_b_better" if a_claimed else "mcnemar_a_better"])


def _outcome(row: Mapping, claimed_better: str) -> str:
    if row["seeds"] < MIN_PAIRED_SEEDS:
        return "too_few_seeds"
    if not row["significant"]:
        return "within_noise"
    return "holds" if row["better"] == claimed_better else "reversed"


def _cell_spread(cell: Mapping, replicates: pd.DataFrame, study: Mapping[str, Mapping[float, float]]) -> CellSpread:
    model, rate = cell["model"], cell["learning_rate"]
    rivals = replicates[np.isclose(replicates["learning_rate"], rate) & (replicates["model"] != model)]
    run_gap, run_rival = _smallest_gap(cell["accuracy_mean"], dict(zip(rivals["model"], rivals["accuracy_mean"])))
    study_rivals = {rival: _study_value(study, rival, rate) for rival in study if rival != model}
    study_gap, study_rival = _smallest_gap(_study_value(study, model, rate), study_rivals)
    std = float(cell["accuracy_std"])
    return CellSpread(model=model, learning_rate=rate, seeds=cell["seeds"], std=std, study_gap=study_gap,
                      study_rival=study_rival, run_gap=run_gap, run_rival=run_rival,
                      exceeds_study_gap=study_gap is not None and std > study_gap,
                      exceeds_run_gap=run_gap is not None and std > run_gap)


def _smallest_gap(accuracy: float | None, rivals: Mapping[str, float | None]) -> tuple[float | None, str | None]:
    """The smallest non-zero |accuracy − rival| and its rival; (None, None) when there is none."""
    gaps = {rival: abs(accuracy - value) for rival, value in rivals.items()
            if accuracy is not None and value is not None and abs(accuracy - value) > 0}
    rival = min(gaps, key=gaps.get, default=None)
    return (None, None) if rival is None else (float(gaps[rival]), str(rival))


def _study_value(study: Mapping[str, Mapping[float, float]], model: str, learning_rate: float) -> float | None:
    return next((value for rate, value in study.get(model, {}).items() if math.isclose(rate, learning_rate)), None)


# ---- checks and conversions -----------------------------------------------------------------------------

def _sweep_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's sweep rows: model in the summary's order, then learning rate largest first, then seed."""
    _require(summary, ["run_id", "model", "learning_rate", "seed", "role", *REPLICATE_METRICS], "summary")
    rows = table_builders.sweep_runs(summary)
    repeated = rows[rows.duplicated(["model", "learning_rate", "seed"], keep=False)]
    if len(repeated):
        raise ValueError(f"the summary's sweep has several runs of the same model, learning rate and seed "
                         f"({', '.join(repeated['run_id'].astype(str))}); expected one sweep run per seed")
    order = {model: rank for rank, model in enumerate(dict.fromkeys(summary["model"]))}
    ranked = rows.assign(_rank=rows["model"].map(order), _rate=-rows["learning_rate"])
    return ranked.sort_values(["_rank", "_rate", "seed"], kind="stable").drop(columns=["_rank", "_rate"])


def _require(table: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"expected the {name} as a pandas DataFrame, got {type(table).__name__}")
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"the {name} lacks columns {missing}; expected {list(columns)}, "
                         f"got {[str(column) for column in table.columns]}")


def check_level(value: float, name: str) -> None:
    """Raise ValueError unless `value` (a confidence level or alpha, named `name`) lies strictly in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1 (e.g. 0.95 for confidence, 0.05 for alpha), "
                         f"got {value!r}")


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
