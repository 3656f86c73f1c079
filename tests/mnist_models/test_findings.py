"""Unit tests for mnist_models.findings: the study's findings checked as data on small hand-built tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mnist_models import evaluation, metrics, replicates
from mnist_models.findings import (
    ClassF1,
    Comparison,
    ConvolutionCheck,
    Findings,
    ModelSize,
    SeedTally,
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
            "role": "sweep" if "sweep" in roles.split(",") else "gradient", "roles": roles, "status": "trained",
        })
    return pd.DataFrame(rows, columns=evaluation.SUMMARY_COLUMNS)


def significance_row(model_a, model_b, only_a, only_b, p_value, accuracy_a=0.9, accuracy_b=0.95, rate=0.001, seed=0):
    return {"learning_rate": rate, "seed": seed, "model_a": model_a, "model_b": model_b, "accuracy_a": accuracy_a,
            "accuracy_b": accuracy_b, "only_a_correct": only_a, "only_b_correct": only_b, "statistic": 1.0,
            "p_value": p_value, "method": "exact", "significant": p_value < 0.05, "verdict": f"{model_a} ? {model_b}"}


def gradient_rows(model: str, norms: dict[str, list[float]], seed: int = 0) -> list[dict]:
    return [{"model": model, "seed": seed, "epoch": epoch, "layer": layer, "gradient_norm": norm}
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


# --------------------------------------------------------------------------- several seeds

SEEDS = (42, 43, 44)
IMAGES = 1000
# Accuracy per seed. At 0.001 convnet beats dnn in every seed while resnet and convnet trade places
# (within seed noise); at 0.01 dnn swings by four points, more than any gap of the study's table 5.1.
REPLICATED = {
    ("dnn", 0.01): (0.90, 0.94, 0.98), ("dnn", 0.001): (0.950, 0.955, 0.948),
    ("convnet", 0.01): (0.970, 0.975, 0.980), ("convnet", 0.001): (0.985, 0.990, 0.987),
    ("resnet", 0.01): (0.960, 0.950, 0.970), ("resnet", 0.001): (0.986, 0.989, 0.988),
}


def correct_vector(accuracy: float) -> np.ndarray:
    """IMAGES test images, the first ones wrong: two runs' discordant images are their difference."""
    correct = np.ones(IMAGES, dtype=bool)
    correct[: round((1 - accuracy) * IMAGES)] = False
    return correct


def replicated_tables(seeds: tuple[int, ...] = SEEDS) -> dict[str, pd.DataFrame]:
    """summary, replicates, seed_comparisons, significance and gradient_norms of a sweep trained with `seeds`,
    built by the pipeline's own builders."""
    vectors, rows = {}, []
    for (model, rate), accuracies in REPLICATED.items():
        for seed, accuracy in zip(SEEDS, accuracies):
            if seed in seeds:
                run_id = f"{model}-lr{rate:g}-s{seed}"
                vectors[run_id] = correct_vector(accuracy)
                rows.append({**summary_table((model, rate, accuracy)).iloc[0].to_dict(), "run_id": run_id, "seed": seed})
    summary = pd.DataFrame(rows, columns=evaluation.SUMMARY_COLUMNS)
    significance = []
    for seed in seeds:
        at_reference = summary[(summary["seed"] == seed) & np.isclose(summary["learning_rate"], 0.001)]
        table = metrics.significance_table({model: vectors[run_id] for model, run_id
                                            in zip(at_reference["model"], at_reference["run_id"])})
        significance.append(table.assign(learning_rate=0.001, seed=seed))
    norms = {42: (0.004, 0.011), 43: (0.005, 0.010), 44: (0.006, 0.009)}  # target_layer without, with the shortcut
    gradients = [row for seed in seeds for model, norm in zip(("resnet_plain", "resnet"), norms[seed])
                 for row in gradient_rows(model, {"target_layer": [norm, norm], "dense": [1.0, 1.0]}, seed)]
    return {"summary": summary, "replicates": replicates.replicates_table(summary),
            "seed_comparisons": replicates.seed_comparisons(summary, vectors),
            "significance": pd.concat(significance, ignore_index=True), "gradient_norms": pd.DataFrame(gradients)}


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


