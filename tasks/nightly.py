"""Nightly tasks: the noise-aware gate against each champion, the history, promotion and pruning."""

from __future__ import annotations

import shutil

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from mnist_models import nightly, outputs, replicates, tables
from mnist_models.evaluation import correct_vector, representative_runs, sweep_runs
from mnist_models.io import atomic_path
from mnist_models.layout import ArtifactsLayout
from mnist_models.records import ChampionDecision

# The history table's gate columns, as the outputs registry declares them.
GATE_COLUMNS = [column for column in outputs.TABLES["history"].columns if column not in nightly.HISTORY_COLUMNS]


def _verdict(decision: replicates.GateDecision) -> str:
    if decision.champion_accuracy is None:
        return "first champion"
    if decision.promoted:
        return "promoted"
    if decision.regressed:
        return "regressed"
    return "kept (drop within noise)" if decision.warning else "kept"


def _champion_predictions(layout: ArtifactsLayout, model: str):
    return layout.champions_dir / f"{model}.predictions.parquet"


@task
def gate_champions(layout: ArtifactsLayout, date: str, flow_run_id: str, tolerance: float,
                   alpha: float) -> list[ChampionDecision]:
    """Per model, test tonight's representative run against its champion on the same test images; promote,
    keep or fail; write tonight's history rows with each decision; publish the decisions."""
    logger = get_run_logger()
    summary = sweep_runs(pd.read_parquet(layout.table("summary")["parquet"]))
    path = layout.table("history")["parquet"]
    existing = pd.read_parquet(path) if path.exists() else None
    past = existing[existing["date"] != date] if existing is not None else None
    rows = nightly.history_rows(summary, pd.Timestamp(date).date(), flow_run_id)
    for column in GATE_COLUMNS:
        rows[column] = None
    decisions, by_id = [], summary.set_index("run_id")
    for model, run_id in representative_runs(summary).items():
        folder = layout.run(run_id)
        champion = nightly.read_champion(layout.champions_dir, model)
        stored = _champion_predictions(layout, model)
        run = by_id.loc[run_id]
        rate = float(run["learning_rate"])
        history = [] if past is None else past.loc[
            (past["model"] == model) & (past["learning_rate"] == rate), "accuracy"].tolist()
        decision = replicates.gate(model, correct_vector(folder.predictions),
                                   correct_vector(stored) if champion and stored.exists() else None,
                                   history, tolerance, alpha)
        if decision.promoted:
            nightly.promote(layout.champions_dir, model, folder.model, folder.manifest, {
                "accuracy": decision.accuracy, "run_id": run_id, "learning_rate": rate,
                "seed": int(run["seed"])})
            with atomic_path(stored) as temporary:
                shutil.copyfile(folder.predictions, temporary)
        logger.info(decision.message)
        mask = rows["run_id"] == run_id
        rows.loc[mask, GATE_COLUMNS] = [_verdict(decision), decision.champion_accuracy, decision.p_value,
                                        decision.history_mean, decision.history_std, decision.message]
        decisions.append(ChampionDecision(model=model, new_accuracy=decision.accuracy,
                                          champion_accuracy=decision.champion_accuracy, promoted=decision.promoted,
                                          regressed=decision.regressed, warning=decision.warning,
                                          p_value=decision.p_value, message=decision.message))
    _write_history(layout, nightly.append_history(existing, rows.astype({"champion_accuracy": float,
                                                                           "p_value": float, "history_mean": float,
                                                                           "history_std": float})))
    create_markdown_artifact(key="nightly-gate", description="Tonight's champion decisions",
                             markdown="\n".join(f"- {decision.message}" for decision in decisions))
    return decisions


def _write_history(layout: ArtifactsLayout, history: pd.DataFrame) -> None:
    from mnist_models import plots

    tables.write_table(history, layout.tables_dir, "history")
    plots.save_figure(plots.plot_history(history), layout.figure("history"))
    get_run_logger().info(f"history now holds {len(history)} rows over {history['date'].nunique()} night(s)")


@task
def prune_old_runs(layout: ArtifactsLayout, keep_nights: int, planned: list[str]) -> None:
    """Delete run folders that no champion, none of the last `keep_nights` nights and no current plan uses."""
    history = pd.read_parquet(layout.table("history")["parquet"])
    keep = (nightly.champion_run_ids(layout.champions_dir) | nightly.recent_run_ids(history, keep_nights)
            | set(planned))
    get_run_logger().info(nightly.prune_runs(layout.runs_dir, keep).describe())
