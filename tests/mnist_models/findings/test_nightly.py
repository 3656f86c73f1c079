"""The nightly gate's findings: the history's latest night and each model's decision."""

from __future__ import annotations

import pandas as pd
import pytest

from mnist_models.findings import compute_findings
from tests.mnist_models.findings.tables import history_table


def test_nightly_gate_is_the_latest_night_s_decisions():
    gate = compute_findings({"history": history_table()}).nightly
    assert (gate.date, gate.nights, gate.undecided, gate.regressed) == ("2024-05-02", 2, 0, ("resnet",))
    decisions = {decision.model: decision for decision in gate.decisions}
    assert [decisions[model].decision for model in ("dnn", "convnet", "resnet")] == [
        "promoted", "kept (drop within noise)", "regressed"]
    resnet = decisions["resnet"]
    assert (resnet.accuracy, resnet.champion_accuracy, resnet.p_value, resnet.history_mean) == (0.980, 0.991, 1e-6, 0.991)
    assert resnet.difference == pytest.approx(-0.011) and resnet.history_std is None
    assert resnet.message == "resnet: regressed" and resnet.seed == 20240502


def test_tonight_s_runs_the_gate_did_not_test_are_counted_not_shown():
    history = history_table()
    other_rate = history.iloc[[-1]].assign(learning_rate=0.01, run_id="resnet-1-lr0.01", decision=None, message=None)
    gate = compute_findings({"history": pd.concat([history, other_rate], ignore_index=True)}).nightly
    assert (len(gate.decisions), gate.undecided) == (3, 1)
    assert compute_findings({}).nightly is None
