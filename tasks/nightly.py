"""Nightly tasks: record tonight's accuracies in the history, and keep or replace each champion."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task

from mnist_models import nightly, tables
from mnist_models.evaluation import representative_runs, sweep_runs
from mnist_models.layout import ArtifactsLayout
from mnist_models.records import ChampionDecision, StudyResult


def _sweep_summary(layout: ArtifactsLayout) -> pd.DataFrame:
    return sweep_runs(pd.read_parquet(layout.table("summary")["parquet"]))


@task
def record_history(result: StudyResult, layout: ArtifactsLayout, date: str, flow_run_id: str) -> None:
    """Put tonight's rows in tables/history (a rerun of the same night replaces them); redraw figures/history.png."""
    from mnist_models import plots

    path = layout.table("history")["parquet"]
    existing = pd.read_parquet(path) if path.exists() else None
    rows = nightly.history_rows(_sweep_summary(layout), pd.Timestamp(date).date(), flow_run_id)
    history = nightly.append_history(existing, rows)
    tables.write_table(history, layout.tables_dir, "history")
    plots.save_figure(plots.plot_history(history), layout.figure("history"))
    get_run_logger().info(f"history now holds {len(history)} rows over {history['date'].nunique()} night(s)")


@task
def update_champions(result: StudyResult, layout: ArtifactsLayout, tolerance: float) -> list[ChampionDecision]:
    """Per model, promote tonight's representative run if at least as accurate as the champion; flag regressions."""
    logger = get_run_logger()
    runs = {run.run_id: run for run in result.runs}
    decisions = []
    for model, run_id in representative_runs(_sweep_summary(layout)).items():
        run = runs[run_id]
        champion = nightly.read_champion(layout.champions_dir, model)
        decision = nightly.decide(model, run.scores.accuracy, champion["accuracy"] if champion else None, tolerance)
        if decision.promoted:
            folder = layout.run(run_id)
            nightly.promote(layout.champions_dir, model, folder.model, folder.manifest, {
                "accuracy": run.scores.accuracy, "run_id": run_id, "learning_rate": run.learning_rate,
                "seed": run.spec.seed})
        message = decision.describe(tolerance)
        logger.info(message)
        decisions.append(ChampionDecision(model=model, new_accuracy=decision.new_accuracy,
                                          champion_accuracy=decision.champion_accuracy, promoted=decision.promoted,
                                          regressed=decision.regressed, message=message))
    return decisions


@task
def prune_old_runs(layout: ArtifactsLayout, keep_nights: int, planned: list[str]) -> None:
    """Delete run folders that no champion, none of the last `keep_nights` nights and no current plan uses."""
    history = pd.read_parquet(layout.table("history")["parquet"])
    keep = (nightly.champion_run_ids(layout.champions_dir) | nightly.recent_run_ids(history, keep_nights)
            | set(planned))
    get_run_logger().info(nightly.prune_runs(layout.runs_dir, keep).describe())
