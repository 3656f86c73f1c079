"""The study's stages after training, each reused or recomputed by its key: evaluation, tables, figures, report.

Also the cache_decisions table and the Prefect artifacts, which every run publishes, reused or not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
from prefect import get_run_logger

from mnist_models import evaluation as evaluation_lib
from mnist_models import outputs, tables
from mnist_models.config import StudyConfig
from mnist_models.evaluation import StudyRuns
from mnist_models.io import file_sha256
from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import (ANALYSIS_LIBRARIES, FIGURE_LIBRARIES, REPORT_LIBRARIES, Decision, StageKey,
                                     code_closure, digest, library_versions, package_files)
from mnist_models.records import (EvaluatedRun, FailedRun, PlannedRun, PreparedData, RunOutcome, Scores, StudyResult,
                                  TrainedRun)
from mnist_models.training import read_manifest, trained_run
from tasks.caching import Ledger, decisions_table, write_decisions
from tasks.evaluation import model_hash
from tasks.figures import render_figures
from tasks.report import render_report
from tasks.reporting import publish_artifacts, write_study_tables

def reused_training(run: PlannedRun, layout: ArtifactsLayout) -> TrainedRun:
    """The record of a run whose folder was verified complete."""
    return trained_run(run.spec, read_manifest(layout.run(run.run_id)))


def evaluation_key(run_id: str, data: PreparedData, layout: ArtifactsLayout) -> StageKey:
    """An evaluation depends on the model file's bytes, the test split and the evaluation code; not on roles."""
    return StageKey(inputs={"model": model_hash(layout.run(run_id)), "data": data.test_hash},
                    code=code_closure("tasks.evaluation"), versions=library_versions(ANALYSIS_LIBRARIES))


def stored_scores(planned: Sequence[PlannedRun], to_train: Sequence[str], data: PreparedData,
                  layout: ArtifactsLayout, ledger: Ledger) -> dict[str, Scores]:
    """Scores of the runs kept as they are whose evaluation can be reused (each decision logged)."""
    scores = {}
    for run in planned:
        if run.run_id in to_train:
            continue
        decision, stored = ledger.decide("evaluate", run.run_id, evaluation_key(run.run_id, data, layout))
        if decision.action == "reused":
            scores[run.run_id] = Scores.model_validate(stored)
        ledger.record(decision)
    return scores


def collect(planned: Sequence[PlannedRun], outcomes: Sequence[RunOutcome], scores: dict[str, Scores],
            data: PreparedData, layout: ArtifactsLayout, ledger: Ledger) -> tuple[list[EvaluatedRun], list[FailedRun]]:
    """Evaluated runs with their roles, and the failed runs with their causes; new evaluations are stored."""
    by_id = {run.run_id: run for run in planned}
    evaluated, failures = [], []
    for outcome in outcomes:
        if outcome.failure:
            failures.append(FailedRun.of(by_id[outcome.run_id], outcome.failure))
            continue
        if outcome.scores is not None:
            key = evaluation_key(outcome.run_id, data, layout)
            if not ledger.has_decided("evaluate", outcome.run_id):
                ledger.record(Decision(stage="evaluate", item=outcome.run_id, action="recomputed",
                                       reason="run trained in this study run"))
            ledger.save("evaluate", outcome.run_id, key, [layout.run(outcome.run_id).predictions],
                        outcome.scores.model_dump(mode="json"))
        run_scores = outcome.scores or scores[outcome.run_id]
        evaluated.append(EvaluatedRun(trained=outcome.trained, scores=run_scores, roles=by_id[outcome.run_id].roles))
    return evaluated, failures


def _runs_key(study: StudyRuns, code: dict[str, str], libraries: Sequence[str]) -> StageKey:
    return StageKey(parameters={"models": list(study.models),
                                "failures": [failure.model_dump(mode="json") for failure in study.failures]},
                    inputs={run.run_id: digest(run.model_dump(mode="json")) for run in study.runs},
                    code=code, versions=library_versions(libraries))


