"""Unit tests for mnist_models.replicates: across-seed statistics checked against scipy and statsmodels,
model comparisons across seeds, and the report's findings across seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar
from statsmodels.stats.weightstats import DescrStatsW

from mnist_models import table_builders
from mnist_models.replicates import (
    ACROSS_SEED_COLUMNS,
    COMPARISON_COLUMNS,
    REPLICATES_COLUMNS,
    AcrossSeeds,
    across_seed_columns,
    across_seed_sweep,
    conclusions_across_seeds,
    paired_test,
    replicates_table,
    seed_comparisons,
    spread,
)

IMAGES = 1000


def correctness_pair(only_a: int, only_b: int, neither: int = 10,
                     images: int = IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of two runs on the same images with the given discordant counts."""
    both = images - only_a - only_b - neither
    a = np.array([True] * both + [True] * only_a + [False] * only_b + [False] * neither)
    b = np.array([True] * both + [False] * only_a + [True] * only_b + [False] * neither)
    return a, b


def _row(model: str, learning_rate: float, seed: int, accuracy: float, map_: float | None = None,
         role: str = "sweep") -> dict:
    return {"run_id": f"{model}-lr{learning_rate:g}-s{seed}-{role}", "model": model, "learning_rate": learning_rate,
            "epochs": 3, "seed": seed, "accuracy": accuracy, "accuracy_low": accuracy - 0.01,
            "accuracy_high": accuracy + 0.01, "loss": 0.1, "macro_f1": accuracy, "macro_auc": 0.99,
            "map": accuracy - 0.01 if map_ is None else map_, "parameters": 100, "train_seconds": 1.0,
            "role": role, "roles": role}


def _summary(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=table_builders.SUMMARY_COLUMNS)


def _paired_runs(learning_rate: float, discordant: dict[int, tuple[int, int]], models=("convnet", "dnn")):
    """Summary rows and correctness vectors of two models, one pair of runs per seed with (only_a, only_b) counts."""
    rows, correct = [], {}
    for seed, (only_a, only_b) in discordant.items():
        vectors = correctness_pair(only_a, only_b)
        for model, vector in zip(models, vectors):
            row = _row(model, learning_rate, seed, float(vector.mean()))
            rows.append(row)
            correct[row["run_id"]] = vector
    return rows, correct


# ---- spread and the replicates table --------------------------------------------------------------------

def test_spread_matches_scipy_and_statsmodels() -> None:
    values = np.array([0.971, 0.982, 0.975, 0.990])
    mean, deviation, low, high = spread(values)
    assert mean == pytest.approx(np.mean(values))
    assert deviation == pytest.approx(np.std(values, ddof=1))
    assert (low, high) == pytest.approx(stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values)))
    assert (low, high) == pytest.approx(DescrStatsW(values).tconfint_mean(alpha=0.05))
    assert spread(values, confidence=0.99)[2] < low


def test_spread_of_one_seed_is_nan_and_identical_seeds_have_no_width() -> None:
    mean, deviation, low, high = spread([0.98])
    assert mean == 0.98 and all(math.isnan(value) for value in (deviation, low, high))
    assert spread([0.98, 0.98, 0.98]) == (pytest.approx(0.98), 0.0, pytest.approx(0.98), pytest.approx(0.98))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        spread([])


def test_replicates_table_per_cell_in_model_order_largest_rate_first() -> None:
    summary = _summary([
        _row("dnn", 0.001, 42, 0.95), _row("convnet", 0.01, 43, 0.97), _row("dnn", 0.01, 42, 0.93),
        _row("convnet", 0.01, 42, 0.96), _row("dnn", 0.001, 44, 0.96), _row("dnn", 0.001, 43, 0.97),
        _row("resnet_plain", 0.001, 42, 0.5, role="gradient"),
    ])
    table = replicates_table(summary)
    assert list(table.columns) == list(REPLICATES_COLUMNS)
    assert list(zip(table["model"], table["learning_rate"])) == [("dnn", 0.01), ("dnn", 0.001), ("convnet", 0.01)]
    assert table["seeds"].tolist() == [1, 3, 2]
    assert table["seed_list"].tolist() == ["42", "42,43,44", "42,43"]
    dnn = table.iloc[1]
    expected = spread([0.95, 0.97, 0.96])
    assert [dnn[f"accuracy_{name}"] for name in ("mean", "std", "mean_low", "mean_high")] == pytest.approx(expected)
    assert [dnn[f"map_{name}"] for name in ("mean", "std", "mean_low", "mean_high")] == pytest.approx(
        spread([0.94, 0.96, 0.95]))
    assert table.iloc[0][["accuracy_std", "accuracy_mean_low", "map_mean_high"]].isna().all()


