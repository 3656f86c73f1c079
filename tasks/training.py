"""Training task: one Prefect task run per planned run, trained in a child process of its own."""

from __future__ import annotations

from prefect import get_run_logger, task

from mnist_models import training as training_lib
from mnist_models.isolation import run_isolated
from mnist_models.layout import ArtifactsLayout
from mnist_models.locking import run_lock
from mnist_models.records import PreparedData, RunSpec, TrainedRun


@task(task_run_name="train {spec.model} lr={spec.learning_rate} e={spec.epochs}", retries=1, retry_delay_seconds=1)
def train_model(spec: RunSpec, data: PreparedData, layout: ArtifactsLayout, threads: int | None = None) -> TrainedRun:
    """Train one run into its run folder (written atomically, the manifest last) and return its record.

    The run folder is locked while it is written: a second flow (or Dask worker) planning the same
    run waits, then finds it finished and reuses it. A crash of the child process fails this task
    with its cause, and Prefect retries it once.
    """
    logger = get_run_logger()
    folder = layout.run(spec.run_id)
    with run_lock(folder.path):
        manifest = training_lib.read_manifest(folder)
        if manifest is not None:
            logger.info(f"{spec.run_id}: finished by another process meanwhile; reused")
            return training_lib.trained_run(spec, manifest)
        return run_isolated(
            training_lib.train_run, spec, layout.absolute(data.train), layout.absolute(data.test), folder,
            threads=threads, log=logger.info,
            on_start=lambda pid: logger.info(f"{spec.run_id}: training {spec.model} at learning rate "
                                             f"{spec.learning_rate:g} for {spec.epochs} epoch(s) on "
                                             f"{threads or 'all'} thread(s), in process {pid}"))
