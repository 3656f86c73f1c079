"""Evaluation task: score each trained run on the test split, cached on its model file's content."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from mnist_models.io import sha256_file
from tasks.caching import source_hash


def _evaluation_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The model file's bytes + the test data + the evaluation code: a retrained model is re-scored."""
    digest = hashlib.sha256()
    digest.update(sha256_file(Path(parameters["training"]["run_dir"]) / "model.keras").encode())
    digest.update(parameters["test_hash"].encode())
    digest.update(source_hash(context.task.fn, "mnist_models.evaluation", "mnist_models.metrics").encode())
    return f"evaluate_model-{digest.hexdigest()[:32]}"


@task(task_run_name="evaluate {training[run_id]}", cache_key_fn=_evaluation_key, persist_result=True)
def evaluate_model(training: dict, test_path: str, test_hash: str, role: str) -> dict:
    """Score a trained run on the test split; keep predictions.parquet; return all metrics."""
    from mnist_models import evaluation as evaluation_lib

    record = evaluation_lib.evaluate_run(training["run_dir"], test_path)
    get_run_logger().info(
        f"{training['run_id']}: test accuracy {record['accuracy']:.4f} "
        f"[{record['accuracy_low']:.4f}, {record['accuracy_high']:.4f}], MAP {record['map']:.4f}"
    )
    return {**training, **record, "role": role}