def test_replicates_table_rejects_a_repeated_seed_and_a_missing_column() -> None:
    with pytest.raises(ValueError, match="one sweep run per seed"):
        replicates_table(_summary([_row("dnn", 0.001, 42, 0.95), {**_row("dnn", 0.001, 42, 0.96), "run_id": "x"}]))
    with pytest.raises(ValueError, match=r"lacks columns \['seed'\]"):
        replicates_table(_summary([_row("dnn", 0.001, 42, 0.95)]).drop(columns="seed"))
    with pytest.raises(ValueError, match="confidence"):
        replicates_table(_summary([_row("dnn", 0.001, 42, 0.95)]), confidence=95)


def test_across_seed_columns_only_with_several_seeds() -> None:
    one_seed = _summary([_row("dnn", 0.001, 42, 0.95), _row("convnet", 0.001, 42, 0.98)])
    table = table_builders.accuracy_at_lr_table(one_seed)
    assert across_seed_columns(table, replicates_table(one_seed)) is table

    summary = _summary([_row(model, 0.001, seed, accuracy + seed / 1000)
                        for model, accuracy in (("dnn", 0.9), ("convnet", 0.93)) for seed in (1, 2, 3)])
    replicates = replicates_table(summary)
    joined = across_seed_columns(table_builders.accuracy_at_lr_table(summary), replicates)
    assert len(joined) == 6 and set(ACROSS_SEED_COLUMNS) <= set(joined.columns)
    assert joined.loc[joined["model"] == "convnet", "accuracy_mean"].tolist() == pytest.approx([0.932] * 3)
    with pytest.raises(ValueError, match="learning_rate"):
        across_seed_columns(pd.DataFrame({"model": ["dnn"]}), replicates)


def test_across_seed_sweep_shows_mean_and_interval_per_learning_rate() -> None:
    rows = [_row(model, rate, seed, accuracy - rate + seed / 1000)
            for model, accuracy in (("dnn", 0.9), ("convnet", 0.95)) for rate in (0.001, 0.01) for seed in (1, 2)]
    summary = _summary(rows)
    replicates = replicates_table(summary)
    sweep = across_seed_sweep(table_builders.lr_sweep_table(summary), replicates)
    assert list(sweep.columns) == ["model", "lr 0.01", "lr 0.01 std", "lr 0.01 low", "lr 0.01 high",
                                   "lr 0.001", "lr 0.001 std", "lr 0.001 low", "lr 0.001 high"]
    assert sweep["model"].tolist() == ["dnn", "convnet"]
    convnet = replicates[(replicates["model"] == "convnet") & (replicates["learning_rate"] == 0.01)].iloc[0]
    assert sweep.iloc[1]["lr 0.01"] == pytest.approx(convnet["accuracy_mean"])
    assert sweep.iloc[1]["lr 0.01 high"] == pytest.approx(convnet["accuracy_mean_high"])
    one_seed = table_builders.lr_sweep_table(_summary(rows[::2]))
    assert across_seed_sweep(one_seed, replicates_table(_summary(rows[::2]))) is one_seed


# ---- paired test and model comparisons ------------------------------------------------------------------

