"""Unit tests for mnist_models.report on small synthetic tables shaped like the pipeline's."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from mnist_models import metrics, outputs, replicates, table_builders
from mnist_models.report import (ReportContext, build_report_html, build_report_markdown, inline_markdown_images,
                                 write_report)
from mnist_models.study_reference import STUDY_TABLE_2_1

MODELS = ("dnn", "convnet", "resnet")
LEARNING_RATES = (0.1, 0.01, 0.001, 0.0001)
TEST_IMAGES = 10_000
# Wrong test images per model at LR 0.001, chosen so that convnet vs resnet is *not* significant
# (30 vs 43 discordant images) while dnn differs significantly from both.
WRONG_AT_REFERENCE = {"dnn": range(50, 462), "convnet": range(30, 130), "resnet": range(0, 87)}
SWEEP = {  # accuracy per model and learning rate; LR 0.1 diverges for every model
    "dnn": {0.1: 0.1135, 0.01: 0.9341, 0.001: 0.9588, 0.0001: 0.9377},
    "convnet": {0.1: 0.1135, 0.01: 0.9802, 0.001: 0.9900, 0.0001: 0.9874},
    "resnet": {0.1: 0.0980, 0.01: 0.9633, 0.001: 0.9913, 0.0001: 0.9896},
}
GRADIENT_LAYERS = {
    "resnet_plain": ["target_layer", "conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "dense", "dense_1"],
    "resnet": ["target_layer", "shortcut", "conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "dense", "dense_1"],
}
FIGURE_NAMES = (
    "first_25_images", "kernel_histograms", "gradient_norms", "accuracy_curves", "lr_sweep_heatmap",
    *(f"{kind}_{model}" for model in MODELS for kind in ("roc", "f1", "confusion")),
)
SECTION_HEADINGS = (
    "## 1. Data",
    "## 2. Models",
    "## 3. Gradient vanishing",
    "## 4. Accuracy",
    "## 5. Model selection",
    "## 6. Performance",
    "## 7. Conclusion",
    "## How this report was made",
)
SETTINGS = {
    "profile": "full", "dataset": "mnist", "models": ["dnn", "convnet", "resnet"],
    "learning_rates": list(LEARNING_RATES), "epochs": 10, "batch_size": 32, "train_subset": None,
    "gradient_models": ["resnet_plain", "resnet"], "gradient_epochs": 4, "seed": 42,
}


# --------------------------------------------------------------------------- synthetic run


def correct_vectors() -> dict[str, np.ndarray]:
    """Per model, which of the test images it gets right at LR 0.001."""
    vectors = {}
    for model, wrong in WRONG_AT_REFERENCE.items():
        correct = np.ones(TEST_IMAGES, dtype=bool)
        correct[list(wrong)] = False
        vectors[model] = correct
    return vectors


def _model_summary() -> pd.DataFrame:
    def conv(model, layer, shape, kernel, filters, channels):
        formula = kernel * kernel * filters * channels + filters
        study_formula = f"{kernel}x{kernel}x{filters}x{channels}+{filters}"
        return (model, layer, "Conv2D", shape, formula, study_formula, float(formula))

    def other(model, layer, kind, shape, parameters):
        return (model, layer, kind, shape, parameters, "", np.nan)

    rows = [
        other("dnn", "flatten", "Flatten", "(None, 784)", 0),
        other("dnn", "dense", "Dense", "(None, 16)", 12560),
        other("dnn", "dense_1", "Dense", "(None, 32)", 544),
        other("dnn", "dense_2", "Dense", "(None, 64)", 2112),
        other("dnn", "dense_3", "Dense", "(None, 10)", 650),
        conv("convnet", "conv2d", "(None, 26, 26, 32)", 3, 32, 1),
        other("convnet", "max_pooling2d", "MaxPooling2D", "(None, 13, 13, 32)", 0),
        conv("convnet", "conv2d_1", "(None, 11, 11, 64)", 3, 64, 32),
        other("convnet", "max_pooling2d_1", "MaxPooling2D", "(None, 5, 5, 64)", 0),
        conv("convnet", "conv2d_2", "(None, 3, 3, 64)", 3, 64, 64),
        other("convnet", "flatten", "Flatten", "(None, 576)", 0),
        other("convnet", "dense", "Dense", "(None, 64)", 36928),
        other("convnet", "dense_1", "Dense", "(None, 10)", 650),
        conv("resnet", "target_layer", "(None, 28, 28, 32)", 3, 32, 1),
        other("resnet", "max_pooling2d", "MaxPooling2D", "(None, 14, 14, 32)", 0),
        conv("resnet", "conv2d", "(None, 14, 14, 64)", 3, 64, 32),
        conv("resnet", "shortcut", "(None, 4, 4, 128)", 1, 128, 32),
        other("resnet", "add", "Add", "(None, 4, 4, 128)", 0),
        other("resnet", "dense", "Dense", "(None, 10)", 1290),
    ]
    table = pd.DataFrame(
        rows, columns=["model", "layer", "type", "output_shape", "parameters", "study_formula", "formula_parameters"]
    )
    totals = table.groupby("model", sort=False)["parameters"].sum()
    total_rows = pd.DataFrame(
        [(model, "(total)", "", "", int(total), "", np.nan) for model, total in totals.items()],
        columns=table.columns,
    )
    return pd.concat([table, total_rows], ignore_index=True)


def _gradient_norms(target_plain: float = 0.004, target_residual: float = 0.011, epochs: int = 4) -> pd.DataFrame:
    rows = []
    for model, layers in GRADIENT_LAYERS.items():
        for epoch in range(epochs + 1):
            for depth, layer in enumerate(layers):
                if layer == "target_layer":
                    norm = (target_residual if model == "resnet" else target_plain) * (1 + 0.1 * epoch)
                else:
                    norm = 0.02 * (depth + 1) * (1 + 0.05 * epoch)
                rows.append({"model": model, "seed": 42, "layer": layer, "epoch": epoch, "gradient_norm": norm})
    return pd.DataFrame(rows)


def synthetic_tables() -> dict[str, pd.DataFrame]:
    """Every table the report reads, for dnn/convnet/resnet over four learning rates plus the gradient experiment."""
    rng = np.random.default_rng(7)
    vectors = correct_vectors()
    sweep = {model: dict(rates) for model, rates in SWEEP.items()}
    for model, correct in vectors.items():
        sweep[model][0.001] = float(correct.mean())

    summary_rows = []
    for model in MODELS:
        for rate in LEARNING_RATES:
            accuracy = sweep[model][rate]
            summary_rows.append({
                "run_id": f"{model}-lr{rate:g}-e10-s42-abc123", "model": model, "learning_rate": rate,
                "epochs": 10, "seed": 42, "accuracy": accuracy,
                "accuracy_low": accuracy - 0.0019, "accuracy_high": accuracy + 0.0018,
                "loss": 2.301 if accuracy < 0.2 else 0.05 + (1 - accuracy),
                "macro_f1": accuracy - 0.0004, "macro_auc": min(0.9999, 0.5 + accuracy / 2), "map": accuracy - 0.001,
                "parameters": 15866, "train_seconds": 61.5, "role": "sweep", "roles": "sweep",
            })
    for model in GRADIENT_LAYERS:
        summary_rows.append({
            "run_id": f"{model}-lr0.001-e4-s42-def456", "model": model, "learning_rate": 0.001, "epochs": 4,
            "seed": 42, "accuracy": 0.9871, "accuracy_low": 0.9848, "accuracy_high": 0.9892, "loss": 0.041,
            "macro_f1": 0.9869, "macro_auc": 0.9998, "map": 0.9981, "parameters": 264906, "train_seconds": 80.2,
            "role": "gradient", "roles": "gradient",
        })
    summary = pd.DataFrame(summary_rows).assign(status="trained")

    per_class_rows = []
    for run in summary.itertuples():
        f1 = np.clip(run.accuracy + rng.normal(0, 0.004, size=10), 0, 1)
        for digit in range(10):
            per_class_rows.append({
                "run_id": run.run_id, "model": run.model, "learning_rate": run.learning_rate, "class": digit,
                "precision": f1[digit], "recall": f1[digit], "f1": f1[digit], "roc_auc": 0.999,
                "average_precision": 0.99, "support": 1000,
            })

    at_reference = summary[(summary["role"] == "sweep") & np.isclose(summary["learning_rate"], 0.001)]
    accuracy_at_lr = at_reference[
        ["model", "learning_rate", "epochs", "accuracy", "accuracy_low", "accuracy_high"]
    ].reset_index(drop=True)
    accuracy_at_lr["study_accuracy"] = [STUDY_TABLE_2_1[model] for model in accuracy_at_lr["model"]]

    lr_sweep = pd.DataFrame(
        [{"model": model, **{f"lr {rate:g}": sweep[model][rate] for rate in LEARNING_RATES}} for model in MODELS]
    )
    significance = metrics.significance_table(vectors)
    significance.insert(0, "seed", 42)
    significance.insert(0, "learning_rate", 0.001)

    dataset_facts = pd.DataFrame(
        [
            ("images", "60,000", "10,000", "70,000"),
            ("image shape", "28x28x1", "28x28x1", "28x28x1"),
            ("pixel range after normalization", "[0, 1]", "[0, 1]", "[0, 1]"),
            ("classes", "10", "10", "10"),
        ],
        columns=["fact", "train", "test", "total"],
    )
    return {
        "dataset_facts": dataset_facts,
        "model_summary": _model_summary(),
        "accuracy_at_lr": accuracy_at_lr,
        "lr_sweep": lr_sweep,
        "summary": summary,
        "per_class_metrics": pd.DataFrame(per_class_rows),
        "significance": significance,
        "gradient_norms": _gradient_norms(),
    }


SEEDS = (42, 43, 44)
# Wrong test images at LR 0.001 per seed (dnn, convnet, resnet): convnet and resnet beat dnn in every seed,
# while resnet vs convnet changes sign from seed to seed (within seed noise).
WRONG_BY_SEED = {42: (412, 100, 87), 43: (400, 80, 98), 44: (420, 95, 88)}
# Accuracy offsets per seed at the other learning rates; resnet at 0.0001 swings by 0.4 points, more than the
# study's 0.2-point gap to convnet there.
OFFSETS = {42: 0.0, 43: 0.0008, 44: -0.0005}
SWINGING_CELL, SWING = ("resnet", 0.0001), {42: 0.0, 43: 0.004, 44: -0.004}
SEED_FIGURE_NAMES = ("lr_sweep_seeds", "gradient_norms_seeds")


def _seed_correct(model: str, rate: float, seed: int) -> np.ndarray:
    """Which test images a run gets right: at LR 0.001 WRONG_BY_SEED, elsewhere SWEEP moved by the seed."""
    if rate == 0.001:
        wrong = WRONG_BY_SEED[seed][MODELS.index(model)]
    else:
        swing = SWING[seed] if (model, rate) == SWINGING_CELL else OFFSETS[seed] * (1 + MODELS.index(model))
        wrong = round((1 - SWEEP[model][rate] - swing) * TEST_IMAGES)
    correct = np.ones(TEST_IMAGES, dtype=bool)
    correct[:wrong] = False
    return correct


def replicated_tables() -> dict[str, pd.DataFrame]:
    """synthetic_tables() with the sweep and the gradient experiment trained with SEEDS, and the tables that adds."""
    tables = synthetic_tables()
    sweep = table_builders.sweep_runs(tables["summary"])
    runs, vectors = [], {}
    for seed in SEEDS:
        for row in sweep.to_dict(orient="records"):
            run_id = row["run_id"].replace("-s42-", f"-s{seed}-")
            vectors[run_id] = _seed_correct(row["model"], row["learning_rate"], seed)
            accuracy = float(vectors[run_id].mean())
            runs.append({**row, "run_id": run_id, "seed": seed, "accuracy": accuracy, "accuracy_low": accuracy - 0.0019,
                         "accuracy_high": accuracy + 0.0018})
    gradient_runs = tables["summary"][tables["summary"]["role"] == "gradient"]
    summary = pd.concat([pd.DataFrame(runs), *(gradient_runs.assign(seed=seed, run_id=gradient_runs["run_id"] + str(seed))
                                                 for seed in SEEDS)], ignore_index=True)
    significance = []
    for seed in SEEDS:
        table = metrics.significance_table({model: _seed_correct(model, 0.001, seed) for model in MODELS})
        significance.append(table.assign(learning_rate=0.001, seed=seed))
    per_class = tables["per_class_metrics"]
    per_class = pd.concat([per_class.assign(run_id=per_class["run_id"].str.replace("-s42-", f"-s{seed}-"))
                           for seed in SEEDS], ignore_index=True)
    gradients = pd.concat([_gradient_norms(0.004 + 0.001 * index, 0.011 - 0.001 * index).assign(seed=seed)
                           for index, seed in enumerate(SEEDS)], ignore_index=True)
    table_replicates = replicates.replicates_table(summary)
    return {**tables, "summary": summary, "per_class_metrics": per_class, "gradient_norms": gradients,
            "significance": pd.concat(significance, ignore_index=True), "replicates": table_replicates,
            "seed_comparisons": replicates.seed_comparisons(summary, vectors),
            "accuracy_at_lr": replicates.across_seed_columns(table_builders.accuracy_at_lr_table(summary),
                                                             table_replicates),
            "lr_sweep": replicates.across_seed_sweep(table_builders.lr_sweep_table(summary), table_replicates)}


def history_table() -> pd.DataFrame:
    """Two nights of the nightly history; on the second, dnn is promoted, convnet kept within noise, resnet regressed."""
    rows = []
    for night, date in enumerate(("2024-05-01", "2024-05-02")):
        for model, accuracies, decisions, champion, p_value in (
            ("dnn", (0.9551, 0.9602), ("first champion", "promoted"), 0.9551, 0.012),
            ("convnet", (0.9902, 0.9871), ("first champion", "kept (drop within noise)"), 0.9902, 0.21),
            ("resnet", (0.9913, 0.9802), ("first champion", "regressed"), 0.9913, 3e-7),
        ):
            accuracy, decision = accuracies[night], decisions[night]
            rows.append({
                "date": date, "flow_run_id": f"flow-{night}", "model": model, "learning_rate": 0.001, "epochs": 10,
                "seed": 20240501 + night, "accuracy": accuracy, "accuracy_low": accuracy - 0.002,
                "accuracy_high": accuracy + 0.002, "map": accuracy, "run_id": f"{model}-night{night}",
                "decision": decision, "champion_accuracy": champion if night else np.nan,
                "p_value": p_value if night else np.nan, "history_mean": accuracies[0] if night else np.nan,
                "history_std": np.nan, "message": f"{model}: {decision}, accuracy {accuracy:.4f}", "nights": night, "interval_low": np.nan,
                         "champion_bound": np.nan, "champion_version": 1 if night else None, "rule": None})
    return pd.DataFrame(rows)


def write_placeholder_figures(directory: Path, names: tuple[str, ...] = FIGURE_NAMES) -> dict[str, Path]:
    """A small real PNG for every figure name, so links and inlining have files to point at."""
    directory.mkdir(parents=True, exist_ok=True)
    figures = {}
    for index, name in enumerate(names):
        path = directory / f"{name}.png"
        Image.new("RGB", (40, 30), (index * 12 % 256, 90, 160)).save(path)
        figures[name] = path
    return figures


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    return synthetic_tables()


@pytest.fixture
def figures(tmp_path) -> dict[str, Path]:
    return write_placeholder_figures(tmp_path / "figures")


@pytest.fixture
def report_dir(tmp_path) -> Path:
    return tmp_path / "report"


def _context(tables, figures, settings=None) -> ReportContext:
    return ReportContext(tables=tables, figures=figures, settings=SETTINGS if settings is None else settings,
                         generated_at="2024-05-01 12:00 UTC")


def _section(markdown_text: str, heading: str) -> str:
    start = markdown_text.index(heading)
    following = markdown_text.find("\n## ", start + len(heading))
    return markdown_text[start: following if following >= 0 else None]


def _image_links(markdown_text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown_text)


# --------------------------------------------------------------------------- structure


def test_every_section_heading_is_present_in_order(tables, figures, report_dir):
    text = build_report_markdown(_context(tables, figures), report_dir)
    positions = [text.index(heading + "\n") for heading in SECTION_HEADINGS]
    assert positions == sorted(positions)
    assert text.startswith("# ")


def test_every_figure_is_shown_once(tables, figures, report_dir):
    text = build_report_markdown(_context(tables, figures), report_dir)
    linked = sorted(Path(unquote(link)).stem for link in _image_links(text))
    assert linked == sorted(FIGURE_NAMES)


def test_study_reference_values_stand_beside_the_runs(tables, figures, report_dir):
    text = build_report_markdown(_context(tables, figures), report_dir)
    accuracy = _section(text, "## 4. Accuracy")
    assert "| resnet | 0.001 | 10 | 0.9913 | 0.9894–0.9931 | 0.991 | +0.0003 |" in accuracy
    selection = _section(text, "## 5. Model selection")
    assert "| convnet | this run | 0.1135 | 0.9802 | 0.9900 | 0.9874 |" in selection
    assert "| convnet | study (table 5.1) | 0.114 | 0.978 | 0.991 | 0.988 |" in selection


def test_models_section_condenses_model_summary(tables, figures, report_dir):
    models = _section(build_report_markdown(_context(tables, figures), report_dir), "## 2. Models")
    assert "| dnn | 5 | 15,866 |" in models  # five layers; the (total) row is not counted as a layer
    assert "| convnet | conv2d_1 | (None, 11, 11, 64) | 3x3x64x32+64 | 18,496 | 18,496 | yes |" in models
    assert "all 6 convolution layers" in models


def test_models_section_flags_a_formula_that_disagrees_with_keras(tables, figures, report_dir):
    summary = tables["model_summary"].copy()
    summary.loc[summary["layer"] == "shortcut", "parameters"] = 4000
    tables["model_summary"] = summary
    models = _section(build_report_markdown(_context(tables, figures), report_dir), "## 2. Models")
    assert "| **no** |" in models
    assert "disagrees with Keras for resnet shortcut" in models


def test_gradient_section_tabulates_mean_norms_in_network_order(tables, figures, report_dir):
    gradient = _section(build_report_markdown(_context(tables, figures), report_dir), "## 3. Gradient vanishing")
    rows = [line.split(" | ")[0].strip("| ") for line in gradient.splitlines() if line.startswith("| ")]
    assert rows[1:] == GRADIENT_LAYERS["resnet"][:1] + GRADIENT_LAYERS["resnet_plain"][1:] + ["shortcut"]
    assert "| target_layer | 0.0048 | 0.0132 | 2.75 |" in gradient


def test_performance_section_describes_each_model_and_the_mcnemar_table(tables, figures, report_dir):
    performance = _section(build_report_markdown(_context(tables, figures), report_dir), "## 6. Performance")
    for index, model in enumerate(MODELS, start=1):
        assert f"### 6.{index} {model}" in performance
    assert "macro F1 0.9909" in performance  # resnet at LR 0.001: accuracy 0.9913 - 0.0004
    assert "| 0.001 | dnn | resnet | 0.9588 | 0.9913 | 50 | 375 | 1.2e-55 | yes, resnet better |" in performance
    assert "| 0.001 | convnet | resnet | 0.9900 | 0.9913 | 30 | 43 | 0.16 | no |" in performance


# --------------------------------------------------------------------------- conclusion


def test_conclusion_names_the_best_model_with_its_interval(tables, figures, report_dir):
    conclusion = _section(build_report_markdown(_context(tables, figures), report_dir), "## 7. Conclusion")
    best = tables["accuracy_at_lr"].set_index("model").loc["resnet"]
    assert f"**resnet** with test accuracy {best['accuracy']:.4f}" in conclusion
    assert f"(95% interval {best['accuracy_low']:.4f}–{best['accuracy_high']:.4f})" in conclusion
    assert "ahead of convnet (0.9900) and dnn (0.9588)" in conclusion
    assert "lead over convnet is not statistically significant" in conclusion


def test_conclusion_lists_the_diverged_learning_rate(tables, figures, report_dir):
    conclusion = _section(build_report_markdown(_context(tables, figures), report_dir), "## 7. Conclusion")
    assert "Learning rate 0.1 diverged for every model (dnn 0.1135, convnet 0.1135 and resnet 0.0980)" in conclusion
    assert "0.01 diverged" not in conclusion


def test_conclusion_states_significant_and_non_significant_pairs(tables, figures, report_dir):
    conclusion = _section(build_report_markdown(_context(tables, figures), report_dir), "## 7. Conclusion")
    significance = next(line for line in conclusion.splitlines() if line.startswith("- **Significance.**"))
    assert "finds 2 of 3 pairwise difference(s) significant" in significance
    assert "convnet is significantly more accurate than dnn" in significance
    assert "resnet is significantly more accurate than dnn" in significance
    not_significant = significance.split("not significant:")[1]
    assert "convnet vs resnet (0.9900 vs 0.9913" in not_significant
    assert "convnet is significantly" not in not_significant


def test_conclusion_reports_the_gradient_ratio(tables, figures, report_dir):
    conclusion = _section(build_report_markdown(_context(tables, figures), report_dir), "## 7. Conclusion")
    gradients = tables["gradient_norms"]
    target = gradients[gradients["layer"] == "target_layer"].groupby("model")["gradient_norm"].mean()
    ratio = target["resnet"] / target["resnet_plain"]
    assert f"the norm with the shortcut is {ratio:.2f} times the norm without it" in conclusion
    assert "over 5 epochs, which are not independent" in conclusion
    assert "the shortcut significantly increased the gradient" in conclusion


def test_changing_the_numbers_changes_the_conclusion(tables, figures, report_dir):
    before = _section(build_report_markdown(_context(tables, figures), report_dir), "## 7. Conclusion")

    # The report reads every accuracy from the long-form summary, the one table the others derive from.
    summary = tables["summary"].copy()
    dnn_reference = (summary["model"] == "dnn") & (summary["role"] == "sweep") & np.isclose(summary["learning_rate"], 0.001)
    summary.loc[dnn_reference, ["accuracy", "accuracy_low", "accuracy_high"]] = [0.99517, 0.9937, 0.9965]
    summary.loc[np.isclose(summary["learning_rate"], 0.1), "accuracy"] = [0.8812, 0.9105, 0.9033]
    tables.update(
        summary=summary,
        significance=tables["significance"].assign(significant=False),
        gradient_norms=_gradient_norms(target_plain=0.02, target_residual=0.01),
    )
    after = _section(build_report_markdown(_context(tables, figures), report_dir), "## 7. Conclusion")

    assert after != before
    assert "**dnn** with test accuracy 0.9952 (95% interval 0.9937–0.9965)" in after
    assert "**resnet** with test accuracy" not in after
    assert "The study's table 2.1 ranked resnet first (0.991)." in after
    assert "No learning rate diverged" in after and "diverged for every model" not in after
    assert "finds 0 of 3 pairwise difference(s) significant" in after
    assert "Its lead over resnet is not statistically significant" in after
    assert "is 0.50 times the norm without it" in after
    assert "the shortcut did not increase the gradient reaching the first layer; it significantly lowered it" in after


def test_scale_caveat_appears_only_when_the_run_trained_less_than_the_study(tables, figures, report_dir):
    full = build_report_markdown(_context(tables, figures), report_dir)
    assert "whereas the study trained" not in full
    quick = build_report_markdown(_context(tables, figures, {**SETTINGS, "train_subset": 2000}), report_dir)
    assert "This run trained for a 2,000-image training subset, whereas the study trained" in quick
    tables["summary"] = tables["summary"].assign(epochs=np.where(tables["summary"]["model"] == "dnn", 1, 2))
    short = build_report_markdown(_context(tables, figures, {**SETTINGS, "train_subset": 2000}), report_dir)
    assert "This run trained for 1 or 2 epochs on a 2,000-image training subset, whereas the study trained" in short
    assert _section(short, "## 7. Conclusion").count("whereas the study trained") == 1


# --------------------------------------------------------------------------- graceful degradation


def test_missing_figure_becomes_a_sentence_not_a_broken_link(tables, figures, report_dir):
    absent = {name: path for name, path in figures.items() if name != "gradient_norms"}
    figures["roc_dnn"].unlink()
    text = build_report_markdown(_context(tables, absent), report_dir)
    assert "Figure 3.2 (Gradient norm per layer and epoch, without and with the shortcut) is not shown" in text
    assert "its file `roc_dnn.png` is missing" in text
    assert all("gradient_norms" not in link and "roc_dnn" not in link for link in _image_links(text))
    build_report_html(text, report_dir, "title")  # every remaining link still resolves


def test_one_model_run_degrades_with_sentences(tables, figures, report_dir):
    only_dnn = {
        "dataset_facts": tables["dataset_facts"],
        "model_summary": tables["model_summary"][tables["model_summary"]["model"] == "dnn"],
        "accuracy_at_lr": tables["accuracy_at_lr"][tables["accuracy_at_lr"]["model"] == "dnn"],
        "lr_sweep": tables["lr_sweep"][tables["lr_sweep"]["model"] == "dnn"],
        "summary": tables["summary"][tables["summary"]["model"] == "dnn"],
        "per_class_metrics": tables["per_class_metrics"][tables["per_class_metrics"]["model"] == "dnn"],
        "significance": tables["significance"].iloc[0:0],
        "gradient_norms": pd.DataFrame(columns=["model", "epoch", "layer", "gradient_norm"]),
    }
    text = build_report_markdown(_context(only_dnn, {}), report_dir)
    for heading in SECTION_HEADINGS:
        assert heading in text
    assert "None of these models has a convolution layer" in text
    assert "No pair of models was compared" in text
    assert "this run has no gradient table" in text.lower()
    assert "**dnn** with test accuracy 0.9588" in text and "it is the only model of this run" in text
    assert _image_links(text) == []


def test_tables_absent_altogether_still_give_a_report(report_dir):
    text = build_report_markdown(_context({}, {}, {}), report_dir)
    for heading in SECTION_HEADINGS:
        assert heading in text
    assert "no best model is named" in text
    assert "The run recorded no settings." in text


def test_a_run_serving_the_sweep_and_the_gradient_experiment_counts_in_the_sweep(tables, figures, report_dir):
    summary = tables["summary"]
    summary = summary[summary["run_id"] != "resnet-lr0.001-e4-s42-def456"]  # the sweep run serves both
    both = summary["run_id"] == "resnet-lr0.001-e10-s42-abc123"
    tables["summary"] = summary.assign(roles=np.where(both, "sweep,gradient", summary["roles"]))
    text = build_report_markdown(_context(tables, figures), report_dir)
    performance = _section(text, "## 6. Performance")
    assert "| resnet | sweep, gradient | 0.001 | 10 | 0.9913 |" in performance
    assert "| resnet | gradient |" not in performance
    assert "| resnet | this run | 0.0980 | 0.9633 | 0.9913 | 0.9896 |" in _section(text, "## 5. Model selection")
    assert "the most accurate model is **resnet** with test accuracy 0.9913" in text


def test_report_ignores_the_wide_tables_and_reads_the_summary(tables, figures, report_dir):
    before = build_report_markdown(_context(tables, figures), report_dir)
    tables["lr_sweep"] = tables["lr_sweep"].rename(columns={"lr 0.1": "lr 0.5"}).assign(**{"lr 0.5": 0.0})
    tables["accuracy_at_lr"] = tables["accuracy_at_lr"].assign(accuracy=0.5)
    assert build_report_markdown(_context(tables, figures), report_dir) == before


def test_method_section_lists_the_registry_tables_the_run_provided(tables, figures, report_dir):
    method = _section(build_report_markdown(_context(tables, figures), report_dir), "## How this report was made")
    listed = re.findall(r"^\| `(\w+)` \| (.+) \|$", method, flags=re.MULTILINE)
    assert [name for name, _ in listed] == [name for name in outputs.TABLES if name in tables]
    assert dict(listed)["significance"] == outputs.TABLES["significance"].description


def test_table_missing_a_column_raises_a_clear_error(tables, figures, report_dir):
    tables["summary"] = tables["summary"].drop(columns=["macro_f1"])
    with pytest.raises(ValueError, match=r"table 'summary' lacks columns \['macro_f1'\]"):
        build_report_markdown(_context(tables, figures), report_dir)


def test_context_rejects_a_figure_that_is_not_a_path(tables):
    with pytest.raises(ValueError, match="figure 'roc_dnn' must be a path"):
        ReportContext(tables=tables, figures={"roc_dnn": 3}, settings={}, generated_at="now")


# --------------------------------------------------------------------------- links, HTML, writing


def test_image_links_are_relative_and_point_to_existing_files(tables, figures, report_dir):
    text = build_report_markdown(_context(tables, figures), report_dir)
    links = _image_links(text)
    assert len(links) == len(FIGURE_NAMES)
    for link in links:
        assert not urlsplit(link).scheme and not Path(unquote(link)).is_absolute(), link
        assert link.startswith("../figures/"), link
        assert (report_dir / unquote(link)).resolve().is_file(), link


def test_links_survive_spaces_in_folder_names(tables, tmp_path):
    figures = write_placeholder_figures(tmp_path / "my figures")
    report_dir = tmp_path / "my report"
    text = build_report_markdown(_context(tables, figures), report_dir)
    assert "../my%20figures/first_25_images.png" in _image_links(text)
    html_text = build_report_html(text, report_dir, "t")
    assert html_text.count('src="data:image/png;base64,') == len(FIGURE_NAMES)


def test_html_inlines_every_image_and_loads_nothing_external(tables, figures, report_dir):
    text = build_report_markdown(_context(tables, figures), report_dir)
    html_text = build_report_html(text, report_dir, "MNIST <study>")
    sources = re.findall(r'\bsrc="([^"]*)"', html_text)
    assert len(sources) == len(FIGURE_NAMES)
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert not re.search(r'src="(?!data:)', html_text)
    assert not re.search(r"(?:href|src)=\"(?:https?:)?//", html_text)
    assert "<script" not in html_text
    first = base64.b64decode(sources[0].split(",", 1)[1])
    assert first == figures["first_25_images"].read_bytes()
    assert "<title>MNIST &lt;study&gt;</title>" in html_text
    assert "<figcaption>Figure 1.1: First 25 normalized images of the training set.</figcaption>" in html_text
    assert html_text.count("<table>") >= 8 and "max-width" in html_text


def test_html_refuses_remote_and_missing_images(report_dir):
    with pytest.raises(ValueError, match="on the web"):
        build_report_html("![x](https://example.org/x.png)", report_dir, "t")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report_html("![x](../figures/none.png)", report_dir, "t")
    with pytest.raises(ValueError, match="external resource"):
        build_report_html('<img src="x.png">', report_dir, "t")


def test_the_markdown_for_the_prefect_ui_carries_every_figure_inline_and_smaller(tables, figures, report_dir):
    # A real plot (antialiased lines over a colour map), where the 256-colour copy is what saves the bytes.
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    axes.imshow(np.linspace(0, 1, 400).reshape(20, 20), cmap="viridis")
    axes.plot(np.sin(np.linspace(0, 20, 200)) * 8 + 10, color="tab:orange")
    figure.savefig(figures["first_25_images"])
    text = build_report_markdown(_context(tables, figures), report_dir)

    inlined = inline_markdown_images(text, report_dir)

    sources = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", inlined)
    assert len(sources) == len(FIGURE_NAMES)
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    without_images = re.compile(r"!\[[^\]]*\]\([^)]*\)")
    assert without_images.sub("", inlined) == without_images.sub("", text)  # only the links changed
    original = Image.open(figures["first_25_images"]).convert("RGB")
    encoded = base64.b64decode(sources[0].split(",", 1)[1])
    shown = Image.open(io.BytesIO(encoded)).convert("RGB")
    assert shown.size == original.size
    assert len(encoded) < 0.7 * figures["first_25_images"].stat().st_size
    assert np.abs(np.asarray(shown, dtype=int) - np.asarray(original, dtype=int)).mean() < 2  # out of 255


def test_the_markdown_for_the_prefect_ui_refuses_a_missing_figure_or_an_image_it_cannot_inline(report_dir):
    with pytest.raises(FileNotFoundError, match="none.png.*does not exist"):
        inline_markdown_images("![Figure 1: x](../figures/none.png)", report_dir)
    with pytest.raises(ValueError, match=r"written other than as !\[caption\]\(path\)"):
        inline_markdown_images("![Figure [1]: x](../figures/none.png)", report_dir)


def test_write_report_writes_both_files_and_no_temporary_ones(tables, figures, report_dir):
    written = write_report(_context(tables, figures), report_dir)
    assert written == {"markdown": report_dir / "report.md", "html": report_dir / "report.html"}
    assert sorted(path.name for path in report_dir.iterdir()) == ["report.html", "report.md"]
    expected = build_report_markdown(_context(tables, figures), report_dir)
    assert written["markdown"].read_text(encoding="utf-8") == expected
    assert written["html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    write_report(_context(tables, figures), report_dir)  # rewriting replaces, and still leaves nothing behind
    assert sorted(path.name for path in report_dir.iterdir()) == ["report.html", "report.md"]


# --------------------------------------------------------------------------- several seeds and the nightly gate


@pytest.fixture
def replicated() -> dict[str, pd.DataFrame]:
    return replicated_tables()


@pytest.fixture
def seed_figures(tmp_path) -> dict[str, Path]:
    return write_placeholder_figures(tmp_path / "figures", FIGURE_NAMES + SEED_FIGURE_NAMES)


def _claim(comparisons: pd.DataFrame, better: str, worse: str, rate: float = 0.001) -> str:
    """How the report states a difference that holds, with the numbers of the seed_comparisons table."""
    row = comparisons[np.isclose(comparisons["learning_rate"], rate)
                      & (comparisons[["model_a", "model_b"]].apply(set, axis=1) == {better, worse})].iloc[0]
    sign = 1 if row["model_a"] == better else -1
    low, high = sorted((sign * row["difference_low"], sign * row["difference_high"]))
    return (f"{better} beats {worse}, as in the study's table 5.1, across 3 seeds (mean difference "
            f"{sign * row['difference_mean'] * 100:+.2f} points, 95% CI {low * 100:+.2f} to {high * 100:+.2f}, "
            f"paired t p = {row['p_value']:.2g})")


def test_with_several_seeds_the_sections_come_in_order(replicated, seed_figures, report_dir):
    text = build_report_markdown(_context({**replicated, "history": history_table()}, seed_figures), report_dir)
    headings = ("## 6. Performance", "## Across seeds", "## 7. Conclusion", "## Nightly gate",
                "## How this report was made")
    positions = [text.index(heading + "\n") for heading in headings]
    assert positions == sorted(positions)
    build_report_html(text, report_dir, "t")  # every link resolves


def test_across_seeds_names_the_conclusions_that_hold_and_those_within_noise(replicated, seed_figures, report_dir):
    text = build_report_markdown(_context(replicated, seed_figures), report_dir)
    across = _section(text, "## Across seeds")
    comparisons = replicated["seed_comparisons"]
    reference = next(line for line in across.splitlines() if line.startswith("- At learning rate 0.001,"))
    assert _claim(comparisons, "convnet", "dnn") in reference and _claim(comparisons, "resnet", "dnn") in reference
    noise = comparisons[(comparisons["learning_rate"] == 0.001) & (comparisons["model_b"] == "resnet")
                        & (comparisons["model_a"] == "convnet")].iloc[0]
    assert (f"convnet vs resnet is within seed noise (mean difference {noise['difference_mean'] * 100:+.2f} points"
            in reference)
    assert f"paired t p = {noise['p_value']:.2g}; the study's table 5.1 ranks convnet first)" in reference
    # resnet at 0.0001 swings by 0.4 points across seeds, more than the study's 0.2-point gap to convnet.
    cell = replicated["replicates"].set_index(["model", "learning_rate"]).loc[("resnet", 0.0001)]
    assert (f"resnet at learning rate 0.0001 (standard deviation {cell['accuracy_std']:.4f} across 3 seeds, more than "
            "the study's gap of 0.0020 to convnet") in across
    assert (f"| {cell['accuracy_mean']:.4f} ± {cell['accuracy_std']:.4f} "
            f"({cell['accuracy_mean_low']:.4f}–{cell['accuracy_mean_high']:.4f}) |") in across
    assert "learning rate 0.1 (standard deviation" not in across  # diverged cells rank nothing
    conclusion = _section(text, "## 7. Conclusion")
    assert "- **Across seeds.** At learning rate 0.001, " + _claim(comparisons, "convnet", "dnn") in conclusion
    assert "of 12 pairwise differences, 9 hold across seeds and 3 are within seed noise" in conclusion


def test_a_significant_reversal_of_the_study_s_ranking_is_named(replicated, seed_figures, report_dir, monkeypatch):
    # resnet now beats convnet in every seed at 0.001, the reverse of the study's table 5.1 (convnet 0.991, resnet 0.99).
    monkeypatch.setitem(WRONG_BY_SEED, 43, (400, 80, 70))
    monkeypatch.setitem(WRONG_BY_SEED, 44, (420, 95, 75))
    monkeypatch.setitem(WRONG_BY_SEED, 42, (412, 100, 84))
    text = build_report_markdown(_context(replicated_tables(), seed_figures), report_dir)
    assert "resnet beats convnet across 3 seeds, the reverse of the study's table 5.1 (mean difference +" in text
    assert "Its lead over convnet holds across 3 seeds" in _section(text, "## 7. Conclusion")


def test_with_several_seeds_the_study_sections_use_the_means_and_name_the_seeds(replicated, seed_figures, report_dir):
    text = build_report_markdown(_context(replicated, seed_figures), report_dir)
    cells = replicated["replicates"].set_index(["model", "learning_rate"])
    resnet = cells.loc[("resnet", 0.001)]
    assert (f"| resnet | 0.001 | 10 | 3 | {resnet['accuracy_mean']:.4f} ± {resnet['accuracy_std']:.4f} | "
            f"{resnet['accuracy_mean_low']:.4f}–{resnet['accuracy_mean_high']:.4f} | 0.991 | "
            f"{resnet['accuracy_mean'] - 0.991:+.4f} |") in _section(text, "## 4. Accuracy")
    convnet = [cells.loc[("convnet", rate), "accuracy_mean"] for rate in LEARNING_RATES]
    assert "| convnet | this run | " + " | ".join(f"{value:.4f}" for value in convnet) + " |" in text
    performance = _section(text, "## 6. Performance")
    assert "| dnn | sweep | 43 | 0.001 | 10 | 0.9600 |" in performance
    assert "| 0.001 | 44 | convnet | resnet |" in performance
    conclusion = _section(text, "## 7. Conclusion")
    assert f"the most accurate model by mean across 3 seeds is **resnet** with mean test accuracy " \
           f"{resnet['accuracy_mean']:.4f}" in conclusion
    assert "Its lead over convnet is within seed noise across 3 seeds" in conclusion
    assert "McNemar p" not in next(line for line in conclusion.splitlines() if line.startswith("- **Best model.**"))
    significance = next(line for line in conclusion.splitlines() if line.startswith("- **Significance.**"))
    assert "convnet significantly more accurate than dnn in 3 of 3 seeds" in significance
    assert "convnet significantly more accurate than resnet in 1 and the reverse in 2 of 3 seeds" in significance
    assert "Seed by seed, the ratio ranges from 1.50 to 2.75: above 1 in 3 of 3 seeds." in conclusion


def test_seed_figures_are_shown_when_drawn_and_left_out_silently_otherwise(replicated, seed_figures, tables, figures,
                                                                          report_dir):
    several = build_report_markdown(_context(replicated, seed_figures), report_dir)
    linked = {Path(unquote(link)).stem for link in _image_links(several)}
    assert set(SEED_FIGURE_NAMES) <= linked
    assert "*Figure 5.2: Test accuracy by learning rate" in _section(several, "## 5. Model selection")
    assert "*Figure 3.3: Gradient norm of target_layer" in _section(several, "## 3. Gradient vanishing")
    one = build_report_markdown(_context(tables, figures), report_dir)
    assert "_seeds" not in one and "Figure 5.2" not in one and "Figure 3.3" not in one


def test_one_seed_renders_as_before_with_one_sentence_on_seeds(tables, figures, report_dir):
    before = build_report_markdown(_context(tables, figures), report_dir)
    vectors = {row.run_id: _seed_correct(row.model, row.learning_rate, 42)
               for row in table_builders.sweep_runs(tables["summary"]).itertuples()}
    with_seed_tables = {**tables, "replicates": replicates.replicates_table(tables["summary"]),
                        "seed_comparisons": replicates.seed_comparisons(tables["summary"], vectors)}
    after = build_report_markdown(_context(with_seed_tables, figures), report_dir)
    method = "## How this report was made"
    assert after.split(method)[0] == before.split(method)[0]  # only the list of tables provided differs
    across = _section(before, "## Across seeds")
    assert across.count(".") == 1 and "one seed" in across and "`--replicates 3`" in across


def test_nightly_section_states_tonight_s_gate_decisions(tables, figures, report_dir):
    assert "## Nightly gate" not in build_report_markdown(_context(tables, figures), report_dir)
    history = history_table()
    nightly = _section(build_report_markdown(_context({**tables, "history": history}, figures), report_dir),
                       "## Nightly gate")
    assert "Night of 2024-05-02 (2 nights in the history)" in nightly
    assert "| resnet | 0.001 | 20240502 | 0.9802 | 0.9913 | -1.11 | 3e-07 | 0.9913 | regressed |" in nightly
    assert "| convnet | 0.001 | 20240502 | 0.9871 | 0.9902 | -0.31 | 0.21 | 0.9902 | kept (drop within noise) |" in nightly
    assert "**The night fails:** resnet dropped by more than the tolerance, significantly" in nightly
    for message in history.loc[history["date"] == "2024-05-02", "message"]:
        assert f"- {message}\n" in nightly
    assert "2024-05-01" not in nightly and "Figure N.1" not in nightly  # the history figure is optional
    passing = history.assign(decision=history["decision"].replace("regressed", "kept (drop within noise)"))
    nightly = _section(build_report_markdown(_context({**tables, "history": passing}, figures), report_dir),
                       "## Nightly gate")
    assert "The night passes: no model dropped significantly" in nightly and "The night fails" not in nightly


def test_pairs_of_several_depths_get_a_section_that_names_where_the_gradient_vanishes(report_dir):
    from tests.mnist_models.findings.test_gradients import DEEP8, deep_tables

    # At 2 blocks the norms start alike; at 8 blocks they are the ones measured on MNIST (gradient_depth.md).
    shallow = {model.replace("deep8", "deep2"): {seed: [0.7 + seed / 1000] + [value or 0.5 for value in values[1:]]
                                                 for seed, values in seeds.items()} for model, seeds in DEEP8.items()}
    context = _context(deep_tables({**shallow, **DEEP8}), {}, settings={"dataset": "fashion-mnist"})
    section = _section(build_report_markdown(context, report_dir), "### Gradient vanishing with depth")
    rows = [line for line in section.splitlines() if line.startswith("| 2 |") or line.startswith("| 8 |")]
    assert rows[0].startswith("| 2 | 1.00 |")
    assert rows[1].startswith("| 8 | 1,143 | 769–1,699 |") and "| 1 / 0 of 3 | 0.6730 (0.1135) | 0.9624 (0.9532) |" in rows[1]
    assert ("On `fashion-mnist`, `target_layer`'s gradient without shortcuts falls significantly below the one with "
            "them from 8 blocks on at initialisation, and at no depth over the trained epochs") in section
    assert "`resnet_plain_deep8` never left its initial state in seed 42" in section
    assert ("from 8 blocks on, networks without shortcuts end at chance (test accuracy below 0.2) in 1 of 3 seeds at 8, "
            "while every network with shortcuts trains") in section


def test_the_prefect_markdown_converts_each_figure_once_and_keeps_only_the_report_s(tables, figures, report_dir,
                                                                                     tmp_path):
    text = build_report_markdown(_context(tables, figures), report_dir)
    cache = tmp_path / "palette"
    fresh = inline_markdown_images(text, report_dir)

    assert inline_markdown_images(text, report_dir, palette_cache=cache) == fresh
    before = {path.name: path.read_bytes() for path in cache.iterdir()}
    assert before and all(name.endswith(".png") for name in before)
    for name, data in before.items():  # a kept conversion is read, not made again: mark each, find the marks inlined
        (cache / name).write_bytes(data + b"kept")
    again = inline_markdown_images(text, report_dir, palette_cache=cache)
    assert all(base64.b64encode(data + b"kept").decode() in again for data in before.values())

    Image.new("RGB", (40, 30), "red").save(figures["first_25_images"])  # a figure changes: converted anew
    inline_markdown_images(text, report_dir, palette_cache=cache)
    after = {path.name for path in cache.iterdir()}
    (new,) = after - set(before)
    assert Image.open(cache / new).size == (40, 30)
    assert len(set(before) - after) <= 1  # the old figure's conversion, unless another figure still has its bytes
