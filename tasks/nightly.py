"""Nightly tasks: the noise-aware gate against each champion, promotion, the history, and retention."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from mnist_models import champions, nightly, outputs, retention, tables
from mnist_models import evaluation as evaluation_lib
from mnist_models.evaluation import correct_vector
from mnist_models.isolation import run_isolated
from mnist_models.layout import ArtifactsLayout, RunFolder
from mnist_models.records import ChampionDecision, PreparedData
from mnist_models.table_builders import representative_runs, sweep_runs
from tasks.evaluation import prediction_stamp

# The history table's gate columns, as the outputs registry declares them.
GATE_COLUMNS = [column for column in outputs.TABLES["history"].columns if column not in nightly.HISTORY_COLUMNS]


@task
def gate_champions(layout: ArtifactsLayout, data: PreparedData, date: str, flow_run_id: str, tolerance: float,
                   alpha: float) -> list[ChampionDecision]:
    """Record every run tonight used; per model, test tonight's representative run against its champion and the
    past nights; promote, keep or fail; write the history and promotions tables; publish the decisions."""
    logger = get_run_logger()
    night = dt.date.fromisoformat(date)
    summary = pd.read_parquet(layout.table("summary")["parquet"])
    retention.record_night(layout.nights_dir, night, flow_run_id, summary["run_id"])  # before anything can fail
    path = layout.table("history")["parquet"]
    existing = pd.read_parquet(path) if path.exists() else None
    rows = nightly.history_rows(sweep_runs(summary), night, flow_run_id)
    for column in GATE_COLUMNS:
        rows[column] = None
    decisions, by_id = [], summary.set_index("run_id")
    for model, run_id in representative_runs(summary).items():
        decision = _decide(layout, data, by_id.loc[run_id], run_id, existing, night, flow_run_id, tolerance, alpha)
        logger.info(decision.message)
        rows.loc[rows["run_id"] == run_id, GATE_COLUMNS] = [_gate_cell(decision, column) for column in GATE_COLUMNS]
        decisions.append(decision)
    _write_history(layout, nightly.append_history(existing, rows.astype(_GATE_TYPES)))
    tables.write_table(champions.promotions_table(layout.champions_dir), layout.tables_dir, "promotions")
    create_markdown_artifact(key="nightly-gate", description="Tonight's champion decisions",
                             markdown="\n".join(f"- {decision.message}" for decision in decisions))
    return decisions


_GATE_TYPES = {"champion_accuracy": float, "p_value": float, "history_mean": float, "history_std": float,
               "interval_low": float, "champion_bound": float, "nights": "Int64", "champion_version": "Int64"}


def _gate_cell(decision: ChampionDecision, column: str) -> object:
    return decision.verdict if column == "decision" else getattr(decision, column)


def _decide(layout: ArtifactsLayout, data: PreparedData, run: pd.Series, run_id: str, existing: pd.DataFrame | None,
            night: dt.date, flow_run_id: str, tolerance: float, alpha: float) -> ChampionDecision:
    """The gate's decision on one model's run tonight; a promotion is made before this returns."""
    model, folder = str(run["model"]), layout.run(run_id)
    past = nightly.past_accuracies(existing, model, float(run["learning_rate"]), int(run["epochs"]), before=night)
    champion = champions.current_champion(layout.champions_dir, model)
    if champion is None:
        decision = nightly.gate(model, correct_vector(folder.predictions), None, past.tolist(), tolerance, alpha)
    else:
        champions.check_comparable(champion, data)
        baseline = champions.baseline_correct(layout.champions_dir, champion, data.test_hash,
                                            _repredict(layout, data, champion))
        since = int((past.index > champion.date).sum())
        decision = nightly.gate(model, correct_vector(folder.predictions), baseline, past.tolist(), tolerance,
                                   alpha, nights_since_champion=since)
    decision = decision.model_copy(update={"run_id": run_id,
                                           "champion_version": champion.version if champion else None})
    if not decision.promoted:
        return decision
    version = champions.promote(layout.champions_dir, model, folder, accuracy=decision.new_accuracy,
                              dataset=data.dataset, test_hash=data.test_hash, date=night,
                              reason=nightly.promotion_reason(decision), flow_run_id=flow_run_id)
    return decision.model_copy(update={"message": f"{decision.message}; promoted as {version.label}"})


def _repredict(layout: ArtifactsLayout, data: PreparedData, champion: champions.ChampionVersion):
    """Predict the test split again from a champion version's own model, in a child process (TensorFlow)."""
    def predict(folder: RunFolder) -> None:
        get_run_logger().info(f"{champion.model}: champion {champion.label}'s predictions are missing or stale; "
                              f"predicting the test split again from {folder.model}")
        run_isolated(evaluation_lib.evaluate_run, folder, layout.absolute(data.test),
                     stamp={**prediction_stamp(data), "model": champion.model_sha256}, log=get_run_logger().info)
    return predict


def _write_history(layout: ArtifactsLayout, history: pd.DataFrame) -> None:
    from mnist_models.plots.history import plot_history
    from mnist_models.plots.saving import save_figure

    tables.write_table(history, layout.tables_dir, "history")
    save_figure(plot_history(history), layout.figure("history"))
    get_run_logger().info(f"history now holds {len(history)} rows over {history['date'].nunique()} night(s)")


@task
def prune_old_runs(layout: ArtifactsLayout, keep_nights: int, planned: list[str]) -> None:
    """Delete the run folders that no champion, none of the last `keep_nights` nights (every flow run of each
    date) and no current plan uses; only folders with a valid manifest are ever deleted."""
    path = layout.table("history")["parquet"]
    history = pd.read_parquet(path) if path.exists() else None
    keep = (champions.champion_run_ids(layout.champions_dir)
            | retention.kept_run_ids(retention.read_nights(layout.nights_dir), keep_nights)
            | retention.recent_run_ids(history, keep_nights)  # nights from before the night records
            | set(planned))
    get_run_logger().info(retention.prune_runs(layout.runs_dir, keep).describe())
