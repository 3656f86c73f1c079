"""Section "Nightly gate": the history's latest night and the gate's decision for each model."""

from __future__ import annotations

import pandas as pd

from mnist_models.findings.numbers import Number, Whole, none_if_missing, signed_gap
from mnist_models.records import Record


class NightlyDecision(Record):
    """Tonight's gate decision for one run, as the history table records it: what was compared and why."""

    model: str
    learning_rate: float
    seed: Whole
    accuracy: Number
    champion_accuracy: Number  # on the same test images; None for a first champion
    champion_version: Whole  # the champion version compared against
    difference: Number  # accuracy − champion_accuracy
    p_value: Number  # McNemar's test against the champion; None for a first champion
    nights: Whole  # past nights set beside tonight
    history_mean: Number  # their accuracy; None without history
    history_std: Number
    interval_low: Number  # their prediction bound: below it (and significantly worse) fails; None below 3 nights
    below_interval: bool | None  # tonight's accuracy below interval_low; None without the interval
    champion_bound: Number  # the same bound from the nights since the champion: below it, a champion may be replaced
    rule: str | None  # the rule that decided, in words
    decision: str
    message: str


class NightlyGate(Record):
    """The history table's latest night: each gated model's decision."""

    date: str
    nights: int  # nights in the history, tonight included
    decisions: tuple[NightlyDecision, ...]  # tonight's rows that carry a gate decision
    undecided: int  # tonight's rows without one (the gate tests one run per model)
    regressed: tuple[str, ...]  # models whose significant drop fails the night
    regressed_by_interval: tuple[str, ...]  # of those, failed below the past nights' prediction bound
    regressed_by_tolerance: tuple[str, ...]  # of those, failed by the tolerance (fewer than 3 past nights)


def nightly_gate(history: pd.DataFrame) -> NightlyGate:
    """The latest night of the history and the gate's decision for each model it gated."""
    dates = history["date"].astype(str)
    tonight = history[dates == dates.max()]
    decided = tonight[tonight["decision"].notna()]
    decisions = tuple(
        NightlyDecision(
            model=str(row["model"]), learning_rate=row["learning_rate"], seed=row["seed"], accuracy=row["accuracy"],
            champion_accuracy=row["champion_accuracy"], champion_version=row["champion_version"],
            difference=signed_gap(row["accuracy"], row["champion_accuracy"]), p_value=row["p_value"],
            nights=row["nights"], history_mean=row["history_mean"], history_std=row["history_std"],
            interval_low=row["interval_low"], below_interval=_below(row["accuracy"], row["interval_low"]),
            champion_bound=row["champion_bound"], rule=none_if_missing(row["rule"]),
            decision=str(row["decision"]), message=str(row["message"]))
        for row in decided.to_dict(orient="records"))
    regressed = [decision for decision in decisions if decision.decision == "regressed"]
    return NightlyGate(date=str(dates.max()), nights=int(dates.nunique()), decisions=decisions,
                       undecided=len(tonight) - len(decided), regressed=tuple(row.model for row in regressed),
                       regressed_by_interval=tuple(row.model for row in regressed if row.interval_low is not None),
                       regressed_by_tolerance=tuple(row.model for row in regressed if row.interval_low is None))


def _below(accuracy: object, bound: object) -> bool | None:
    accuracy, bound = none_if_missing(accuracy), none_if_missing(bound)
    return None if accuracy is None or bound is None else bool(float(accuracy) < float(bound))
