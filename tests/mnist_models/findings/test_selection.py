"""Section 5's findings: each model's row of the sweep beside table 5.1, its best learning rate, divergence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mnist_models.findings import compute_findings
from mnist_models.findings.selection import SweepCell
from tests.mnist_models.findings.tables import REPLICATED, SEEDS, SWEEP, replicated_tables, summary_table


def test_best_learning_rate_per_model_with_its_accuracy():
    findings = compute_findings({"summary": SWEEP})
    best = {row.model: (row.best.learning_rate, row.best.accuracy) for row in findings.sweep}
    assert best == {"dnn": (0.001, 0.96), "convnet": (0.001, 0.99)}  # the gradient-only run is not in the sweep
    assert findings.learning_rates == (0.1, 0.01, 0.001, 0.0001)  # the run's rates and the study's, largest first
    dnn = findings.sweep[0]
    assert [cell.accuracy for cell in dnn.cells] == [0.11, 0.93, 0.96, None]
    assert dnn.cells[3] == SweepCell(model="dnn", learning_rate=0.0001, accuracy=None, study_accuracy=0.935, gap=None)


def test_a_tie_goes_to_the_larger_learning_rate_and_the_first_model():
    summary = summary_table(("dnn", 0.001, 0.97), ("dnn", 0.01, 0.97), ("convnet", 0.001, 0.97))
    findings = compute_findings({"summary": summary})
    assert findings.sweep[0].best.learning_rate == 0.01
    assert findings.best_model.best.model == "dnn"
    assert findings.best_model.tied_with == ("convnet",)


def test_a_diverged_cell_is_found_with_its_learning_rate():
    findings = compute_findings({"summary": SWEEP})
    assert len(findings.diverged) == 1
    divergence = findings.diverged[0]
    assert (divergence.learning_rate, divergence.every_model) == (0.1, False)
    assert [(cell.model, cell.accuracy) for cell in divergence.cells] == [("dnn", 0.11)]
    assert findings.diverged_as_in_study  # the study's dnn reached 0.114 at 0.1


def test_divergence_of_every_model_and_of_a_model_the_study_lacks():
    summary = summary_table(("dnn", 0.1, 0.11), ("mlp", 0.1, 0.09), ("dnn", 0.001, 0.96), ("mlp", 0.001, 0.95))
    findings = compute_findings({"summary": summary})
    assert findings.diverged[0].every_model
    assert not findings.diverged_as_in_study  # the study has no mlp to agree with


def test_no_divergence_when_every_accuracy_is_high():
    findings = compute_findings({"summary": summary_table(("dnn", 0.001, 0.96), ("dnn", 0.1, 0.5))})
    assert (findings.diverged, findings.diverged_as_in_study) == ((), False)


def test_the_sweep_comes_from_the_summary_not_from_lr_sweep_column_names():
    garbage = pd.DataFrame({"model": ["dnn"], "lr 0.5": [0.0], "learning rate ten": ["x"]})
    assert compute_findings({"summary": SWEEP, "lr_sweep": garbage}) == compute_findings({"summary": SWEEP})


def test_epochs_against_the_study():
    assert compute_findings({"summary": SWEEP}).epochs_match_study  # the 4-epoch gradient run does not count
    short = compute_findings({"summary": summary_table(("dnn", 0.001, 0.9, "sweep", 1), ("cnn", 0.001, 0.9, "sweep", 2))})
    assert (short.sweep_epochs, short.epochs_match_study) == ((1, 2), False)


def test_with_several_seeds_each_cell_is_the_mean_across_them():
    tables = replicated_tables()
    findings = compute_findings(tables)
    assert findings.several_seeds and findings.seeds == SEEDS
    cell = tables["replicates"].set_index(["model", "learning_rate"]).loc[("dnn", 0.01)]
    dnn = next(row for row in findings.sweep if row.model == "dnn")
    [at_001] = [cell_ for cell_ in dnn.cells if cell_.learning_rate == 0.01]
    assert at_001.accuracy == pytest.approx(np.mean(REPLICATED[("dnn", 0.01)])) == pytest.approx(cell["accuracy_mean"])
    assert (at_001.seeds, at_001.std, at_001.mean_low) == (3, cell["accuracy_std"], cell["accuracy_mean_low"])
    assert at_001.gap == pytest.approx(np.mean(REPLICATED[("dnn", 0.01)]) - 0.932)
    # dnn's best seed reaches 0.98 at 0.01, but its mean there (0.94) is below its mean at 0.001 (0.951).
    assert dnn.best.learning_rate == 0.001
    assert len(findings.runs) == 18 and [run.seed for run in findings.runs[:3]] == list(SEEDS)
