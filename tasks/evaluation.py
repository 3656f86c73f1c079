"""Evaluation task: score a trained run on the test split (in a child process) and keep its predictions."""

from __future__ import annotations

from prefect import get_run_logger, task

from mnist_models import evaluation as evaluation_lib
from mnist_models.isolation import run_isolated
from mnist_models.layout import ArtifactsLayout
from mnist_models.placement import slot_environment
from mnist_models.records import PreparedData, Scores, TrainedRun


@task(task_run_name="evaluate {trained.spec.model} lr={trained.spec.learning_rate} e={trained.spec.epochs}",
      retries=1, retry_delay_seconds=1)
def evaluate_model(trained: TrainedRun, data: PreparedData, layout: ArtifactsLayout, gpu: int | None = None) -> Scores:
    """Score a trained run on the test split; write predictions.parquet into its folder; return its scores."""
    logger = get_run_logger()
    scores = run_isolated(evaluation_lib.evaluate_run, layout.run(trained.spec.run_id), layout.absolute(data.test),
                          log=logger.info, environment=slot_environment(gpu))
    logger.info(f"{trained.spec.run_id}: test accuracy {scores.accuracy:.4f} "
                f"[{scores.accuracy_low:.4f}, {scores.accuracy_high:.4f}], MAP {scores.map:.4f}")
    return scores