def test_with_several_seeds_table_2_1_and_the_best_model_use_the_means():
    tables = replicated_tables()
    findings = compute_findings(tables)
    at_reference = {row.model: row for row in findings.accuracy_at_reference}
    assert list(at_reference) == ["dnn", "convnet", "resnet"]  # one row per model, not per seed
    cell = tables["replicates"].set_index(["model", "learning_rate"]).loc[("resnet", 0.001)]
    resnet = at_reference["resnet"]
    assert (resnet.accuracy, resnet.accuracy_low, resnet.accuracy_high, resnet.accuracy_std, resnet.seeds) == (
        cell["accuracy_mean"], cell["accuracy_mean_low"], cell["accuracy_mean_high"], cell["accuracy_std"], 3)
    assert resnet.gap == pytest.approx(cell["accuracy_mean"] - evaluation.STUDY_TABLE_2_1["resnet"])
    best = findings.best_model
    assert (best.best.model, [row.model for row in best.others]) == ("resnet", ["convnet", "dnn"])
    assert best.lead is None  # three McNemar tests, one per seed: the paired test across seeds decides
    assert {best.lead_across_seeds.better, best.lead_across_seeds.worse} == {"resnet", "convnet"}
    assert best.lead_across_seeds.outcome == "within_noise"


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


def test_with_several_seeds_mcnemar_is_per_seed_and_counted_across_them():
    findings = compute_findings(replicated_tables())
    assert [(group.learning_rate, group.seed) for group in findings.significance] == [(0.001, seed) for seed in SEEDS]
    tallies = {(tally.model_a, tally.model_b): tally for tally in findings.mcnemar_across_seeds}
    convnet_dnn = tallies.get(("dnn", "convnet")) or tallies[("convnet", "dnn")]
    assert isinstance(convnet_dnn, SeedTally) and convnet_dnn.seeds == 3
    assert (convnet_dnn.a_better, convnet_dnn.b_better) == ((0, 3) if convnet_dnn.model_a == "dnn" else (3, 0))
    resnet_convnet = tallies.get(("convnet", "resnet")) or tallies[("resnet", "convnet")]
    assert (resnet_convnet.a_better, resnet_convnet.b_better) == (0, 0) and resnet_convnet.p_min > 0.05


def test_with_several_seeds_the_gradient_ratio_is_given_per_seed():
    gradient = compute_findings(replicated_tables()).gradient
    assert gradient.seeds == 3
    assert gradient.target_without == pytest.approx(0.005) and gradient.ratio == pytest.approx(0.010 / 0.005)
    per_seed = gradient.per_seed
    assert per_seed.seeds == SEEDS and per_seed.ratios == pytest.approx((2.75, 2.0, 1.5))
    assert (per_seed.lowest, per_seed.highest, per_seed.increased) == (pytest.approx(1.5), pytest.approx(2.75), 3)


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


# --------------------------------------------------------------------------- nightly gate


def history_table() -> pd.DataFrame:
    """Two nights of three models; the second night gated: a promotion, a drop within noise, a regression."""
    rows = []
    for date, night in (("2024-05-01", 0), ("2024-05-02", 1)):
        for model, accuracy, decision, champion, p_value in (
            ("dnn", (0.955, 0.960), ("first champion", "promoted"), (np.nan, 0.955), (np.nan, 0.03)),
            ("convnet", (0.990, 0.987), ("first champion", "kept (drop within noise)"), (np.nan, 0.990), (np.nan, 0.21)),
            ("resnet", (0.991, 0.980), ("first champion", "regressed"), (np.nan, 0.991), (np.nan, 1e-6)),
        ):
            rows.append({"date": date, "flow_run_id": f"flow-{night}", "model": model, "learning_rate": 0.001,
                         "epochs": 10, "seed": 20240501 + night, "accuracy": accuracy[night],
                         "accuracy_low": accuracy[night] - 0.002, "accuracy_high": accuracy[night] + 0.002,
                         "map": accuracy[night], "run_id": f"{model}-{night}", "decision": decision[night],
                         "champion_accuracy": champion[night], "p_value": p_value[night],
                         "history_mean": np.nan if night == 0 else accuracy[0], "history_std": np.nan,
                         "message": f"{model}: {decision[night]}", "nights": night, "interval_low": np.nan,
                         "champion_bound": np.nan, "champion_version": 1 if night else None, "rule": None})
    return pd.DataFrame(rows)


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


def test_the_cache_decisions_of_the_rendering_run_are_summarised():
    decisions = pd.DataFrame({"stage": ["train", "train", "report"], "item": ["a", "b", "study"],
                              "action": ["reused", "recomputed", "recomputed"],
                              "reason": ["unchanged", "code changed (mnist_models/architectures/dnn.py)", "new"]})
    cache = compute_findings({"cache_decisions": decisions}).cache
    assert cache.reused == 1
    assert [(entry.stage, entry.item, entry.reason) for entry in cache.recomputed] == [
        ("train", "b", "code changed (mnist_models/architectures/dnn.py)"), ("report", "study", "new")]
    assert compute_findings({}).cache is None
