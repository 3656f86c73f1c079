"""The study's stages, declared once for the stage engine (mnist_models.engine): train, evaluate, tables,
figures, the nightly gate and the report, each with what it reads, its key and how it runs.

Also the cache_decisions table and the Prefect artifacts, which every run publishes, reused or not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from prefect import get_run_logger

from mnist_models import outputs, planning, tables
from mnist_models.config import StudyConfig
from mnist_models.engine import STUDY, Engine, Produced, Stage, Upstream
from mnist_models.evaluation import StudyRuns
from mnist_models.hashing import file_sha256
from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import (ANALYSIS_LIBRARIES, FIGURE_LIBRARIES, REPORT_LIBRARIES, StageKey, code_closure,
                                     digest, library_versions, package_files)
from mnist_models.records import EvaluatedRun, FailedRun, PlannedRun, PreparedData, Scores, StudyResult
from mnist_models.run_records import RunRecords, spec_key
from mnist_models.table_builders import failures_frame
from mnist_models.runs import read_manifest, trained_run
from tasks.caching import decisions_table, write_decisions
from tasks.evaluation import evaluate_model, model_hash
from tasks.figures import render_figures
from tasks.nightly import gate_champions, prune_old_runs
from tasks.report import render_report
from tasks.publishing import publish_artifacts
from tasks.study_tables import write_study_tables
from tasks.training import train_model


@dataclass(frozen=True)
class StudyGraph:
    """One study run's stages over its planned runs: what the engine walks, and the result they add up to."""

    config: StudyConfig
    layout: ArtifactsLayout
    data: PreparedData
    planned: tuple[PlannedRun, ...]
    engine: Engine
    night: str | None = None  # a nightly run: tonight's date and the flow run's id, for the gate
    flow_run_id: str | None = None
    dask_cores: tuple[int, ...] = ()  # the cores each Dask worker lent to training when the study was planned

    @property
    def by_id(self) -> dict[str, PlannedRun]:
        return {run.run_id: run for run in self.planned}

    def stages(self) -> list[Stage]:
        """The stages, in the order they run; the nightly gate only on a nightly run."""
        layout, data, by_id = self.layout, self.data, self.by_id
        ids = [run.run_id for run in self.planned]
        records = RunRecords(layout)
        costs = planning.epoch_costs(layout)

        def written(run_id: str) -> Produced | None:  # a run of a failed lineage whose folder was complete
            manifest = read_manifest(layout.run(run_id))
            return Produced(trained_run(by_id[run_id].spec, manifest)) if manifest else None

        train = Stage(
            name="train", store="runs", items=lambda upstream: ids,
            key=lambda run_id, upstream: spec_key(by_id[run_id].spec),
            units=lambda pending, upstream: [[run.run_id for run in job] for job in
                                             planning.lineage_jobs([by_id[run_id] for run_id in pending], costs)],
            run=lambda unit, upstream: {trained.spec.run_id: Produced(trained) for trained in train_model(
                [by_id[run_id].spec for run_id in unit], data, layout, resume="train" not in self.engine.refresh)},
            load=lambda run_id, manifest: trained_run(by_id[run_id].spec, manifest),
            salvage=written, predecessor=lambda run_id, key: records.predecessor(run_id, key, by_id[run_id].spec))
        evaluate = Stage(
            name="evaluate", upstream=("train",), items=lambda upstream: ids,
            reads=lambda run_id: [("train", run_id)],
            key=lambda run_id, upstream: evaluation_key(run_id, data, layout),
            run=lambda unit, upstream: {run_id: Produced(evaluate_model(upstream["train"][run_id], data, layout),
                                                         [layout.run(run_id).predictions]) for run_id in unit},
            load=lambda run_id, stored: Scores.model_validate(stored))
        def study_items(upstream: Upstream) -> tuple[str, ...]:  # none when every planned run failed
            return () if len(self.engine.failures.get("evaluate", {})) == len(ids) else (STUDY,)

        tables_stage = Stage(
            name="tables", upstream=("train", "evaluate"), items=study_items,
            key=lambda item, upstream: _runs_key(self.study_runs(upstream), code_closure("tasks.study_tables"),
                                                 ANALYSIS_LIBRARIES),
            run=lambda unit, upstream: {STUDY: _written(layout, write_study_tables(self.study_runs(upstream)),
                                                        lambda path: layout.table(path.stem).values())},
            load=lambda item, stored: {name: layout.absolute(path) for name, path in stored.items()})
        figures = Stage(
            name="figures", upstream=("train", "evaluate"), items=study_items,
            key=lambda item, upstream: _runs_key(self.study_runs(upstream), code_closure("tasks.figures"),
                                                 FIGURE_LIBRARIES),
            run=lambda unit, upstream: {STUDY: _written(layout, render_figures(self.study_runs(upstream)),
                                                        lambda path: [path])},
            load=lambda item, stored: {name: layout.absolute(path) for name, path in stored.items()})
        gate = Stage(  # tonight's history and champions: not a cached result, a decision made every night
            name="champions", upstream=("tables",), items=study_items, cached=False,
            key=lambda item, upstream: StageKey(),
            run=lambda unit, upstream: {STUDY: Produced(self.nightly_gate())})
        report = Stage(
            name="report", upstream=("tables", "figures", *(("champions",) if self.night else ())),
            items=study_items, key=lambda item, upstream: self.report_key(upstream),
            run=lambda unit, upstream: {STUDY: _written(layout, render_report(
                layout, self.report_tables(upstream), self.report_figures(upstream), self.config.report_settings(),
                decisions_table(self.engine)), lambda path: [path])},
            load=lambda item, stored: {kind: layout.absolute(path) for kind, path in stored.items()})
        return [train, evaluate, tables_stage, figures, *([gate] if self.night else []), report]

    # ------------------------------------------------------------------ what the stages read

    def evaluated(self, upstream: Upstream) -> list[EvaluatedRun]:
        """The runs with a model and scores, in the order the tables list them."""
        trained, scores = upstream.get("train", {}), upstream.get("evaluate", {})
        runs = [EvaluatedRun(trained=trained[run.run_id], scores=scores[run.run_id], roles=run.roles)
                for run in self.planned if run.run_id in scores and run.run_id in trained]
        return planning.study_order(runs, self.config.model_order)

    def failures(self) -> list[FailedRun]:
        """The planned runs with no result, each with its cause (training's, else evaluation's)."""
        train, evaluate = self.engine.failures.get("train", {}), self.engine.failures.get("evaluate", {})
        return [FailedRun.of(run, train.get(run.run_id) or f"evaluation: {evaluate[run.run_id]}")
                for run in self.planned if run.run_id in train or run.run_id in evaluate]

    def study_runs(self, upstream: Upstream) -> StudyRuns:
        runs = self.evaluated(upstream)
        models = {run.model for run in runs}
        return StudyRuns(tuple(runs), self.layout, tuple(model for model in self.config.model_order if model in models),
                         tuple(self.failures()))

    def nightly_gate(self) -> list:
        decisions = gate_champions(self.layout, self.data, self.night, self.flow_run_id,
                                   self.config.regression_tolerance, self.config.significance_level)
        prune_old_runs(self.layout, self.config.keep_nights, [run.run_id for run in self.planned])
        return decisions

    def report_tables(self, upstream: Upstream) -> list[str]:
        return ["dataset_facts", *upstream["tables"][STUDY], *(["history"] if self.night else [])]

    def report_figures(self, upstream: Upstream) -> dict:
        figures = {"first_25_images": self.layout.figure("first_25_images"), **upstream["figures"][STUDY]}
        if self.night and self.layout.figure("history").exists():
            figures["history"] = self.layout.figure("history")
        return figures

    def report_key(self, upstream: Upstream) -> StageKey:
        """The report reads the tables and figures on disk: its key is their content, its settings and its code."""
        layout, names = self.layout, self.report_tables(upstream)
        inputs = [*(layout.table(name)["parquet"] for name in names), *self.report_figures(upstream).values()]
        return StageKey(parameters={"settings": self.config.report_settings(), "tables": names},
                        inputs={layout.relative(path).as_posix(): file_sha256(path) if path.exists() else "missing"
                                for path in inputs},
                        code={**code_closure("tasks.report"),
                              **package_files("mnist_models", "templates/*.j2", "report.css")},
                        versions=library_versions(REPORT_LIBRARIES))

    def result(self, outcomes: Mapping) -> StudyResult:
        """What the stages produced, as the flow returns it."""
        upstream = {name: outcome.results for name, outcome in outcomes.items()}
        layout = self.layout
        result = StudyResult(artifacts_dir=layout.root, planned=len(self.planned), runs=tuple(self.evaluated(upstream)),
                             failures=tuple(self.failures()))
        if not upstream.get("report"):
            return result
        relative = lambda paths: {name: layout.relative(path) for name, path in paths.items()}  # noqa: E731
        return result.model_copy(update={
            "tables": relative({"dataset_facts": layout.table("dataset_facts")["parquet"], **upstream["tables"][STUDY]}),
            "figures": relative(self.report_figures(upstream)), "report": relative(upstream["report"][STUDY]),
            "champions": tuple(upstream.get("champions", {}).get(STUDY, ()))})


