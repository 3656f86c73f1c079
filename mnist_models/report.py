"""The study's report regenerated from one run: Markdown for viewers, and a self-contained HTML page.

Every number in the text is read from the run's tables; the only numbers typed here are the
study's own reference values (its tables 2.1 and 5.1), quoted beside the run's for comparison.
Images are linked relative to the report directory in Markdown and inlined as data URIs in HTML.
"""

from __future__ import annotations

import base64
import html
import math
import mimetypes
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from urllib.request import url2pathname
from xml.etree import ElementTree

import markdown
import numpy as np
import pandas as pd
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

from mnist_models.evaluation import DIVERGED_BELOW, STUDY_TABLE_2_1, STUDY_TABLE_5_1
from mnist_models.io import write_text
from mnist_models.tables import to_markdown

__all__ = [
    "DIVERGED_BELOW",
    "REFERENCE_LEARNING_RATE",
    "STUDY_EPOCHS",
    "STUDY_TABLE_2_1",
    "STUDY_TABLE_5_1",
    "ReportContext",
    "build_report_html",
    "build_report_markdown",
    "write_report",
]

# The study's table 2.1 and section VI are at this learning rate, after this many epochs.
REFERENCE_LEARNING_RATE = 0.001
STUDY_EPOCHS = 10
# The gradient experiment's model without the residual shortcut; its partner has the shortcut.
PLAIN_VARIANT = "resnet_plain"
TARGET_LAYER = "target_layer"
MISSING = "—"

# Columns the report reads from each table; other columns are ignored.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "dataset_facts": ("fact", "train", "test", "total"),
    "model_summary": ("model", "layer", "type", "output_shape", "parameters", "study_formula", "formula_parameters"),
    "accuracy_at_lr": ("model", "learning_rate", "epochs", "accuracy", "accuracy_low", "accuracy_high"),
    "lr_sweep": ("model",),
    "summary": (
        "model", "learning_rate", "epochs", "accuracy", "accuracy_low", "accuracy_high",
        "loss", "macro_f1", "macro_auc", "map", "role",
    ),
    "per_class_metrics": ("model", "learning_rate", "class", "f1"),
    "significance": (
        "learning_rate", "model_a", "model_b", "accuracy_a", "accuracy_b",
        "only_a_correct", "only_b_correct", "p_value", "significant",
    ),
    "gradient_pair": ("model", "layer", "epoch", "gradient_norm"),
}
# The pipeline's tables folder calls the gradient pair table `gradient_norms`; accept either name.
_TABLE_ALIASES = {"gradient_pair": ("gradient_pair", "gradient_norms")}

_MODEL_DESCRIPTIONS = {
    "dnn": "a dense network on the flattened pixels (study figure 2.1)",
    "convnet": "a convolutional network alternating convolutions and max pooling (study figure 2.2)",
    "resnet": "a small residual network with a strided 1×1 convolution as its shortcut (study figure 2.6)",
    "resnet_plain": "the same residual network without its shortcut, trained only for section 3",
}
_LEARNING_RATE_COLUMN = re.compile(r"^lr\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)$")
_NON_DATA_SOURCE = re.compile(r"""\b(?:src|srcset)\s*=\s*(?!["']?data:)""", re.IGNORECASE)


@dataclass(frozen=True)
class ReportContext:
    """Everything a report is built from: the run's tables, its figures' PNG paths, its settings."""

    tables: Mapping[str, pd.DataFrame]
    figures: Mapping[str, Path]
    settings: Mapping[str, object]
    generated_at: str

    def __post_init__(self) -> None:
        for name, value in (("tables", self.tables), ("figures", self.figures), ("settings", self.settings)):
            if not isinstance(value, Mapping):
                raise ValueError(f"ReportContext.{name} must be a dict; got {type(value).__name__}")
        for name, table in self.tables.items():
            if not isinstance(table, pd.DataFrame):
                raise ValueError(f"table {name!r} must be a pandas DataFrame; got {type(table).__name__}")
        for name, path in self.figures.items():
            if not isinstance(path, (str, os.PathLike)):
                raise ValueError(f"figure {name!r} must be a path to a PNG file; got {type(path).__name__}")


# --------------------------------------------------------------------------- Markdown


def build_report_markdown(context: ReportContext, report_dir: Path) -> str:
    """The study's seven sections as Markdown, with images linked relative to `report_dir`."""
    report = _Report(context, Path(report_dir))
    blocks = [
        *report.header(),
        *report.data_section(),
        *report.models_section(),
        *report.gradient_section(),
        *report.accuracy_section(),
        *report.selection_section(),
        *report.performance_section(),
        *report.conclusion_section(),
        *report.method_section(),
    ]
    return "\n\n".join(block.strip("\n") for block in blocks) + "\n"


