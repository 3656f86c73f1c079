"""compute_findings as a whole: absent, empty and bad tables, one seed against several, the record's JSON."""

from __future__ import annotations

import pandas as pd
import pytest

from mnist_models.findings import Findings, compute_findings
from tests.mnist_models.findings.tables import SWEEP, gradient_rows, replicated_tables, significance_row, summary_table


def test_absent_or_empty_tables_give_empty_findings():
    empty = {name: pd.DataFrame(columns=["model"]) for name in ("summary", "significance", "gradient_norms")}
    assert compute_findings({}) == Findings()
    assert compute_findings(empty) == Findings()
    assert compute_findings({"summary": summary_table()}).best_model is None


def test_a_summary_without_sweep_runs_names_no_best_model():
    findings = compute_findings({"summary": summary_table(("resnet_plain", 0.001, 0.98, "gradient", 4))})
    assert [run.model for run in findings.runs] == ["resnet_plain"]
    assert (findings.best_model, findings.sweep, findings.representatives, findings.diverged) == (None, (), (), ())


def test_a_table_lacking_a_registry_column_is_an_error():
    with pytest.raises(ValueError, match=r"table 'significance' lacks columns \['verdict'\]"):
        compute_findings({"significance": pd.DataFrame([significance_row("a", "b", 1, 9, 0.01)]).drop(columns="verdict")})


def test_findings_round_trip_through_json_and_are_frozen():
    table = pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.01], "shortcut": [0.2]})
                         + gradient_rows("resnet_plain", {"target_layer": [0.02]}))
    significance = pd.DataFrame([significance_row("dnn", "convnet", 5, 40, 1e-7)])
    findings = compute_findings({"summary": SWEEP, "gradient_norms": table, "significance": significance})
    assert Findings.from_json(findings.to_json()) == findings
    with pytest.raises(ValueError):
        findings.best_model = None


def test_one_seed_gives_the_findings_of_one_run_per_cell():
    one_seed = replicated_tables(seeds=(42,))
    findings = compute_findings(one_seed)
    plain = compute_findings({name: one_seed[name] for name in ("summary", "significance", "gradient_norms")})
    assert findings == plain  # the replicates and seed_comparisons tables change nothing with one seed
    assert (findings.several_seeds, findings.across_seeds, findings.seed_verdicts) == (False, None, ())
    assert (findings.mcnemar_across_seeds, findings.noisy_cells, findings.gradient.per_seed) == ((), (), None)
    resnet = next(row for row in findings.accuracy_at_reference if row.model == "resnet")
    assert (resnet.accuracy, resnet.accuracy_low, resnet.seeds, resnet.accuracy_std) == (0.986, 0.976, 1, None)
    assert findings.best_model.lead is not None and findings.best_model.lead_across_seeds is None


def test_findings_with_several_seeds_round_trip_through_json():
    findings = compute_findings(replicated_tables())
    assert Findings.from_json(findings.to_json()) == findings
