"""The findings across seeds: which differences hold and which are seed noise."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_models import replicates
from mnist_models.findings import compute_findings
from tests.mnist_models.findings.tables import REPLICATED, replicated_tables


def test_across_seeds_says_which_differences_hold_and_which_are_noise():
    tables = replicated_tables()
    findings = compute_findings(tables)
    assert findings.across_seeds == replicates.conclusions_across_seeds(tables["replicates"], tables["seed_comparisons"])
    verdicts = {group.learning_rate: group for group in findings.seed_verdicts}
    assert list(verdicts) == [0.01, 0.001] and verdicts[0.001].at_reference and not verdicts[0.01].at_reference
    reference = verdicts[0.001]
    assert {(claim.better, claim.worse) for claim in reference.holds} == {("convnet", "dnn"), ("resnet", "dnn")}
    [noise] = reference.within_noise
    assert (noise.better, noise.worse, noise.from_study) == ("convnet", "resnet", True)  # the study ranks convnet first
    assert noise.p_value > 0.05 and reference.reversed == reference.too_few_seeds == ()
    holds = next(claim for claim in reference.holds if claim.worse == "dnn" and claim.better == "convnet")
    assert holds.difference == pytest.approx(np.mean(np.subtract(REPLICATED[("convnet", 0.001)],
                                                                 REPLICATED[("dnn", 0.001)])))
    assert holds.p_value < 0.05 and holds.difference_low > 0
    # convnet vs dnn at 0.01 is within seed noise: dnn's swing hides a three-and-a-half-point mean gap.
    assert ("convnet", "dnn") in {(claim.better, claim.worse) for claim in verdicts[0.01].within_noise}
    noisy = {(cell.model, cell.learning_rate) for cell in findings.noisy_cells}
    assert ("dnn", 0.01) in noisy and ("convnet", 0.01) not in noisy  # convnet: std 0.005, nearest gap 0.015
