"""Training task: one Prefect task run per planned run (a model x learning-rate cell, or a gradient run)."""

from __future__ import annotations

from prefect import get_run_logger, task

from mnist_models import training as training_lib
from mnist_models.layout import ArtifactsLayout
from mnist_models.records import PreparedData, RunSpec, TrainedRun


@task(task_run_name="train {spec.model} lr={spec.learning_rate} e={spec.epochs}")
def train_model(spec: RunSpec, data: PreparedData, layout: ArtifactsLayout, threads: int | None = None) -> TrainedRun:
    """Train one run into its run folder (written atomically, the manifest last) and return its record."""
    logger = get_run_logger()
    logger.info(f"{spec.run_id}: training {spec.model} at learning rate {spec.learning_rate:g} "
                f"for {spec.epochs} epoch(s) on {threads or 'all'} thread(s)")
    return training_lib.train_run(spec, layout.absolute(data.train), layout.absolute(data.test),
                                  layout.run(spec.run_id), threads=threads, log=logger.info)