def test_paired_test_matches_scipy_and_statsmodels() -> None:
    a, b = [0.980, 0.982, 0.979, 0.985], [0.955, 0.954, 0.960, 0.958]
    test = paired_test(a, b)
    reference = stats.ttest_rel(a, b)
    assert (test.statistic, test.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    assert (test.difference_low, test.difference_high) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    differences = DescrStatsW(np.subtract(a, b))
    assert test.p_value == pytest.approx(differences.ttest_mean(0)[1])
    assert (test.difference_low, test.difference_high) == pytest.approx(differences.tconfint_mean(alpha=0.05))


def test_paired_test_edge_cases() -> None:
    two = paired_test([0.98, 0.97], [0.96, 0.95])
    assert two.seeds == 2 and two.difference == pytest.approx(0.02) and two.p_value is None
    same = paired_test([0.98, 0.97, 0.99], [0.98, 0.97, 0.99])
    assert (same.p_value, same.statistic, same.difference_low, same.difference_high) == (1.0, 0.0, 0.0, 0.0)
    constant = paired_test([0.5, 0.75, 0.25], [0.25, 0.5, 0.0])  # the same gap on every seed
    assert constant.p_value == 0.0 and constant.difference_low == pytest.approx(0.25)
    with pytest.raises(ValueError, match="equally long"):
        paired_test([0.9, 0.8], [0.9])


def test_seed_comparisons_real_difference_across_three_seeds() -> None:
    discordant = {42: (30, 5), 43: (34, 6), 44: (27, 8)}
    rows, correct = _paired_runs(0.001, discordant)
    table = seed_comparisons(_summary(rows), correct)
    assert list(table.columns) == list(COMPARISON_COLUMNS) and len(table) == 1
    row = table.iloc[0]
    convnet = [correct[f"convnet-lr0.001-s{seed}-sweep"].mean() for seed in discordant]
    dnn = [correct[f"dnn-lr0.001-s{seed}-sweep"].mean() for seed in discordant]
    reference = stats.ttest_rel(convnet, dnn)
    assert (row["model_a"], row["model_b"], row["seeds"], row["seed_list"]) == ("convnet", "dnn", 3, "42,43,44")
    assert row["p_value"] == pytest.approx(reference.pvalue)
    assert row["t_statistic"] == pytest.approx(reference.statistic)
    assert row["difference_mean"] == pytest.approx(np.mean(np.subtract(convnet, dnn)))
    mcnemar = [statsmodels_mcnemar([[0, only_a], [only_b, 0]], exact=False, correction=True).pvalue  # 25+ discordant
               for only_a, only_b in discordant.values()]
    assert (row["mcnemar_p_min"], row["mcnemar_p_max"]) == pytest.approx((min(mcnemar), max(mcnemar)))
    assert (row["mcnemar_a_better"], row["mcnemar_b_better"]) == (3, 0)
    assert row["significant"] and row["better"] == "convnet"
    assert row["verdict"] == f"convnet better than dnn across 3 seeds (paired t p={reference.pvalue:.2g})"


def test_seed_comparisons_within_seed_noise() -> None:
    rows, correct = _paired_runs(0.01, {1: (12, 10), 2: (9, 12), 3: (11, 10)})
    row = seed_comparisons(_summary(rows), correct).iloc[0]
    assert not row["significant"] and row["better"] is None
    assert row["verdict"] == f"within seed noise across 3 seeds (paired t p={row['p_value']:.2g})"
    assert row["p_value"] > 0.05 and (row["mcnemar_a_better"], row["mcnemar_b_better"]) == (0, 0)


def test_seed_comparisons_two_seeds_report_mcnemar_only() -> None:
    rows, correct = _paired_runs(0.001, {42: (30, 5), 43: (34, 6)})
    row = seed_comparisons(_summary(rows), correct).iloc[0]
    assert math.isnan(row["p_value"]) and math.isnan(row["difference_low"]) and not row["significant"]
    assert row["verdict"] == ("too few seeds for a paired test (2); McNemar significant in 2 of 2 seeds "
                              "(convnet better in 2, dnn in 0)")


def test_seed_comparisons_identical_models_within_noise() -> None:
    rows, correct = _paired_runs(0.001, {1: (0, 0), 2: (0, 0), 3: (0, 0)})
    row = seed_comparisons(_summary(rows), correct).iloc[0]
    assert row["p_value"] == 1.0 and row["difference_mean"] == 0.0
    assert row["verdict"] == "within seed noise across 3 seeds (paired t p=1)"


def test_seed_comparisons_pairs_per_rate_in_model_order_and_only_shared_seeds() -> None:
    rows, correct = [], {}
    for rate in (0.001, 0.01):
        for seed in (1, 2, 3):
            vectors = dict(zip(("dnn", "convnet"), correctness_pair(5, 20))) | {"resnet": correctness_pair(25, 0)[1]}
            for model, vector in vectors.items():
                if (model, seed) != ("resnet", 3):
                    rows.append(_row(model, rate, seed, float(vector.mean())))
                    correct[rows[-1]["run_id"]] = vector
    table = seed_comparisons(_summary(rows), correct)
    pairs = (("dnn", "convnet"), ("dnn", "resnet"), ("convnet", "resnet"))
    assert list(zip(table["learning_rate"], table["model_a"], table["model_b"])) == [
        (rate, a, b) for rate in (0.01, 0.001) for a, b in pairs]
    assert table["seeds"].tolist() == [3, 2, 2] * 2
    with pytest.raises(ValueError, match="no correctness vector of sweep run 'dnn-lr0.01-s1-sweep'"):
        seed_comparisons(_summary(rows), {key: value for key, value in correct.items() if key != "dnn-lr0.01-s1-sweep"})


def test_seed_comparisons_of_an_empty_sweep_is_empty() -> None:
    table = seed_comparisons(_summary([_row("resnet_plain", 0.001, 1, 0.5, role="gradient")]), {})
    assert table.empty and list(table.columns) == list(COMPARISON_COLUMNS)


# ---- findings across seeds ------------------------------------------------------------------------------

STUDY = {"dnn": {0.001: 0.96, 0.01: 0.93}, "convnet": {0.001: 0.99, 0.01: 0.978}, "resnet": {0.001: 0.985}}


def _comparisons(rows: list[dict]) -> pd.DataFrame:
    defaults = {"seed_list": "", "accuracy_a_mean": 0.9, "accuracy_b_mean": 0.9, "difference_low": math.nan,
                "difference_high": math.nan, "t_statistic": math.nan, "p_value": math.nan, "significant": False,
                "better": None, "mcnemar_a_better": 0, "mcnemar_b_better": 0, "mcnemar_p_min": 0.5,
                "mcnemar_p_max": 0.5, "verdict": ""}
    return pd.DataFrame([{**defaults, **row} for row in rows], columns=list(COMPARISON_COLUMNS))


def test_conclusions_follow_the_study_ranking_and_the_paired_test() -> None:
    comparisons = _comparisons([
        {"learning_rate": 0.001, "model_a": "dnn", "model_b": "convnet", "seeds": 3, "difference_mean": -0.03,
         "difference_low": -0.04, "difference_high": -0.02, "p_value": 0.002, "significant": True,
         "better": "convnet", "mcnemar_b_better": 3},
        {"learning_rate": 0.001, "model_a": "convnet", "model_b": "resnet", "seeds": 3, "difference_mean": -0.004,
         "difference_low": -0.006, "difference_high": -0.002, "p_value": 0.01, "significant": True, "better": "resnet"},
        {"learning_rate": 0.01, "model_a": "dnn", "model_b": "convnet", "seeds": 3, "difference_mean": -0.001,
         "p_value": 0.4},
        {"learning_rate": 0.01, "model_a": "convnet", "model_b": "resnet", "seeds": 2, "difference_mean": -0.002,
         "mcnemar_a_better": 1},
    ])
    found = conclusions_across_seeds(replicates_table(_summary([_row("dnn", 0.001, 1, 0.9)])), comparisons, STUDY)
    holds, reversed_, noise, few = found.conclusions
    assert (holds.better, holds.worse, holds.from_study, holds.outcome) == ("convnet", "dnn", True, "holds")
    assert (holds.difference, holds.difference_low, holds.difference_high) == pytest.approx((0.03, 0.02, 0.04))
    assert (holds.mcnemar_for, holds.mcnemar_against) == (3, 0)
    assert (reversed_.better, reversed_.outcome, reversed_.difference) == ("convnet", "reversed", pytest.approx(-0.004))
    assert (noise.better, noise.outcome, noise.p_value) == ("convnet", "within_noise", 0.4)
    assert (few.better, few.from_study, few.outcome, few.p_value) == ("resnet", False, "too_few_seeds", None)
    assert (few.mcnemar_for, few.mcnemar_against) == (0, 1)
    assert AcrossSeeds.from_json(found.to_json()) == found


def test_cell_spread_against_the_study_gaps_and_the_run_gaps() -> None:
    rows = [_row("dnn", 0.001, seed, accuracy) for seed, accuracy in ((1, 0.95), (2, 0.97), (3, 0.96))]
    rows += [_row("convnet", 0.001, seed, accuracy) for seed, accuracy in ((1, 0.985), (2, 0.986), (3, 0.987))]
    rows += [_row("resnet", 0.001, 1, 0.99)]
    replicates = replicates_table(_summary(rows))
    found = conclusions_across_seeds(replicates, _comparisons([]), STUDY)
    assert [(cell.model, cell.seeds) for cell in found.spreads] == [("dnn", 3), ("convnet", 3)]
    dnn, convnet = found.spreads
    assert dnn.std == pytest.approx(0.01)
    assert (dnn.study_rival, dnn.study_gap) == ("resnet", pytest.approx(0.025))
    assert (dnn.run_rival, dnn.run_gap) == ("convnet", pytest.approx(0.026))
    assert not dnn.exceeds_study_gap and not dnn.exceeds_run_gap
    assert (convnet.study_rival, convnet.study_gap, convnet.run_rival) == ("resnet", pytest.approx(0.005), "resnet")
    assert convnet.run_gap == pytest.approx(0.004) and not convnet.exceeds_run_gap
    noisy = replicates.assign(accuracy_std=replicates["accuracy_std"] * 10)
    noisy_convnet = conclusions_across_seeds(noisy, _comparisons([]), STUDY).spreads[1]
    assert noisy_convnet.exceeds_study_gap and noisy_convnet.exceeds_run_gap
    with pytest.raises(ValueError, match="comparisons table lacks columns"):
        conclusions_across_seeds(replicates, pd.DataFrame({"model_a": []}), STUDY)
