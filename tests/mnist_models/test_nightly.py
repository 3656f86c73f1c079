"""The nightly gate: the seed per night, the accuracy history, and the noise-aware decision against the champion
(checked against statsmodels)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from mnist_models import nightly
from mnist_models.nightly import HISTORY_WINDOW, gate, prediction_bound
from mnist_models.records import ChampionDecision
from tests.mnist_models.test_replicates import correctness_pair

SUMMARY_COLUMNS = ["model", "learning_rate", "epochs", "seed", "accuracy", "accuracy_low", "accuracy_high", "map",
                   "run_id", "role"]


def summary(*runs: tuple) -> pd.DataFrame:
    """Summary-table rows from (model, learning rate, accuracy, run id, role[, seed]) tuples."""
    return pd.DataFrame([{"model": model, "learning_rate": learning_rate, "epochs": 10, "seed": seed[0] if seed else 1,
                          "accuracy": accuracy, "accuracy_low": accuracy - 0.01, "accuracy_high": accuracy + 0.01,
                          "map": accuracy, "run_id": run_id, "role": role}
                         for model, learning_rate, accuracy, run_id, role, *seed in runs], columns=SUMMARY_COLUMNS)


def night(date: str, flow_run_id: str, *runs: tuple) -> pd.DataFrame:
    return nightly.history_rows(summary(*runs), dt.date.fromisoformat(date), flow_run_id)


def test_seed_is_derived_from_the_date():
    assert nightly.nightly_seed(dt.date(2026, 11, 27)) == 20261127
    assert nightly.nightly_seed(dt.date(2026, 11, 28)) != nightly.nightly_seed(dt.date(2026, 11, 27))


# --------------------------------------------------------------------------- history


def test_history_rows_are_the_sweep_runs_of_the_summary():
    rows = night("2026-11-26", "flow-a", ("dnn", 0.001, 0.96, "dnn-1", "sweep"),
                 ("dnn", 0.01, 0.95, "dnn-2", "sweep"), ("resnet", 0.001, 0.99, "resnet-g", "gradient"))

    assert list(rows.columns) == nightly.HISTORY_COLUMNS
    assert rows["run_id"].tolist() == ["dnn-1", "dnn-2"]
    assert set(rows["date"]) == {"2026-11-26"} and set(rows["flow_run_id"]) == {"flow-a"}


def test_history_rows_name_missing_columns():
    with pytest.raises(ValueError, match="sweep runs lack the column.s. map, role; expected the summary table's"):
        nightly.history_rows(summary().drop(columns=["map", "role"]), dt.date(2026, 11, 26), "flow-a")


def test_a_rerun_of_the_same_night_replaces_its_rows_whatever_its_flow_run():
    history = nightly.append_history(None, night("2026-11-26", "flow-a", ("dnn", 0.001, 0.96, "dnn-a", "sweep")))
    history = nightly.append_history(history, night("2026-11-27", "flow-b", ("dnn", 0.001, 0.97, "dnn-b", "sweep"),
                                                    ("convnet", 0.001, 0.98, "convnet-b", "sweep")))
    # The same night again, from a new flow run (a manual rerun), for one of its models:
    history = nightly.append_history(history, night("2026-11-27", "flow-c", ("dnn", 0.001, 0.975, "dnn-c", "sweep")))

    assert history[["date", "model", "accuracy"]].values.tolist() == [
        ["2026-11-26", "dnn", 0.96], ["2026-11-27", "convnet", 0.98], ["2026-11-27", "dnn", 0.975]]
    assert len(history.groupby(["date", "model"])) == len(history)  # one row per model per night


def test_a_late_rerun_of_an_older_night_keeps_the_history_in_date_order():
    history = nightly.append_history(None, night("2026-11-27", "flow-b", ("dnn", 0.001, 0.97, "dnn-b", "sweep")))
    history = nightly.append_history(history, night("2026-11-26", "flow-a", ("dnn", 0.001, 0.96, "dnn-a", "sweep")))

    assert history["date"].tolist() == ["2026-11-26", "2026-11-27"]


def test_past_accuracies_are_one_per_night_of_the_same_model_rate_and_epochs():
    replicated = night("2026-11-25", "flow-1", *(("dnn", 0.001, accuracy, f"dnn-{seed}", "sweep", seed)
                                                 for seed, accuracy in ((1, 0.95), (2, 0.97), (3, 0.96), (4, 0.94))))
    gated = night("2026-11-26", "flow-2", ("dnn", 0.001, 0.93, "dnn-a", "sweep", 1),
                  ("dnn", 0.001, 0.99, "dnn-b", "sweep", 2)).assign(decision=[None, "kept"])
    others = night("2026-11-26", "flow-2", ("dnn", 0.01, 0.5, "dnn-fast", "sweep"),
                   ("convnet", 0.001, 0.99, "convnet-1", "sweep"))
    tonight = night("2026-11-27", "flow-3", ("dnn", 0.001, 0.10, "dnn-tonight", "sweep"))
    history = pd.concat([replicated, gated, others, tonight], ignore_index=True)

    past = nightly.past_accuracies(history, "dnn", 0.001, 10, before=dt.date(2026, 11, 27))

    # 2026-11-25: no gate decisions yet, the lower median of four seeds; 2026-11-26: the run the gate tested.
    assert past.to_dict() == {"2026-11-25": 0.95, "2026-11-26": 0.99}
    assert nightly.past_accuracies(history, "dnn", 0.001, 20, before=dt.date(2026, 11, 27)).empty
    empty = nightly.past_accuracies(None, "dnn", 0.001, 10, before=dt.date(2026, 11, 27))
    assert empty.empty and (empty.index > "2026-11-25").sum() == 0  # nights since a champion: none yet
    assert (past.index > "2026-11-25").sum() == 1


# --------------------------------------------------------------------------- the gate

def test_prediction_bound_is_statsmodels_lower_prediction_limit_of_one_more_night() -> None:
    nights = np.array([0.962, 0.958, 0.965, 0.960, 0.957, 0.963])
    ols = sm.OLS(nights, np.ones((nights.size, 1))).fit()
    reference = ols.get_prediction(np.ones((1, 1))).summary_frame(alpha=0.05)["obs_ci_lower"].iloc[0]
    assert prediction_bound(nights) == pytest.approx(reference)
    assert prediction_bound(nights[:2]) is None  # fewer than three nights: no interval


def test_gate_fails_a_significant_drop_beyond_tolerance_with_few_nights() -> None:
    tonight, champion = correctness_pair(only_a=0, only_b=20)  # 2 points lower, all 20 disagreements go to the champion
    decision = gate("dnn", tonight, champion, [], tolerance=0.005)
    reference = statsmodels_mcnemar([[0, 0], [20, 0]], exact=True).pvalue
    assert decision.p_value == pytest.approx(reference) and reference < 0.05
    assert decision.difference == pytest.approx(-0.02)
    assert (decision.only_new_correct, decision.only_champion_correct) == (0, 20)
    assert decision.regressed and not decision.promoted and not decision.warning
    assert decision.verdict == "regressed" and decision.interval_low is None
    assert "REGRESSION: more than 0.50 points lower" in decision.message and "tolerance rule" in decision.message


def test_gate_warns_on_the_same_drop_when_not_significant() -> None:
    tonight, champion = correctness_pair(only_a=90, only_b=110)  # 2 points lower too, but 200 images disagree both ways
    decision = gate("dnn", tonight, champion, [], tolerance=0.005)
    reference = statsmodels_mcnemar([[0, 90], [110, 0]], exact=False, correction=True).pvalue
    assert decision.p_value == pytest.approx(reference) and reference >= 0.05
    assert decision.warning and not decision.regressed and not decision.promoted
    assert decision.verdict == "kept (drop within noise)"
    assert "WARNING" in decision.message and "not significantly worse" in decision.message


def test_gate_with_three_nights_fails_only_below_their_bound_and_significantly_worse() -> None:
    tonight, champion = correctness_pair(only_a=0, only_b=20)  # tonight 0.97, champion 0.99, a significant drop
    steady = [0.99, 0.991, 0.989, 0.99]
    decision = gate("dnn", tonight, champion, steady, tolerance=0.005)
    assert decision.regressed and decision.interval_low == pytest.approx(prediction_bound(steady))
    assert decision.nights == 4 and "below what the past nights predict" in decision.message
    assert "fail when below the past nights' 95% prediction bound" in decision.rule
    # The same drop on nights that move by two points with the seed is seed noise: the night passes.
    noisy = [0.95, 0.99, 0.97, 0.99]
    decision = gate("dnn", tonight, champion, noisy, tolerance=0.005)
    assert not decision.regressed and decision.warning and decision.p_value < 0.05
    assert "significantly worse than the champion, but within what the past nights predict" in decision.message


def test_gate_below_the_nights_but_not_significantly_worse_passes_with_a_warning() -> None:
    tonight, champion = correctness_pair(only_a=90, only_b=110)  # tonight 0.88, champion 0.90, not significant
    decision = gate("dnn", tonight, champion, [0.90, 0.901, 0.899, 0.90], tolerance=0.005)
    assert tonight.mean() < decision.interval_low
    assert decision.warning and not decision.regressed
    assert "WARNING: below what the past nights predict, but not significantly worse" in decision.message


def test_gate_only_the_last_history_window_counts() -> None:
    tonight, champion = correctness_pair(only_a=0, only_b=20)
    history = [0.5] * 10 + [0.99, 0.991, 0.989, 0.99] * 10  # old nights far below: outside the window
    decision = gate("dnn", tonight, champion, history, tolerance=0.005)
    assert decision.nights == HISTORY_WINDOW and decision.regressed


def test_gate_a_tie_keeps_the_champion() -> None:
    decision = gate("dnn", *correctness_pair(only_a=7, only_b=7), [0.95, 0.96], tolerance=0.005)
    assert decision.difference == 0.0 and decision.p_value == 1.0
    assert not decision.promoted and not decision.regressed and not decision.warning
    assert decision.verdict == "kept" and "champion kept, not more accurate" in decision.message


def test_gate_a_small_drop_within_tolerance_keeps_the_champion_without_warning() -> None:
    decision = gate("dnn", *correctness_pair(only_a=0, only_b=4), [], tolerance=0.005)
    assert (decision.promoted, decision.regressed, decision.warning) == (False, False, False)


CHAMPION_0_95 = correctness_pair(40, 5)  # tonight 0.985, champion 0.95: significantly better


@pytest.mark.parametrize(("since_champion", "nights", "promoted", "said"), [
    (3, [0.97, 0.975, 0.972], True, "new champion, significantly better, and the champion 0.9500 is below the"),
    (3, [0.95, 0.951, 0.949], False, "a lucky seed, not a better model"),
    (2, [0.97, 0.975, 0.972], False, "2 night(s) since the champion are too few"),
])
def test_gate_promotes_a_significant_gain_only_over_a_champion_the_nights_since_it_outgrew(
        since_champion: int, nights: list[float], promoted: bool, said: str) -> None:
    decision = gate("dnn", *CHAMPION_0_95, nights, tolerance=0.005, nights_since_champion=since_champion)
    assert decision.p_value < 0.05 and decision.difference > 0
    assert decision.promoted == promoted and not decision.regressed and not decision.warning
    assert said in decision.message
    if since_champion >= 3:
        assert decision.champion_bound == pytest.approx(prediction_bound(nights[-since_champion:]))


def test_gate_never_promotes_a_gain_that_is_not_significant() -> None:
    decision = gate("dnn", *correctness_pair(3, 1), [0.9] * 5, tolerance=0.005, nights_since_champion=5)
    assert not decision.promoted and decision.difference > 0 and decision.p_value >= 0.05
    assert "champion kept, not significantly better" in decision.message


def test_gate_first_champion_and_history() -> None:
    tonight = correctness_pair(0, 0, neither=30)[0]
    history = [0.965, 0.972, 0.968]
    decision = gate("convnet", tonight, None, history, tolerance=0.005)
    assert decision.promoted and decision.champion_accuracy is None and decision.p_value is None
    assert decision.verdict == "first champion"
    assert decision.nights == 3 and decision.history_mean == pytest.approx(np.mean(history))
    assert decision.history_std == pytest.approx(np.std(history, ddof=1))
    assert decision.message.startswith("convnet: first champion, accuracy 0.9700; past 3 night(s) 0.9683 ± ")
    assert ChampionDecision.from_json(decision.to_json()) == decision
    one_night = gate("convnet", tonight, None, [0.96], tolerance=0.005)
    assert (one_night.nights, one_night.history_std, one_night.interval_low) == (1, None, None)


def test_gate_rejects_bad_input() -> None:
    tonight, champion = correctness_pair(1, 1)
    with pytest.raises(ValueError, match="tolerance"):
        gate("dnn", tonight, champion, [], tolerance=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        gate("dnn", tonight, champion, [], tolerance=0.005, alpha=1.5)
    with pytest.raises(ValueError, match="same test images"):
        gate("dnn", tonight, champion[:-1], [], tolerance=0.005)
    with pytest.raises(ValueError, match="boolean"):
        gate("dnn", tonight.astype(int), champion, [], tolerance=0.005)
    with pytest.raises(ValueError, match="history_accuracies"):
        gate("dnn", tonight, champion, [0.9, float("nan")], tolerance=0.005)
    with pytest.raises(ValueError, match="nights_since_champion must count some of the 2 past nights"):
        gate("dnn", tonight, champion, [0.9, 0.91], tolerance=0.005, nights_since_champion=3)


def test_a_promotion_gives_its_reason() -> None:
    first = gate("convnet", correctness_pair(0, 0, neither=30)[0], None, [], tolerance=0.005)
    assert nightly.promotion_reason(first) == "first champion"
    better = gate("dnn", *correctness_pair(40, 5), [0.97, 0.975, 0.972], tolerance=0.005, nights_since_champion=3)
    assert better.promoted
    assert nightly.promotion_reason(better).startswith("significantly better: +3.50 points, McNemar p=")
    assert "the champion's 0.9500 is below the" in nightly.promotion_reason(better)
