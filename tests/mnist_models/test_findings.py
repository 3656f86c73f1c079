"""Unit tests for mnist_models.findings: the study's findings checked as data on small hand-built tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mnist_models import evaluation
from mnist_models.findings import (
    ClassF1,
    Comparison,
    ConvolutionCheck,
    Findings,
    ModelSize,
    SweepCell,
    compute_findings,
)


def summary_table(*runs: tuple) -> pd.DataFrame:
    """Summary rows from (model, learning_rate, accuracy[, roles[, epochs]]) tuples, every column filled."""
    rows = []
    for model, learning_rate, accuracy, *rest in runs:
        roles = rest[0] if rest else "sweep"
        epochs = rest[1] if len(rest) > 1 else 10
        rows.append({
            "run_id": f"{model}-lr{learning_rate:g}-e{epochs}-{roles}", "model": model, "learning_rate": learning_rate,
            "epochs": epochs, "seed": 0, "accuracy": accuracy, "accuracy_low": accuracy - 0.01,
            "accuracy_high": accuracy + 0.01, "loss": 1 - accuracy, "macro_f1": accuracy, "macro_auc": accuracy,
            "map": accuracy, "parameters": 100, "train_seconds": 1.0,
            "role": "sweep" if "sweep" in roles.split(",") else "gradient", "roles": roles,
        })
    return pd.DataFrame(rows, columns=evaluation.SUMMARY_COLUMNS)


def significance_row(model_a, model_b, only_a, only_b, p_value, accuracy_a=0.9, accuracy_b=0.95, rate=0.001):
    return {"learning_rate": rate, "model_a": model_a, "model_b": model_b, "accuracy_a": accuracy_a,
            "accuracy_b": accuracy_b, "only_a_correct": only_a, "only_b_correct": only_b, "statistic": 1.0,
            "p_value": p_value, "method": "exact", "significant": p_value < 0.05, "verdict": f"{model_a} ? {model_b}"}


def gradient_rows(model: str, norms: dict[str, list[float]]) -> list[dict]:
    return [{"model": model, "epoch": epoch, "layer": layer, "gradient_norm": norm}
            for layer, values in norms.items() for epoch, norm in enumerate(values)]


SWEEP = summary_table(
    ("dnn", 0.01, 0.93), ("dnn", 0.001, 0.96), ("dnn", 0.1, 0.11),
    ("convnet", 0.001, 0.99), ("convnet", 0.0001, 0.985), ("convnet", 0.1, 0.5),
    ("resnet_plain", 0.001, 0.98, "gradient", 4),
)


# --------------------------------------------------------------------------- empty and bad input


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


# --------------------------------------------------------------------------- sweep


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


# --------------------------------------------------------------------------- study tables 2.1 and 5.1


def test_gaps_to_the_study_tables():
    findings = compute_findings({"summary": SWEEP})
    at_reference = {row.model: row for row in findings.accuracy_at_reference}
    assert at_reference["dnn"].study_accuracy == evaluation.STUDY_TABLE_2_1["dnn"]
    assert at_reference["dnn"].gap == pytest.approx(0.96 - 0.959)
    assert at_reference["convnet"].gap == pytest.approx(0.99 - 0.987)
    # Six cells (three per model) are shared with table 5.1; convnet at 0.1 is furthest off (0.5 against 0.114).
    assert findings.shared_study_cells == 6
    largest = findings.largest_study_gap
    assert (largest.model, largest.learning_rate, largest.study_accuracy) == ("convnet", 0.1, 0.114)
    assert largest.gap == pytest.approx(0.5 - 0.114)


def test_best_model_at_the_reference_learning_rate_and_the_study_s_choice():
    best = compute_findings({"summary": SWEEP}).best_model
    assert best.best.model == "convnet" and best.best.accuracy == 0.99
    assert [row.model for row in best.others] == ["dnn"]
    assert (best.study_best_model, best.study_best_accuracy) == ("resnet", 0.991)
    assert best.tied_with == () and best.lead is None  # no significance table


def test_a_model_outside_the_study_is_not_compared_with_its_table_2_1():
    best = compute_findings({"summary": summary_table(("mlp", 0.001, 0.97))}).best_model
    assert (best.best.study_accuracy, best.best.gap, best.study_best_model) == (None, None, None)


# --------------------------------------------------------------------------- runs


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
    assert chosen == evaluation.representative_runs(summary)
    weakest = {result.model: (result.weakest_class, result.strongest_class) for result in findings.representatives}
    assert weakest == {"dnn": (ClassF1(label=1, f1=0.91), ClassF1(label=2, f1=0.99)),
                       "convnet": (ClassF1(label=2, f1=0.95), ClassF1(label=1, f1=0.99))}


def test_no_per_class_table_leaves_the_weakest_class_unknown():
    result = compute_findings({"summary": SWEEP}).representatives[0]
    assert (result.model, result.run.accuracy, result.weakest_class) == ("dnn", 0.96, None)


# --------------------------------------------------------------------------- significance


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


# --------------------------------------------------------------------------- gradient experiment


def test_gradient_ratio_of_the_target_layer_with_over_without_shortcut():
    table = pd.DataFrame(
        gradient_rows("resnet", {"target_layer": [0.006, 0.012], "shortcut": [0.5, 0.5], "dense": [1.0, 3.0]})
        + gradient_rows("resnet_plain", {"target_layer": [0.002, 0.004], "dense": [1.0, 1.0]}))
    gradient = compute_findings({"gradient_norms": table}).gradient
    assert gradient.models == ("resnet_plain", "resnet")  # the plain variant first, whatever the table's order
    assert (gradient.plain_model, gradient.shortcut_model) == ("resnet_plain", "resnet")
    assert (gradient.first_epoch, gradient.last_epoch) == (0, 1)
    assert gradient.target_without == pytest.approx(0.003) and gradient.target_with == pytest.approx(0.009)
    assert gradient.ratio == pytest.approx(3.0) and gradient.effect == "increased"
    layers = {layer.layer: layer for layer in gradient.layers}
    assert list(layers) == ["target_layer", "shortcut", "dense"]
    assert layers["shortcut"].mean_norms == (None, 0.5) and layers["shortcut"].with_over_without is None
    assert layers["dense"].with_over_without == pytest.approx(2.0)


def test_gradient_without_a_pair_or_with_a_zero_gradient_has_no_ratio():
    alone = compute_findings({"gradient_norms": pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.1]}))})
    assert (alone.gradient.plain_model, alone.gradient.ratio, alone.gradient.effect) == (None, None, None)
    zero = pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.1]}) + gradient_rows("resnet_plain", {"target_layer": [0.0]}))
    gradient = compute_findings({"gradient_norms": zero}).gradient
    assert (gradient.target_without, gradient.ratio, gradient.effect) == (0.0, None, None)


def test_a_shortcut_that_lowers_the_gradient():
    table = pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.01]}) + gradient_rows("resnet_plain", {"target_layer": [0.02]}))
    gradient = compute_findings({"gradient_norms": table}).gradient
    assert (gradient.ratio, gradient.effect) == (0.5, "lowered")


# --------------------------------------------------------------------------- models and the record


def test_model_sizes_and_the_convolution_formula():
    summary = pd.DataFrame(
        [("cnn", "conv", "Conv2D", "(None, 26, 26, 4)", 40, "3x3x4x1+4", 40.0),
         ("cnn", "wide", "Conv2D", "(None, 24, 24, 8)", 999, "3x3x8x4+8", 296.0),
         ("cnn", "dense", "Dense", "(None, 10)", 46090, "", np.nan),
         ("cnn", "(total)", "", "", 47129, "", np.nan)],
        columns=["model", "layer", "type", "output_shape", "parameters", "study_formula", "formula_parameters"])
    findings = compute_findings({"model_summary": summary})
    assert findings.model_sizes == (ModelSize(model="cnn", layers=3, parameters=47129),)
    assert [(check.layer, check.agrees) for check in findings.convolutions] == [("conv", True), ("wide", False)]
    assert findings.convolutions[1] == ConvolutionCheck(
        model="cnn", layer="wide", output_shape="(None, 24, 24, 8)", study_formula="3x3x8x4+8",
        formula_parameters=296, keras_parameters=999, agrees=False)


def test_findings_round_trip_through_json_and_are_frozen():
    table = pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.01], "shortcut": [0.2]})
                         + gradient_rows("resnet_plain", {"target_layer": [0.02]}))
    significance = pd.DataFrame([significance_row("dnn", "convnet", 5, 40, 1e-7)])
    findings = compute_findings({"summary": SWEEP, "gradient_norms": table, "significance": significance})
    assert Findings.from_json(findings.to_json()) == findings
    with pytest.raises(ValueError):
        findings.best_model = None
