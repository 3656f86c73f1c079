"""Tasks that turn evaluated runs into the study's tables, figures and report (and Prefect artifacts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mnist_models import evaluation as evaluation_lib
from mnist_models import tables
from mnist_models.io import sha256_file
from tasks.caching import code_cache_key

STUDY_TABLES = ("model_summary", "summary", "accuracy_at_lr", "lr_sweep", "per_class_metrics",
                "confusion_matrices", "significance", "gradient_norms")


def _publish_table(name: str, table: pd.DataFrame) -> None:
    records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    create_table_artifact(key=name.replace("_", "-"), table=records, description=f"Study table `{name}`")


@task(cache_key_fn=code_cache_key(evaluation_lib, "mnist_models.metrics", tables), persist_result=True)
def write_study_tables(evaluations: list[dict], model_names: list[str], tables_dir: str) -> dict[str, str]:
    """Build every metric table once, write each as Parquet/CSV/Markdown, publish each as an artifact."""
    summary = evaluation_lib.summary_table(evaluations)
    built = {
        "model_summary": evaluation_lib.model_summary_table(model_names),
        "summary": summary,
        "accuracy_at_lr": evaluation_lib.accuracy_at_lr_table(summary),
        "lr_sweep": evaluation_lib.lr_sweep_table(summary),
        "per_class_metrics": evaluation_lib.per_class_table(evaluations),
        "confusion_matrices": evaluation_lib.confusion_table(evaluations),
        "significance": evaluation_lib.significance_by_learning_rate(evaluations),
        "gradient_norms": evaluation_lib.gradient_pair_table(evaluations),
    }
    paths = {}
    for name, table in built.items():
        paths[name] = str(tables.write_table(table, tables_dir, name)["parquet"])
        _publish_table(name, table)
    get_run_logger().info(f"wrote {len(paths)} tables to {tables_dir}")
    return paths


def expected_figures(evaluations: list[dict]) -> list[str]:
    """Names of the figures `render_figures` draws for these runs."""
    names = ["kernel_histograms", "gradient_norms"] if any(run["role"] == "gradient" for run in evaluations) else []
    models = evaluation_lib.representative_runs(evaluations)
    if models:
        names += ["accuracy_curves", "lr_sweep_heatmap"]
    return names + [f"{kind}_{model}" for model in models for kind in ("roc", "f1", "confusion")]


def _variant_label(model: str) -> str:
    return "without shortcut (resnet_plain)" if model == "resnet_plain" else f"with shortcut ({model})"


@task(cache_key_fn=code_cache_key("mnist_models.plots", evaluation_lib), persist_result=True)
def render_figures(evaluations: list[dict], table_paths: dict[str, str], figures_dir: str) -> dict[str, str]:
    """Render the study's figures from the tables and run folders; one PNG each."""
    from mnist_models import metrics, plots

    figures_dir = Path(figures_dir)
    summary = pd.read_parquet(table_paths["summary"])
    per_class = pd.read_parquet(table_paths["per_class_metrics"])
    gradient_runs = [run for run in evaluations if run["role"] == "gradient"]
    chosen = evaluation_lib.representative_runs(evaluations)
    figures = {}

    def save(name: str, figure) -> None:
        figures[name] = str(plots.save_figure(figure, figures_dir / f"{name}.png"))

    if gradient_runs:
        save("kernel_histograms", plots.plot_kernel_histograms(
            {_variant_label(run["model"]): pd.read_parquet(Path(run["run_dir"]) / "kernel_histograms.parquet")
             for run in gradient_runs}))
        save("gradient_norms", plots.plot_gradient_norms(
            {_variant_label(run["model"]): pd.read_parquet(Path(run["run_dir"]) / "gradients.parquet")
             for run in gradient_runs}))
    if chosen:
        save("accuracy_curves", plots.plot_accuracy_curves(
            {f"{model} (lr {run['learning_rate']:g})": pd.read_parquet(Path(run["run_dir"]) / "history.parquet")
             for model, run in chosen.items()}))
    sweep = evaluation_lib.sweep_runs(summary)
    if not sweep.empty:
        save("lr_sweep_heatmap", plots.plot_lr_sweep_heatmap(sweep[["model", "learning_rate", "accuracy"]]))
    for model, run in chosen.items():
        predictions = pd.read_parquet(Path(run["run_dir"]) / "predictions.parquet")
        labels, probabilities = metrics.probabilities_from_frame(predictions)
        label = f"{model}, lr {run['learning_rate']:g}, {run['epochs']} epoch(s)"
        save(f"roc_{model}", plots.plot_roc_curves(labels, probabilities, f"ROC one-vs-rest: {label}"))
        save(f"f1_{model}", plots.plot_f1_per_class(per_class[per_class["run_id"] == run["run_id"]],
                                                     f"Per-class precision, recall, F1: {label}"))
        save(f"confusion_{model}", plots.plot_confusion_matrix(
            np.asarray(run["confusion"]), f"Confusion matrix: {label}"))
    get_run_logger().info(f"wrote {len(figures)} figures to {figures_dir}")
    return figures


@task(cache_key_fn=code_cache_key("mnist_models.report"), persist_result=True)
def render_report(table_paths: dict[str, str], figure_paths: dict[str, str], input_hashes: dict[str, str],
                  settings: dict, report_dir: str) -> dict[str, str]:
    """Write report.md and a self-contained report.html, and publish the report as a Prefect artifact."""
    from mnist_models import report

    context = report.ReportContext(
        tables={name: pd.read_parquet(path) for name, path in table_paths.items()},
        figures={name: Path(path) for name, path in figure_paths.items()},
        settings=settings,
        generated_at=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
    )
    Path(report_dir).mkdir(parents=True, exist_ok=True)
    written = report.write_report(context, Path(report_dir))
    create_markdown_artifact(key="study-report", markdown=written["markdown"].read_text(),
                             description="The MNIST study, regenerated from this run")
    return {kind: str(path) for kind, path in written.items()}


def file_hashes(paths: dict[str, str]) -> dict[str, str]:
    """Content hash of each file, so a stage re-renders only when its inputs' bytes changed."""
    return {name: sha256_file(path) for name, path in sorted(paths.items())}