class _Report:
    """Builds each section from the context; each method returns a list of Markdown blocks."""

    def __init__(self, context: ReportContext, report_dir: Path) -> None:
        self.context = context
        self.report_dir = report_dir
        self.settings = context.settings
        self.tables = {name: _table(context, name) for name in REQUIRED_COLUMNS}

    # ----------------------------------------------------------------------- header

    def header(self) -> list[str]:
        dataset = self.settings.get("dataset")
        profile = self.settings.get("profile")
        about = ", ".join(
            part for part in (f"dataset {dataset}" if dataset else "", f"profile {profile}" if profile else "") if part
        )
        return [
            "# MNIST model study, regenerated from this run",
            f"*Generated {self.context.generated_at}{f' ({about})' if about else ''}. Every number below comes from "
            "this run's tables; the study's own values (its tables 2.1 and 5.1) are quoted beside them. "
            "How the run was made is listed at the end.*",
        ]

    # ----------------------------------------------------------------------- 1. Data

    def data_section(self) -> list[str]:
        blocks = ["## 1. Data"]
        facts = self.tables["dataset_facts"]
        if facts is None:
            blocks.append(_note("This run produced no `dataset_facts` table, so the data cannot be described here."))
        else:
            blocks.append("The dataset as this run loaded it, split as the dataset defines it:")
            blocks.append(to_markdown(facts[list(REQUIRED_COLUMNS["dataset_facts"])].astype(str)))
        blocks.append(self.figure("first_25_images", "1.1", "First 25 normalized images of the training set"))
        return blocks

    # ----------------------------------------------------------------------- 2. Models

    def models_section(self) -> list[str]:
        blocks = ["## 2. Models"]
        summary = self.tables["model_summary"]
        if summary is None:
            blocks.append(_note("This run produced no `model_summary` table, so the architectures are not listed."))
            return blocks
        is_total = summary["layer"].astype(str) == "(total)"
        models = _unique(summary["model"])
        described = [f"**{model}**, {_MODEL_DESCRIPTIONS[model]}" for model in models if model in _MODEL_DESCRIPTIONS]
        if described:
            blocks.append("This run builds " + _join(described) + ". Layers and parameter counts are Keras's own.")

        rows = []
        for model in models:
            layers = summary[(summary["model"] == model) & ~is_total]
            totals = summary[(summary["model"] == model) & is_total]
            total = int(totals["parameters"].iloc[0]) if len(totals) else int(layers["parameters"].sum())
            rows.append({"model": model, "layers": str(len(layers)), "parameters": f"{total:,}"})
        blocks.append(to_markdown(pd.DataFrame(rows)))

        formula = pd.to_numeric(summary["formula_parameters"], errors="coerce")
        convolutions = summary[formula.notna() & ~is_total]
        if convolutions.empty:
            blocks.append("None of these models has a convolution layer, so the study's formula does not apply.")
            return blocks
        blocks.append(
            "The study counts a k×k convolution with m filters on c input channels as k×k×m×c + m trainable "
            "parameters (one kernel per input channel and filter, one bias per filter). Its value beside "
            "Keras's count, for every convolution layer:"
        )
        agree = pd.to_numeric(convolutions["formula_parameters"]) == pd.to_numeric(convolutions["parameters"])
        table = pd.DataFrame(
            {
                "model": convolutions["model"].astype(str),
                "layer": convolutions["layer"].astype(str),
                "output shape": convolutions["output_shape"].astype(str),
                "study formula": convolutions["study_formula"].astype(str),
                "formula": [f"{int(value):,}" for value in convolutions["formula_parameters"]],
                "Keras": [f"{int(value):,}" for value in convolutions["parameters"]],
                "agree": ["yes" if same else "**no**" for same in agree],
            }
        )
        blocks.append(to_markdown(table))
        if agree.all():
            blocks.append(f"The formula gives Keras's count for all {len(table)} convolution layers.")
        else:
            wrong = [f"{row.model} {row.layer}" for row in convolutions[~agree.to_numpy()].itertuples()]
            blocks.append(f"The formula disagrees with Keras for {_join(wrong)}.")
        return blocks

    # ----------------------------------------------------------------------- 3. Gradient vanishing

    def gradient_section(self) -> list[str]:
        blocks = [
            "## 3. Gradient vanishing",
            "The study trains its residual network with and without the shortcut and watches the first "
            f"convolution, `{TARGET_LAYER}`, the layer most exposed to vanishing gradients. Figure 3.1 shows its "
            "kernel weights epoch by epoch (study figures 2.7 and 2.8); figure 3.2 the gradient norm of every layer.",
            self.figure("kernel_histograms", "3.1", f"Kernel weights of {TARGET_LAYER} per epoch, without and with "
                        "the residual shortcut"),
            self.figure("gradient_norms", "3.2", "Gradient norm per layer and epoch, without and with the shortcut"),
        ]
        gradients = self.tables["gradient_pair"]
        if gradients is None:
            blocks.append(_note("This run has no gradient table, so the gradient norms cannot be compared in numbers."))
            return blocks
        means = _mean_gradient_norms(gradients)
        epochs = pd.to_numeric(gradients["epoch"])
        span = f"epochs {int(epochs.min())}–{int(epochs.max())}"
        columns = {"layer": means.index.astype(str)}
        for variant in means.columns:
            columns[_variant_label(variant)] = [_number(value) for value in means[variant]]
        pair = _gradient_pair(means)
        if pair is not None:
            plain, residual = pair
            columns["with ÷ without"] = [
                _ratio_text(with_value, without_value)
                for with_value, without_value in zip(means[residual], means[plain])
            ]
        blocks.append(f"Mean gradient norm per layer over {span}, in network order:")
        blocks.append(to_markdown(pd.DataFrame(columns)))
        blocks.append(self.gradient_sentence())
        return blocks

    def gradient_sentence(self) -> str:
        """What the gradient norms say about the shortcut, in one sentence (also used by the conclusion)."""
        gradients = self.tables["gradient_pair"]
        if gradients is None:
            return "The run has no gradient norms, so the effect of the shortcut on them is unknown."
        means = _mean_gradient_norms(gradients)
        pair = _gradient_pair(means)
        if pair is None:
            return (
                f"The gradient experiment needs both {PLAIN_VARIANT} and resnet; this run has only "
                f"{_join(list(means.columns))}, so the shortcut's effect cannot be measured."
            )
        if TARGET_LAYER not in means.index or means.loc[TARGET_LAYER].isna().any():
            return f"`{TARGET_LAYER}` is missing from the gradient norms of one variant, so they cannot be compared."
        plain, residual = pair
        without_value, with_value = float(means.loc[TARGET_LAYER, plain]), float(means.loc[TARGET_LAYER, residual])
        epochs = pd.to_numeric(gradients["epoch"])
        opening = (
            f"Over epochs {int(epochs.min())}–{int(epochs.max())}, `{TARGET_LAYER}`'s mean gradient norm is "
            f"{_number(with_value)} with the shortcut ({residual}) and {_number(without_value)} without it ({plain})"
        )
        if without_value <= 0:
            return opening + "; the ratio is undefined because the gradient without the shortcut is zero."
        ratio = with_value / without_value
        if ratio > 1:
            verdict = "the shortcut increased the gradient reaching the first layer"
        elif ratio < 1:
            verdict = "the shortcut did not increase the gradient reaching the first layer; it lowered it"
        else:
            verdict = "the shortcut did not change the gradient reaching the first layer"
        return f"{opening}: a ratio of {ratio:.2f}, so {verdict}."

    # ----------------------------------------------------------------------- 4. Accuracy

    def accuracy_section(self) -> list[str]:
        blocks = ["## 4. Accuracy"]
        table = self.tables["accuracy_at_lr"]
        if table is None:
            blocks.append(_note(
                f"This run has no accuracy at learning rate {_rate(REFERENCE_LEARNING_RATE)} (table `accuracy_at_lr` "
                "is empty), so the study's table 2.1 cannot be compared."
            ))
        else:
            blocks.append(
                "Test accuracy after training with Adam on cross-entropy, with its 95% bootstrap interval, beside the "
                f"study's table 2.1 (learning rate {_rate(REFERENCE_LEARNING_RATE)}, {STUDY_EPOCHS} epochs):"
            )
            rows = []
            for row in table.itertuples():
                study = STUDY_TABLE_2_1.get(str(row.model), math.nan)
                rows.append(
                    {
                        "model": str(row.model),
                        "learning rate": _rate(row.learning_rate),
                        "epochs": str(int(row.epochs)),
                        "accuracy": _accuracy(row.accuracy),
                        "95% interval": _interval(row.accuracy_low, row.accuracy_high),
                        "study (table 2.1)": _study_value(study),
                        "this run − study": _signed(row.accuracy - study),
                    }
                )
            blocks.append(to_markdown(pd.DataFrame(rows)))
            caveat = self.scale_caveat()
            if caveat:
                blocks.append(caveat)
        blocks.append(self.figure("accuracy_curves", "4.1", "Training and validation accuracy per epoch "
                                  "(study figure 2.9)"))
        return blocks

    def scale_caveat(self) -> str:
        """A sentence when this run trained less than the study did; empty when it matched the study."""
        epochs = self.run_epochs()
        subset = self.settings.get("train_subset")
        differences = []
        if epochs and epochs != [STUDY_EPOCHS]:
            counts = _join([str(value) for value in epochs], "or")
            differences.append(f"{counts} epoch" if epochs == [1] else f"{counts} epochs")
        if subset:
            differences.append(f"a {int(subset):,}-image training subset")
        if not differences:
            return ""
        return (
            f"This run trained for {' on '.join(differences)}, whereas the study trained for {STUDY_EPOCHS} epochs on "
            "the full training set: its numbers check that the pipeline works, not that the study's are reproduced."
        )

    def run_epochs(self) -> list[int]:
        for name in ("accuracy_at_lr", "summary"):
            table = self.tables[name]
            if table is not None:
                rows = table[table["role"] == "sweep"] if "role" in table.columns else table
                return sorted({int(value) for value in pd.to_numeric(rows["epochs"])})
        return []

    # ----------------------------------------------------------------------- 5. Model selection

    def selection_section(self) -> list[str]:
        blocks = ["## 5. Model selection"]
        sweep = self.sweep()
        if sweep is None:
            blocks.append(_note("This run has no learning-rate sweep (table `lr_sweep` is empty)."))
        else:
            blocks.append(
                "Test accuracy of every model at every learning rate of the sweep, each row of this run beside the "
                "study's table 5.1 (— where a cell was not run):"
            )
            blocks.append(to_markdown(self.sweep_comparison(sweep)))
            best = []
            for model, accuracies in sweep.iterrows():
                if accuracies.notna().any():
                    rate = accuracies.idxmax()
                    best.append(f"{model} at {_rate(rate)} ({_accuracy(accuracies[rate])})")
            blocks.append("Best learning rate per model in this run: " + _join(best) + ".")
            blocks.append(self.divergence_sentence())
        blocks.append(self.figure("lr_sweep_heatmap", "5.1", "Test accuracy by model and learning rate"))
        return blocks

    def sweep(self) -> pd.DataFrame | None:
        """The lr_sweep table as accuracies indexed by model, one float column per learning rate."""
        table = self.tables["lr_sweep"]
        if table is None:
            return None
        columns = {}
        for column in table.columns:
            match = _LEARNING_RATE_COLUMN.match(str(column).strip())
            if match:
                columns[float(match.group(1))] = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        if not columns:
            raise ValueError(
                f"table 'lr_sweep' has no learning-rate columns; expected columns named like 'lr 0.001', "
                f"got {[str(column) for column in table.columns]}"
            )
        return pd.DataFrame(columns, index=table["model"].astype(str).to_numpy())

    def sweep_comparison(self, sweep: pd.DataFrame) -> pd.DataFrame:
        rates = set(sweep.columns)
        for model in sweep.index:
            rates |= set(STUDY_TABLE_5_1.get(model, {}))
        rates = sorted(rates, reverse=True)
        rows = []
        for model, accuracies in sweep.iterrows():
            rows.append({"model": model, "source": "this run",
                         **{f"LR {_rate(rate)}": _accuracy(accuracies.get(rate, math.nan)) for rate in rates}})
            study = STUDY_TABLE_5_1.get(model)
            if study:
                rows.append({"model": model, "source": "study (table 5.1)",
                             **{f"LR {_rate(rate)}": _study_value(study.get(rate, math.nan)) for rate in rates}})
        return pd.DataFrame(rows)

    def diverged(self) -> dict[float, list[tuple[str, float]]]:
        """Learning rate -> the (model, accuracy) cells of the sweep below DIVERGED_BELOW."""
        sweep = self.sweep()
        found: dict[float, list[tuple[str, float]]] = {}
        if sweep is None:
            return found
        for rate in sweep.columns:
            for model, accuracy in sweep[rate].items():
                if accuracy < DIVERGED_BELOW:
                    found.setdefault(rate, []).append((model, float(accuracy)))
        return found

    def divergence_sentence(self) -> str:
        sweep = self.sweep()
        if sweep is None:
            return "Without a learning-rate sweep, this run cannot say which learning rates diverge."
        diverged = self.diverged()
        if not diverged:
            return f"No learning rate diverged: every accuracy in the sweep is at least {DIVERGED_BELOW:g}."
        parts = []
        for rate, cells in diverged.items():
            models = [model for model, _ in cells]
            every = len(models) > 1 and set(models) == set(sweep.index[sweep[rate].notna()])
            who = "every model" if every else _join(models)
            values = _join([f"{model} {_accuracy(accuracy)}" for model, accuracy in cells])
            parts.append(f"learning rate {_rate(rate)} diverged for {who} ({values})")
        study_agrees = all(
            STUDY_TABLE_5_1.get(model, {}).get(rate, math.inf) < DIVERGED_BELOW
            for rate, cells in diverged.items()
            for model, _ in cells
        )
        sentence = (
            _capitalize(_join(parts, separator="; "))
            + f": accuracy below {DIVERGED_BELOW:g}, no better than guessing."
        )
        if study_agrees:
            sentence += " The study's table 5.1 shows the same."
        return sentence

    # ----------------------------------------------------------------------- 6. Performance

    def performance_section(self) -> list[str]:
        blocks = [
            "## 6. Performance",
            "Precision, recall, F1, ROC AUC and average precision are computed one class against the rest "
            "(study section VI); macro F1 and macro AUC average them over the classes, and MAP is the mean of the "
            "per-class average precisions. Intervals are 95% bootstrap intervals over the test images.",
        ]
        summary = self.tables["summary"]
        if summary is None:
            blocks.append(_note("This run has no `summary` table, so no run can be described here."))
        else:
            blocks.append(to_markdown(_summary_display(summary)))
        number = 1
        for index, model in enumerate(self.performance_models(), start=1):
            blocks.append(f"### 6.{index} {model}")
            line = self.model_line(model)
            if line:
                blocks.append(line)
            for kind, caption in (
                ("roc", f"ROC curves, one class against the rest, for {model}"),
                ("f1", f"Precision, recall and F1 per class for {model}"),
                ("confusion", f"Confusion matrix of {model} on the test set"),
            ):
                blocks.append(self.figure(f"{kind}_{model}", f"6.{number}", caption))
                number += 1
        blocks.extend(self.significance_blocks())
        return blocks

    def performance_models(self) -> list[str]:
        """Models of the sweep, then any other model whose per-model figures exist."""
        summary = self.tables["summary"]
        models = _unique(summary.loc[summary["role"] == "sweep", "model"]) if summary is not None else []
        for name in self.context.figures:
            for prefix in ("roc_", "f1_", "confusion_"):
                if name.startswith(prefix) and name[len(prefix):] not in models:
                    models.append(name[len(prefix):])
        return models

    def representative_run(self, model: str) -> pd.Series | None:
        """The model's sweep run at the reference learning rate, else its most accurate one."""
        summary = self.tables["summary"]
        if summary is None:
            return None
        rows = summary[(summary["model"] == model) & (summary["role"] == "sweep")]
        if rows.empty:
            return None
        at_reference = rows[np.isclose(pd.to_numeric(rows["learning_rate"]), REFERENCE_LEARNING_RATE)]
        chosen = at_reference if not at_reference.empty else rows
        return chosen.loc[pd.to_numeric(chosen["accuracy"]).idxmax()]

    def model_line(self, model: str) -> str:
        run = self.representative_run(model)
        if run is None:
            return ""
        line = (
            f"At learning rate {_rate(run['learning_rate'])} after {_epochs(run['epochs'])}: accuracy "
            f"{_accuracy(run['accuracy'])} (95% interval {_interval(run['accuracy_low'], run['accuracy_high'])}), "
            f"macro F1 {_accuracy(run['macro_f1'])}, macro AUC {_accuracy(run['macro_auc'])}, "
            f"MAP {_accuracy(run['map'])}."
        )
        per_class = self.tables["per_class_metrics"]
        if per_class is None:
            return line
        if "run_id" in per_class.columns and "run_id" in run.index:
            classes = per_class[per_class["run_id"] == run["run_id"]]
        else:
            classes = per_class[
                (per_class["model"] == model)
                & np.isclose(pd.to_numeric(per_class["learning_rate"]), float(run["learning_rate"]))
            ]
        f1 = pd.to_numeric(classes["f1"], errors="coerce")
        if f1.notna().any():
            weakest, strongest = classes.loc[f1.idxmin()], classes.loc[f1.idxmax()]
            line += (
                f" Its weakest class is {_class_label(weakest['class'])} (F1 {_accuracy(weakest['f1'])}), "
                f"its strongest {_class_label(strongest['class'])} (F1 {_accuracy(strongest['f1'])})."
            )
        return line

    def significance_blocks(self) -> list[str]:
        blocks = ["### Are the differences significant?"]
        table = self.tables["significance"]
        if table is None:
            blocks.append(
                "No pair of models was compared: the run's significance table is empty. McNemar's test needs at "
                "least two models evaluated at the same learning rate on the same test images."
            )
            return blocks
        blocks.append(
            "McNemar's test compares two models on the same test images through the images only one of them gets "
            "right; the conclusion (section 7) states each verdict in words."
        )
        rows = []
        for row in table.itertuples():
            rows.append(
                {
                    "learning rate": _rate(row.learning_rate),
                    "model A": str(row.model_a),
                    "model B": str(row.model_b),
                    "accuracy A": _accuracy(row.accuracy_a),
                    "accuracy B": _accuracy(row.accuracy_b),
                    "only A right": str(int(row.only_a_correct)),
                    "only B right": str(int(row.only_b_correct)),
                    "p-value": _p_value(row.p_value),
                    "significant": _significance_cell(row),
                }
            )
        blocks.append(to_markdown(pd.DataFrame(rows)))
        return blocks

    # ----------------------------------------------------------------------- 7. Conclusion

    def conclusion_section(self) -> list[str]:
        bullets = [
            f"**Best model.** {self.best_model_sentence()}",
            f"**Learning rates.** {self.divergence_sentence()}",
            f"**Significance.** {self.significance_sentence()}",
            f"**Gradients.** {self.gradient_sentence()}",
        ]
        against = self.study_gap_sentence()
        if against:
            bullets.append(f"**Against the study.** {against}")
        return ["## 7. Conclusion", "\n".join(f"- {bullet}" for bullet in bullets)]

    def best_model_sentence(self) -> str:
        table = self.tables["accuracy_at_lr"]
        if table is not None:
            table = table[np.isclose(pd.to_numeric(table["learning_rate"]), REFERENCE_LEARNING_RATE)]
        if table is None or table.empty:
            return (
                f"This run has no model trained at learning rate {_rate(REFERENCE_LEARNING_RATE)}, where the study "
                "compares them, so no best model is named."
            )
        ranked = table.sort_values("accuracy", ascending=False, kind="stable")
        best = ranked.iloc[0]
        sentence = (
            f"At learning rate {_rate(REFERENCE_LEARNING_RATE)} after {_epochs(best['epochs'])}, the most "
            f"accurate model is **{best['model']}** with test accuracy {_accuracy(best['accuracy'])} "
            f"(95% interval {_interval(best['accuracy_low'], best['accuracy_high'])})"
        )
        others = [f"{row.model} ({_accuracy(row.accuracy)})" for row in ranked.iloc[1:].itertuples()]
        sentence += f", ahead of {_join(others)}." if others else "; it is the only model of this run."
        if len(ranked) > 1:
            runner_up = ranked.iloc[1]
            pair = self.significance_row(str(best["model"]), str(runner_up["model"]), REFERENCE_LEARNING_RATE)
            if pair is not None:
                qualifier = "" if bool(pair["significant"]) else "not "
                sentence += (
                    f" Its lead over {runner_up['model']} is {qualifier}statistically significant "
                    f"(McNemar p = {_p_value(pair['p_value'])})."
                )
        study_best = max(STUDY_TABLE_2_1, key=STUDY_TABLE_2_1.get)
        if best["model"] in STUDY_TABLE_2_1:
            relation = "also ranks" if best["model"] == study_best else "ranked"
            sentence += (
                f" The study's table 2.1 {relation} {study_best} first ({_study_value(STUDY_TABLE_2_1[study_best])})."
            )
        return sentence

    def significance_row(self, model_a: str, model_b: str, learning_rate: float) -> pd.Series | None:
        table = self.tables["significance"]
        if table is None:
            return None
        pair = {model_a, model_b}
        for _, row in table.iterrows():
            if {str(row["model_a"]), str(row["model_b"])} == pair and math.isclose(
                float(row["learning_rate"]), learning_rate
            ):
                return row
        return None

    def significance_sentence(self) -> str:
        table = self.tables["significance"]
        if table is None:
            return "No pair of models was compared (McNemar's test needs two models at the same learning rate)."
        parts = []
        for rate, rows in table.groupby("learning_rate", sort=False):
            significant = rows[rows["significant"].astype(bool)]
            plain = rows[~rows["significant"].astype(bool)]
            text = (
                f"at learning rate {_rate(rate)}, McNemar's test finds {len(significant)} of {len(rows)} pairwise "
                "difference(s) significant"
            )
            if len(significant):
                text += ": " + _join([_pair_sentence(row) for row in significant.itertuples()])
            if len(plain):
                text += "; not significant: " + _join([_pair_sentence(row) for row in plain.itertuples()])
            parts.append(text)
        return _capitalize(_join(parts, separator="; ")) + "."

    def study_gap_sentence(self) -> str:
        """How far the run's sweep lies from the study's table 5.1, plus the scale caveat if any."""
        sweep = self.sweep()
        gaps = []
        if sweep is not None:
            for model, accuracies in sweep.iterrows():
                for rate, study in STUDY_TABLE_5_1.get(model, {}).items():
                    value = accuracies.get(rate, math.nan)
                    if not math.isnan(value):
                        gaps.append((abs(value - study), model, rate, value, study))
        caveat = self.scale_caveat()
        if not gaps:
            return caveat
        gap, model, rate, value, study = max(gaps)
        sentence = (
            f"Across the {len(gaps)} cells this run shares with the study's table 5.1, the largest gap is "
            f"{gap:.4f}: {model} at learning rate {_rate(rate)} reaches {_accuracy(value)} against the study's "
            f"{_study_value(study)}."
        )
        return f"{sentence} {caveat}".strip()

    # ----------------------------------------------------------------------- How this report was made

    def method_section(self) -> list[str]:
        blocks = [
            "## How this report was made",
            f"`mnist_models.report` generated this page on {self.context.generated_at} from the run's tables "
            "(dataset_facts, model_summary, accuracy_at_lr, lr_sweep, summary, per_class_metrics, significance, "
            "gradient norms) and figures. The study's values in sections 4 and 5 are quoted from its tables 2.1 and "
            "5.1. The run's settings:",
        ]
        if self.settings:
            rows = [{"setting": str(key), "value": _setting_value(value)} for key, value in self.settings.items()]
            blocks.append(to_markdown(pd.DataFrame(rows)))
        else:
            blocks.append(_note("The run recorded no settings."))
        return blocks

    # ----------------------------------------------------------------------- figures

    def figure(self, name: str, number: str, caption: str) -> str:
        """An image with its caption, or a sentence saying why the figure is not shown."""
        path = self.context.figures.get(name)
        if path is None:
            return _note(f"Figure {number} ({caption}) is not shown: this run did not produce the figure `{name}`.")
        if not Path(path).is_file():
            return _note(f"Figure {number} ({caption}) is not shown: its file `{Path(path).name}` is missing.")
        link = _relative_link(Path(path), self.report_dir)
        # Two trailing spaces: a line break, so image and caption share a paragraph (a <figure> in HTML).
        return f"![Figure {number}: {caption}]({link})  \n*Figure {number}: {caption}.*"


