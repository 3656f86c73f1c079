"""Section 4's findings: each model at the reference learning rate beside the study's table 2.1."""

from __future__ import annotations

import pytest

from mnist_models.findings import compute_findings
from mnist_models.study_reference import STUDY_TABLE_2_1
from tests.mnist_models.findings.tables import SWEEP


def test_gaps_to_the_study_tables():
    findings = compute_findings({"summary": SWEEP})
    at_reference = {row.model: row for row in findings.accuracy_at_reference}
    assert at_reference["dnn"].study_accuracy == STUDY_TABLE_2_1["dnn"]
    assert at_reference["dnn"].gap == pytest.approx(0.96 - 0.959)
    assert at_reference["convnet"].gap == pytest.approx(0.99 - 0.987)
    # Six cells (three per model) are shared with table 5.1; convnet at 0.1 is furthest off (0.5 against 0.114).
    assert findings.shared_study_cells == 6
    largest = findings.largest_study_gap
    assert (largest.model, largest.learning_rate, largest.study_accuracy) == ("convnet", 0.1, 0.114)
    assert largest.gap == pytest.approx(0.5 - 0.114)