def write_outputs(result: StudyResult, config: StudyConfig, layout: ArtifactsLayout, ledger: Ledger,
                  before_report: Callable[[], None] = lambda: None) -> StudyResult:
    """Tables, figures and report, each reused while its inputs, code and files are unchanged.

    `before_report` runs between the figures and the report (the nightly gate, whose history the report shows).
    """
    trained_models = {run.model for run in result.runs}
    study = StudyRuns(result.runs, layout, tuple(model for model in config.model_order if model in trained_models),
                      result.failures)
    table_paths = ledger.stage(
        "tables", "study", _runs_key(study, code_closure("tasks.reporting"), ANALYSIS_LIBRARIES),
        lambda: _written(layout, write_study_tables(study), lambda path: layout.table(path.stem).values()),
        lambda stored: {name: layout.absolute(path) for name, path in stored.items()})
    figure_paths = ledger.stage(
        "figures", "study", _runs_key(study, code_closure("tasks.figures"), FIGURE_LIBRARIES),
        lambda: _written(layout, render_figures(study), lambda path: [path]),
        lambda stored: {name: layout.absolute(path) for name, path in stored.items()})
    before_report()
    figure_paths = {"first_25_images": layout.figure("first_25_images"), **figure_paths}
    if layout.figure("history").exists() and config.nightly:
        figure_paths["history"] = layout.figure("history")
    table_names = ["dataset_facts", *table_paths, *(["history"] if config.nightly else [])]
    report_inputs = [*(layout.table(name)["parquet"] for name in table_names), *figure_paths.values()]
    report_key = StageKey(parameters={"settings": config.report_settings(), "tables": table_names},
                          inputs={layout.relative(path).as_posix(): file_sha256(path) if path.exists() else "missing"
                                  for path in report_inputs},
                          code={**code_closure("tasks.report"),
                                **package_files("mnist_models", "templates/*.j2", "report.css")},
                          versions=library_versions(REPORT_LIBRARIES))
    report_paths = ledger.stage(
        "report", "study", report_key,
        lambda: _written(layout, render_report(layout, table_names, figure_paths, config.report_settings(),
                                               decisions_table(ledger)),
                         lambda path: [path]),
        lambda stored: {kind: layout.absolute(path) for kind, path in stored.items()})
    relative = lambda paths: {name: layout.relative(path) for name, path in paths.items()}  # noqa: E731
    return result.model_copy(update={"tables": relative({"dataset_facts": layout.table("dataset_facts")["parquet"],
                                                         **table_paths}),
                                     "figures": relative(figure_paths), "report": relative(report_paths)})


def _written(layout: ArtifactsLayout, paths: dict, files_of) -> tuple[dict, list]:
    """A stage's result (name -> path relative to the root, for its record) and every file it wrote."""
    return ({name: layout.relative(path) for name, path in paths.items()},
            [file for path in paths.values() for file in files_of(path)])



def publish(layout: ArtifactsLayout, ledger: Ledger) -> None:
    """Write this run's cache_decisions table and publish every table and the report as Prefect artifacts."""
    decisions = write_decisions(ledger, layout.tables_dir)
    reused = int((decisions["action"] == "reused").sum())
    get_run_logger().info(f"cache: {reused} reused, {len(decisions) - reused} recomputed "
                          f"(tables/cache_decisions.md says why)")
    names = [name for name in outputs.TABLES if layout.table(name)["parquet"].exists()]
    publish_artifacts(layout, names)


def publish_failure(layout: ArtifactsLayout, ledger: Ledger, result: StudyResult) -> None:
    """When no run has a result: write the failures and cache_decisions tables and publish only what is true now.

    The tables and report on disk are an earlier run's; publishing them as this run's artifacts would
    report results this run did not produce.
    """
    from prefect.artifacts import create_markdown_artifact

    write_decisions(ledger, layout.tables_dir)
    tables.write_table(evaluation_lib.failures_frame(result.failures), layout.tables_dir, "failures")
    lines = [f"# No result in this run\n\n{failure_message(result) or 'no run was planned'}\n",
             "The tables, figures and report on disk are from an earlier run; none was written by this one."]
    create_markdown_artifact(key="study-report", markdown="\n".join(lines),
                             description="This run produced no result: every planned run failed")


def failure_message(result: StudyResult) -> str:
    """Every problem of a study run in one message (a data failure, failed runs, a nightly regression), or ""."""
    parts = []
    if result.error:
        parts.append(result.error)
    if result.failures:
        parts.append(f"{len(result.failures)} of {result.planned} runs failed (the others are saved and reported; "
                     "rerun to retrain only the failed ones):\n  "
                     + "\n  ".join(failure.describe() for failure in result.failures))
    if result.regressions:
        parts.append("nightly regression gate failed (a significant drop); champions kept:\n  "
                     + "\n  ".join(result.regressions))
    return "\n".join(parts)


def summary_text(result: StudyResult) -> str:
    """Where the outputs are, and one line per run."""
    root = ArtifactsLayout.at(result.artifacts_dir)
    report = {kind: root.absolute(path) for kind, path in result.report.items()}
    lines = [f"\nReport:  {report.get('html', '-')}\n         {report.get('markdown', '-')}",
             f"Tables:  {root.tables_dir}\nFigures: {root.figures_dir}"]
    if result.runs:
        rows = [{"model": run.model, "learning_rate": run.learning_rate, "epochs": run.spec.epochs,
                 "accuracy": run.scores.accuracy, "accuracy_low": run.scores.accuracy_low,
                 "accuracy_high": run.scores.accuracy_high, "map": run.scores.map,
                 "roles": ",".join(sorted(run.roles))} for run in result.runs]
        lines.append("\n" + tables.to_markdown(pd.DataFrame(rows)))
    return "\n".join(lines)
