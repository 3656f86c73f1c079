"""Training task: one Prefect task run per lineage (runs equal but for their epochs), in a child process."""

from __future__ import annotations

import functools
import os
import socket

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from mnist_models import runs
from mnist_models import training as training_lib
from mnist_models.planning import run_spec
from mnist_models.provenance import key_change
from mnist_models.run_records import spec_key
from mnist_models.isolation import run_isolated, worker_for
from mnist_models.layout import ArtifactsLayout
from mnist_models.locking import run_lock
from mnist_models.placement import slot_environment
from mnist_models.prediction import KeepPredictions
from mnist_models.records import PreparedData, RunSpec, TrainedRun
from tasks.evaluation import prediction_stamp


@task(task_run_name="train {specs[0].model} lr={specs[0].learning_rate} s={specs[0].seed}", retries=1,
      retry_delay_seconds=1)
def train_model(specs: list[RunSpec], data: PreparedData, layout: ArtifactsLayout, resume: bool = True,
                gpu: int | None = None, stall_seconds: float | None = None) -> list[TrainedRun]:
    """Train one lineage once, writing each run's folder when it reaches its epochs; return their records.

    The lineage is locked while it trains: a second flow (or Dask worker) planning the same runs
    waits, then finds them finished and reuses them. Training continues from the furthest finished
    run or checkpoint of the lineage (`resume`). A crash of the child process fails this task with
    its cause, and Prefect retries it once, from the last checkpoint; so does a child that reports no
    progress for `stall_seconds` (it is killed as hung). On a GPU machine the child sees only GPU `gpu`,
    with memory growth on. The child trains on the thread count of the specs, which their key holds.
    """
    logger = get_run_logger()
    check_code_identity(specs[0])
    with run_lock(runs.checkpoints_of(layout.runs_dir, specs[0])):
        finished = {spec.run_id: runs.read_manifest(layout.run(spec.run_id)) for spec in specs}
        if resume and all(finished.values()):
            logger.info(f"{', '.join(finished)}: finished by another process meanwhile; reused")
            return [runs.trained_run(spec, finished[spec.run_id]) for spec in specs]
        epochs = "+".join(str(spec.epochs) for spec in specs)
        # On CPU, each worker thread keeps one training process for lineage after lineage (TensorFlow is
        # imported once) while their thread count is the same (TensorFlow sets it once per process); a GPU
        # slot's lineage gets a process of its own, which frees its GPU memory after.
        generation = f"{flow_run.get_id()} on {specs[0].threads} thread(s)"
        call = (worker_for(generation=generation).call if gpu is None
                else functools.partial(run_isolated, environment=slot_environment(gpu)))
        return call(
            training_lib.train_lineage, specs, layout.absolute(data.train), layout.absolute(data.test),
            {spec.run_id: layout.run(spec.run_id) for spec in specs}, resume=resume,
            after_run=KeepPredictions(prediction_stamp(data)), log=logger.info, stall_seconds=stall_seconds,
            on_start=lambda pid: logger.info(
                f"{specs[-1].run_id}: training {specs[0].model} at learning rate {specs[0].learning_rate:g} to "
                f"epoch(s) {epochs} on {specs[0].threads} thread(s){'' if gpu is None else f' and GPU {gpu}'}, "
                f"in process {pid}"))


class CodeMismatchError(RuntimeError):
    """This process would train with other code, libraries or numerics settings than the flow planned the run with."""


def check_code_identity(spec: RunSpec) -> None:
    """Refuse to train where the code on disk, the libraries or the numerics environment differ from the spec's.

    The flow keys a run by the files on its own disk; a Dask worker started from another checkout or
    environment would store results under a key its code did not have. The training process is started
    afresh from this process's disk, so what this process reads is what would run.
    """
    here = run_spec(spec.model, spec.learning_rate, spec.epochs, spec.batch_size, spec.seed, spec.train_subset,
                    spec.dataset, spec.data_hash, spec.threads, os.environ)
    if here.run_id != spec.run_id:
        difference = key_change(spec_key(spec), spec_key(here)) or "run ids differ"
        raise CodeMismatchError(
            f"{_this_worker()} has other code than the flow planned {spec.run_id} with: {difference}; "
            "start the worker from the flow's checkout and environment")


def _this_worker() -> str:
    """The Dask worker this task runs on (name and address), else this process and host."""
    try:
        from distributed import get_worker

        worker = get_worker()
        return f"Dask worker {worker.name!r} at {worker.address}"
    except (ImportError, ValueError):
        return f"process {os.getpid()} on {socket.gethostname()}"
