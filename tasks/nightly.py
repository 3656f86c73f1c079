"""Nightly tasks: append tonight's accuracies to the history, and keep or replace each champion."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task

from mnist_models import nightly, tables
from mnist_models.evaluation import representative_runs


@task
def record_history(evaluations: list[dict], tables_dir: str, figures_dir: str, date: str, flow_run_id: str) -> str:
    """Append tonight's rows to tables/history and redraw figures/history.png."""
    from mnist_models import plots

    path = Path(tables_dir) / "history.parquet"
    existing = pd.read_parquet(path) if path.exists() else None
    history = nightly.append_history(existing, nightly.history_rows(evaluations, pd.Timestamp(date).date(), flow_run_id))
    tables.write_table(history, tables_dir, "history")
    plots.save_figure(plots.plot_history(history), Path(figures_dir) / "history.png")
    get_run_logger().info(f"history now holds {len(history)} rows over {history['date'].nunique()} night(s)")
    return str(path)


@task
def update_champions(evaluations: list[dict], champions_dir: str, tolerance: float) -> list[dict]:
    """Per model, promote tonight's run if at least as accurate as the champion; report regressions."""
    logger = get_run_logger()
    decisions = []
    for model, run in representative_runs(evaluations).items():
        champion = nightly.read_champion(champions_dir, model)
        decision = nightly.decide(model, run["accuracy"], champion["accuracy"] if champion else None, tolerance)
        if decision.promoted:
            nightly.promote(champions_dir, run)
        logger.info(decision.describe(tolerance))
        decisions.append({**decision.__dict__, "message": decision.describe(tolerance)})
    return decisions
