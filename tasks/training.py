"""Training task: one Prefect task run per model x learning rate (and per gradient-experiment run)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from mnist_models import training as training_lib
from mnist_models.training import RunSpec
from tasks.caching import code_cache_key


@task(
    task_run_name="train {spec.model} lr={spec.learning_rate} e={spec.epochs}",
    cache_key_fn=code_cache_key(training_lib, ignore=("threads",)),
    persist_result=True,
)
def train_model(spec: RunSpec, train_path: str, test_path: str, runs_dir: str, threads: int | None = None) -> dict:
    """Train one run into runs_dir/<run-id>/ and return its small record (paths and final metrics)."""
    logger = get_run_logger()
    run_dir = Path(runs_dir) / spec.run_id
    logger.info(f"{spec.run_id}: training {spec.model} at learning rate {spec.learning_rate:g} "
                f"for {spec.epochs} epoch(s) on {threads or 'all'} thread(s)")
    manifest = training_lib.train_run(spec, train_path, test_path, run_dir, threads=threads, log=logger.info)
    return {
        "run_id": spec.run_id,
        "run_dir": str(run_dir),
        "model": spec.model,
        "learning_rate": spec.learning_rate,
        "epochs": spec.epochs,
        "seed": spec.seed,
        "parameters": manifest["trainable_parameters"],
        "train_seconds": manifest["wall_seconds"],
        "val_accuracy": manifest["final_metrics"]["val_accuracy"],
    }
