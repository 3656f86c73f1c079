"""Section 6's findings: the runs, each model's representative run and its classes, McNemar's tests."""

from __future__ import annotations

import pandas as pd

from mnist_models import table_builders
from mnist_models.findings import compute_findings
from mnist_models.findings.performance import ClassF1, Comparison, SeedTally
from tests.mnist_models.findings.tables import SEEDS, SWEEP, replicated_tables, significance_row, summary_table


def test_runs_are_ordered_sweep_first_by_model_then_largest_learning_rate():
    both = summary_table(("resnet", 0.001, 0.99, "sweep,gradient"), ("resnet_plain", 0.001, 0.98, "gradient"),
                         ("resnet", 0.01, 0.97))
    runs = compute_findings({"summary": both}).runs
    assert [(run.model, run.learning_rate, run.roles) for run in runs] == [
        ("resnet", 0.01, ("sweep",)), ("resnet", 0.001, ("sweep", "gradient")), ("resnet_plain", 0.001, ("gradient",))]


def test_representatives_are_evaluation_s_choice_with_their_weakest_class():
    summary = summary_table(("dnn", 0.001, 0.96), ("dnn", 0.01, 0.97), ("convnet", 0.01, 0.98), ("convnet", 0.1, 0.99))
    per_class = pd.DataFrame([
        {"run_id": run_id, "model": model, "learning_rate": rate, "class": label, "precision": f1, "recall": f1,
         "f1": f1, "roc_auc": 0.99, "average_precision": 0.99, "support": 10}
        for run_id, model, rate, f1s in (
            ("dnn-lr0.001-e10-sweep", "dnn", 0.001, [0.97, 0.91, 0.99]),
            ("dnn-lr0.01-e10-sweep", "dnn", 0.01, [0.10, 0.10, 0.10]),  # not the representative run: ignored
            ("convnet-lr0.1-e10-sweep", "convnet", 0.1, [0.98, 0.99, 0.95]))
        for label, f1 in enumerate(f1s)])
    findings = compute_findings({"summary": summary, "per_class_metrics": per_class})
    chosen = {result.model: result.run.run_id for result in findings.representatives}
    assert chosen == table_builders.representative_runs(summary)
    weakest = {result.model: (result.weakest_class, result.strongest_class) for result in findings.representatives}
    assert weakest == {"dnn": (ClassF1(label=1, f1=0.91), ClassF1(label=2, f1=0.99)),
                       "convnet": (ClassF1(label=2, f1=0.95), ClassF1(label=1, f1=0.99))}


def test_no_per_class_table_leaves_the_weakest_class_unknown():
    result = compute_findings({"summary": SWEEP}).representatives[0]
    assert (result.model, result.run.accuracy, result.weakest_class) == ("dnn", 0.96, None)


def test_significant_pairs_with_their_verdict_p_value_and_who_is_better():
    table = pd.DataFrame([significance_row("dnn", "convnet", 5, 40, 1e-7), significance_row("convnet", "resnet", 12, 9, 0.66)])
    findings = compute_findings({"summary": SWEEP, "significance": table})
    [group] = findings.significance
    assert group.learning_rate == 0.001 and len(group.pairs) == 2
    [significant] = group.significant
    assert (significant.better, significant.worse, significant.p_value) == ("convnet", "dnn", 1e-7)
    assert significant.verdict == "dnn ? convnet" and significant.accuracy_of("convnet") == 0.95
    [plain] = group.not_significant
    assert (plain.better, plain.worse) == (None, None)
    # The best model's lead over the runner-up is that pair's test.
    assert findings.best_model.lead == significant


def test_the_better_of_a_pair_is_the_one_more_images_favour():
    table = pd.DataFrame([significance_row("a", "b", 40, 5, 1e-7, accuracy_a=0.90, accuracy_b=0.95)])
    [comparison] = compute_findings({"significance": table}).significance[0].pairs
    assert isinstance(comparison, Comparison)
    assert (comparison.better, comparison.worse) == ("a", "b")


def test_with_several_seeds_mcnemar_is_per_seed_and_counted_across_them():
    findings = compute_findings(replicated_tables())
    assert [(group.learning_rate, group.seed) for group in findings.significance] == [(0.001, seed) for seed in SEEDS]
    tallies = {(tally.model_a, tally.model_b): tally for tally in findings.mcnemar_across_seeds}
    convnet_dnn = tallies.get(("dnn", "convnet")) or tallies[("convnet", "dnn")]
    assert isinstance(convnet_dnn, SeedTally) and convnet_dnn.seeds == 3
    assert (convnet_dnn.a_better, convnet_dnn.b_better) == ((0, 3) if convnet_dnn.model_a == "dnn" else (3, 0))
    resnet_convnet = tallies.get(("convnet", "resnet")) or tallies[("resnet", "convnet")]
    assert (resnet_convnet.a_better, resnet_convnet.b_better) == (0, 0) and resnet_convnet.p_min > 0.05
