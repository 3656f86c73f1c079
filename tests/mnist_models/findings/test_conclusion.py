"""Section 7's findings: the best model at the reference learning rate and the study's choice."""

from __future__ import annotations

import pytest

from mnist_models.findings import compute_findings
from mnist_models.study_reference import STUDY_TABLE_2_1
from tests.mnist_models.findings.tables import SWEEP, replicated_tables, summary_table


def test_best_model_at_the_reference_learning_rate_and_the_study_s_choice():
    best = compute_findings({"summary": SWEEP}).best_model
    assert best.best.model == "convnet" and best.best.accuracy == 0.99
    assert [row.model for row in best.others] == ["dnn"]
    assert (best.study_best_model, best.study_best_accuracy) == ("resnet", 0.991)
    assert best.tied_with == () and best.lead is None  # no significance table


def test_a_model_outside_the_study_is_not_compared_with_its_table_2_1():
    best = compute_findings({"summary": summary_table(("mlp", 0.001, 0.97))}).best_model
    assert (best.best.study_accuracy, best.best.gap, best.study_best_model) == (None, None, None)


def test_with_several_seeds_table_2_1_and_the_best_model_use_the_means():
    tables = replicated_tables()
    findings = compute_findings(tables)
    at_reference = {row.model: row for row in findings.accuracy_at_reference}
    assert list(at_reference) == ["dnn", "convnet", "resnet"]  # one row per model, not per seed
    cell = tables["replicates"].set_index(["model", "learning_rate"]).loc[("resnet", 0.001)]
    resnet = at_reference["resnet"]
    assert (resnet.accuracy, resnet.accuracy_low, resnet.accuracy_high, resnet.accuracy_std, resnet.seeds) == (
        cell["accuracy_mean"], cell["accuracy_mean_low"], cell["accuracy_mean_high"], cell["accuracy_std"], 3)
    assert resnet.gap == pytest.approx(cell["accuracy_mean"] - STUDY_TABLE_2_1["resnet"])
    best = findings.best_model
    assert (best.best.model, [row.model for row in best.others]) == ("resnet", ["convnet", "dnn"])
    assert best.lead is None  # three McNemar tests, one per seed: the paired test across seeds decides
    assert {best.lead_across_seeds.better, best.lead_across_seeds.worse} == {"resnet", "convnet"}
    assert best.lead_across_seeds.outcome == "within_noise"