# --------------------------------------------------------------------------- HTML


def build_report_html(markdown_text: str, report_dir: Path, title: str) -> str:
    """A self-contained HTML page: the Markdown rendered, its local images inlined as data URIs."""
    converter = markdown.Markdown(extensions=["tables", _SelfContainedExtension(Path(report_dir))])
    body = converter.convert(markdown_text)
    leftover = _NON_DATA_SOURCE.search(body)
    if leftover:
        excerpt = body[leftover.start(): leftover.start() + 80]
        raise ValueError(
            f"the report would load an external resource ({excerpt!r}); only Markdown images are inlined, "
            "so write images as ![caption](path) instead of raw HTML"
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="icon" href="data:,">\n'  # stops the browser asking for /favicon.ico
        f"<style>\n{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


_CSS = """\
body { margin: 0; background: #eef0f3; color: #1f2328;
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { box-sizing: border-box; max-width: 68rem; margin: 0 auto; padding: 2rem 2.5rem 4rem; background: #fff;
  min-height: 100vh; }
h1 { font-size: 1.9rem; line-height: 1.25; margin: 0 0 .75rem; }
h2 { font-size: 1.45rem; margin: 2.75rem 0 .75rem; padding-bottom: .3rem; border-bottom: 1px solid #d8dee4; }
h3 { font-size: 1.15rem; margin: 2rem 0 .5rem; }
table { display: block; max-width: 100%; overflow-x: auto; border-collapse: collapse; margin: 1rem 0;
  font-size: .875rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .3rem .55rem; text-align: left; vertical-align: top;
  white-space: nowrap; }
thead th { background: #eef1f4; }
tbody tr:nth-child(even) { background: #f8f9fb; }
figure { margin: 1.5rem 0; text-align: center; }
figure img, img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { margin-top: .4rem; color: #57606a; font-size: .9rem; font-style: italic; }
blockquote { margin: 1rem 0; padding: .5rem 1rem; border-left: 4px solid #d4a72c; background: #fff8e5; }
blockquote p { margin: .25rem 0; }
code { background: #eff1f3; padding: .1em .35em; border-radius: 4px; font-size: .9em; }
ul { padding-left: 1.4rem; }
li { margin: .5rem 0; }
"""


class _SelfContainedExtension(Extension):
    """Inlines every local image as a data URI and turns image-plus-caption paragraphs into figures."""

    def __init__(self, report_dir: Path) -> None:
        super().__init__()
        self.report_dir = report_dir

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (the markdown package's name)
        # Below the inline processor (20), which is what creates the <img> elements.
        md.treeprocessors.register(_SelfContainedImages(md, self.report_dir), "self_contained_images", 5)


class _SelfContainedImages(Treeprocessor):
    def __init__(self, md: markdown.Markdown, report_dir: Path) -> None:
        super().__init__(md)
        self.report_dir = report_dir

    def run(self, root: ElementTree.Element) -> None:
        for image in root.iter("img"):
            image.set("src", _data_uri(image.get("src", ""), self.report_dir))
        for parent in root.iter():
            for paragraph in list(parent):
                if paragraph.tag == "p":
                    _paragraph_to_figure(paragraph)


def _paragraph_to_figure(paragraph: ElementTree.Element) -> None:
    """`<p><img><br><em>caption</em></p>` (what figures look like in the Markdown) -> `<figure>`."""
    children = list(paragraph)
    tags = [child.tag for child in children]
    if tags != ["img", "br", "em"] or (paragraph.text or "").strip() or any(
        (child.tail or "").strip() for child in children
    ):
        return
    image, line_break, caption = children
    paragraph.tag = "figure"
    paragraph.remove(line_break)
    caption.tag = "figcaption"
    image.tail = caption.tail = None


def _data_uri(source: str, report_dir: Path) -> str:
    if source.startswith("data:"):
        return source
    parts = urlsplit(source)
    if parts.scheme in ("http", "https") or source.startswith("//"):
        raise ValueError(
            f"image {source!r} is on the web; report.html must open offline, so save the image next to the "
            "report and link it by a relative path"
        )
    if parts.scheme == "file":
        path = Path(url2pathname(parts.path))
    elif parts.scheme == "":
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            # Lexically, like a browser: report_dir/../figures works before report_dir exists.
            path = Path(os.path.abspath(report_dir / path))
    else:
        raise ValueError(f"image {source!r} uses the unsupported scheme {parts.scheme!r}; use a relative file path")
    if not path.is_file():
        raise FileNotFoundError(
            f"image {source!r} in the report points at {path}, which does not exist; "
            "render the figure first or remove its link"
        )
    mime, _ = mimetypes.guess_type(path.name)
    if mime is None or not mime.startswith("image/"):
        raise ValueError(f"{path} is linked as an image but is not one (expected .png, .jpg, .gif, .svg or .webp)")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


# --------------------------------------------------------------------------- writing


def write_report(context: ReportContext, report_dir: Path) -> dict[str, Path]:
    """Write report.md and a self-contained report.html into `report_dir`, atomically; return their paths."""
    report_dir = Path(report_dir)
    markdown_text = build_report_markdown(context, report_dir)
    dataset = context.settings.get("dataset")
    title = f"MNIST model study ({dataset})" if dataset else "MNIST model study"
    html_text = build_report_html(markdown_text, report_dir, title)
    return {
        "markdown": write_text(report_dir / "report.md", markdown_text),
        "html": write_text(report_dir / "report.html", html_text),
    }


# --------------------------------------------------------------------------- helpers


def _table(context: ReportContext, name: str) -> pd.DataFrame | None:
    """The named table, or None when the run did not produce it (missing or empty)."""
    table = next(
        (context.tables[alias] for alias in _TABLE_ALIASES.get(name, (name,)) if alias in context.tables), None
    )
    if table is None or table.empty:
        return None
    missing = [column for column in REQUIRED_COLUMNS[name] if column not in table.columns]
    if missing:
        raise ValueError(
            f"table {name!r} lacks columns {missing}; expected {list(REQUIRED_COLUMNS[name])}, "
            f"got {[str(column) for column in table.columns]}"
        )
    return table


def _mean_gradient_norms(gradients: pd.DataFrame) -> pd.DataFrame:
    """Mean gradient norm per layer (rows, network order) and model (columns, plain variant first)."""
    frame = gradients.assign(gradient_norm=pd.to_numeric(gradients["gradient_norm"], errors="coerce"))
    means = frame.groupby(["layer", "model"], sort=False)["gradient_norm"].mean().unstack("model")
    means = means.reindex(index=_unique(frame["layer"]))
    models = _unique(frame["model"])
    return means[sorted(models, key=lambda model: model != PLAIN_VARIANT)]


def _gradient_pair(means: pd.DataFrame) -> tuple[str, str] | None:
    """(plain, residual) model names when the gradient table holds both variants."""
    others = [model for model in means.columns if model != PLAIN_VARIANT]
    if PLAIN_VARIANT not in means.columns or not others:
        return None
    return PLAIN_VARIANT, others[0]


def _variant_label(model: str) -> str:
    return f"without shortcut ({model})" if model == PLAIN_VARIANT else f"with shortcut ({model})"


def _summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary table for reading: sweep runs first, by model then learning rate (largest first)."""
    models = _unique(summary["model"])
    keys = [
        (role != "sweep", models.index(str(model)), -float(rate))
        for role, model, rate in zip(summary["role"], summary["model"], summary["learning_rate"])
    ]
    order = summary.iloc[sorted(range(len(summary)), key=keys.__getitem__)]
    return pd.DataFrame(
        {
            "model": order["model"].astype(str),
            "role": order["role"].astype(str),
            "learning rate": [_rate(value) for value in order["learning_rate"]],
            "epochs": [str(int(value)) for value in order["epochs"]],
            "accuracy": [_accuracy(value) for value in order["accuracy"]],
            "95% interval": [_interval(low, high) for low, high in zip(order["accuracy_low"], order["accuracy_high"])],
            "loss": [_accuracy(value) for value in order["loss"]],
            "macro F1": [_accuracy(value) for value in order["macro_f1"]],
            "macro AUC": [_accuracy(value) for value in order["macro_auc"]],
            "MAP": [_accuracy(value) for value in order["map"]],
        }
    )


def _ordered_pair(row) -> tuple[str, str, float, float]:
    """(better, worse, better's accuracy, worse's): more images only it got right wins, then accuracy."""
    accuracy_a, accuracy_b = float(row.accuracy_a), float(row.accuracy_b)
    if (row.only_a_correct, accuracy_a) > (row.only_b_correct, accuracy_b):
        return str(row.model_a), str(row.model_b), accuracy_a, accuracy_b
    return str(row.model_b), str(row.model_a), accuracy_b, accuracy_a


def _pair_sentence(row) -> str:
    """One McNemar comparison in words, the better model first when the difference is significant."""
    p_text = f"p = {_p_value(row.p_value)}"
    if not bool(row.significant):
        return f"{row.model_a} vs {row.model_b} ({_accuracy(row.accuracy_a)} vs {_accuracy(row.accuracy_b)}, {p_text})"
    better, worse, high, low = _ordered_pair(row)
    return f"{better} is significantly more accurate than {worse} ({_accuracy(high)} vs {_accuracy(low)}, {p_text})"


def _significance_cell(row) -> str:
    return f"yes, {_ordered_pair(row)[0]} better" if bool(row.significant) else "no"


def _relative_link(path: Path, report_dir: Path) -> str:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(report_dir))
    return quote(Path(relative).as_posix())


def _note(text: str) -> str:
    return f"> {text}"


def _unique(values: Iterable[object]) -> list[str]:
    return list(dict.fromkeys(str(value) for value in values))


def _join(items: list[str], conjunction: str = "and", separator: str = ", ") -> str:
    """'a', 'a and b', 'a, b and c'; with separator '; ': 'a; b; and c'."""
    items = [str(item) for item in items]
    if len(items) <= 1:
        return "".join(items)
    last = f" {conjunction} " if separator == ", " else f"{separator}{conjunction} "
    return separator.join(items[:-1]) + last + items[-1]


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _is_missing(value: object) -> bool:
    try:
        return value is None or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def _accuracy(value: object) -> str:
    return MISSING if _is_missing(value) else f"{float(value):.4f}"


def _study_value(value: object) -> str:
    return MISSING if _is_missing(value) else f"{float(value):g}"


def _signed(value: object) -> str:
    return MISSING if _is_missing(value) else f"{float(value):+.4f}"


def _interval(low: object, high: object) -> str:
    return MISSING if _is_missing(low) or _is_missing(high) else f"{float(low):.4f}–{float(high):.4f}"


def _rate(value: object) -> str:
    return f"{float(value):g}"


def _p_value(value: object) -> str:
    return MISSING if _is_missing(value) else f"{float(value):.2g}"


def _number(value: object) -> str:
    return MISSING if _is_missing(value) else f"{float(value):.4g}"


def _ratio_text(numerator: object, denominator: object) -> str:
    if _is_missing(numerator) or _is_missing(denominator) or float(denominator) == 0:
        return MISSING
    return f"{float(numerator) / float(denominator):.2f}"


def _epochs(count: object) -> str:
    return "1 epoch" if int(count) == 1 else f"{int(count)} epochs"


def _class_label(value: object) -> str:
    return str(int(value)) if not _is_missing(value) and float(value).is_integer() else str(value)


def _setting_value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_setting_value(item) for item in value) or "none"
    return str(value)