def evaluation_key(run_id: str, data: PreparedData, layout: ArtifactsLayout) -> StageKey:
    """An evaluation depends on the model file's bytes, the test split and the evaluation code; not on roles."""
    return StageKey(inputs={"model": model_hash(layout.run(run_id)), "data": data.test_hash},
                    code=code_closure("tasks.evaluation"), versions=library_versions(ANALYSIS_LIBRARIES))


def _runs_key(study: StudyRuns, code: dict[str, str], libraries: Sequence[str]) -> StageKey:
    return StageKey(parameters={"models": list(study.models),
                                "failures": [failure.model_dump(mode="json") for failure in study.failures]},
                    inputs={run.run_id: digest(run.model_dump(mode="json")) for run in study.runs},
                    code=code, versions=library_versions(libraries))


def _written(layout: ArtifactsLayout, paths: dict, files_of) -> Produced:
    """A stage's result (name -> path relative to the root, for its record) and every file it wrote."""
    return Produced({name: layout.relative(path) for name, path in paths.items()},
                    [file for path in paths.values() for file in files_of(path)])


def publish(layout: ArtifactsLayout, engine: Engine) -> None:
    """Write this run's cache_decisions table and publish every table and the report as Prefect artifacts."""
    decisions = write_decisions(engine, layout.tables_dir)
    reused = int((decisions["action"] == "reused").sum())
    get_run_logger().info(f"cache: {reused} reused, {len(decisions) - reused} recomputed "
                          f"(tables/cache_decisions.md says why)")
    names = [name for name in outputs.TABLES if layout.table(name)["parquet"].exists()]
    publish_artifacts(layout, names)


def publish_failure(layout: ArtifactsLayout, engine: Engine, result: StudyResult) -> None:
    """When no run has a result: write the failures and cache_decisions tables and publish only what is true now.

    The tables and report on disk are an earlier run's; publishing them as this run's artifacts would
    report results this run did not produce.
    """
    from prefect.artifacts import create_markdown_artifact

    write_decisions(engine, layout.tables_dir)
    tables.write_table(failures_frame(result.failures), layout.tables_dir, "failures")
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
