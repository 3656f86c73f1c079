"""The training fan-out on a real Dask cluster (scheduler and a worker process on 127.0.0.1)."""

import pandas as pd
import pytest

from flows.full_study import full_study
from mnist_models.config import StudyConfig


@pytest.fixture(scope="module")
def dask_cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster


@pytest.mark.usefixtures("prefect_harness", "mnist_mirror")
def test_training_runs_on_a_dask_cluster(dask_cluster, tmp_path):
    from dask.distributed import Client

    with Client(dask_cluster.scheduler_address) as client:
        before = sum(client.run(lambda: 1).values())
    result = full_study(StudyConfig(
        artifacts_dir=tmp_path, profile="quick", models=["dnn"], learning_rates=[0.01], epochs=1, train_subset=300,
        gradient_models=[], dask_address=dask_cluster.scheduler_address))
    assert before == 1
    assert [run.model for run in result.runs] == ["dnn"]
    run_dir = tmp_path / "runs" / result.runs[0].run_id
    assert (run_dir / "manifest.json").exists() and (run_dir / "predictions.parquet").exists()
    assert pd.read_parquet(tmp_path / "tables" / "summary.parquet")["accuracy"].iloc[0] > 0.3
    with Client(dask_cluster.scheduler_address) as client:
        # The tasks really ran on the cluster's worker process.
        processed = client.run(lambda dask_worker: dask_worker.state.transition_counter)
    assert sum(processed.values()) > 0


@pytest.fixture
def worker_on_a_copy(tmp_path):
    """A `dask scheduler` and one `dask worker` importing the project from a copy of its source (PYTHONPATH)."""
    import os
    import shutil
    import sys
    import time
    from pathlib import Path

    from dask.distributed import Client

    from tests.prefect_harness import REPOSITORY, free_port, start_process, stop_process, tail

    copy = tmp_path / "copy"
    for package in ("mnist_models", "tasks", "flows"):
        shutil.copytree(REPOSITORY / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{free_port()}"
    environment = {**os.environ, "PYTHONPATH": str(copy)}
    scheduler = start_process([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                               "--no-dashboard"], environment, tmp_path / "scheduler.log", copy)
    worker = start_process([dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                            "--name", "copy-worker"], environment, tmp_path / "worker.log", copy)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(1, timeout=5)
                    break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no Dask worker came up:\n{tail(tmp_path / 'worker.log')}") from None
        yield address, copy
    finally:
        stop_process(worker)
        stop_process(scheduler)


@pytest.mark.usefixtures("prefect_harness", "mnist_mirror")
def test_a_worker_holding_other_code_is_refused_with_the_difference(worker_on_a_copy, tmp_path):
    """The same worker trains while its source equals the flow's, and is refused after a real edit of its copy."""
    address, copy = worker_on_a_copy

    def study(artifacts):
        return full_study(StudyConfig(artifacts_dir=artifacts, profile="quick", models=["dnn"], learning_rates=[0.01],
                                      epochs=1, train_subset=300, gradient_models=[], dask_address=address),
                          return_state=True)

    assert study(tmp_path / "same").is_completed()
    feeding = copy / "mnist_models" / "feeding.py"  # in training's code closure
    feeding.write_text(feeding.read_text() + "\nSHUFFLE_BUFFER_EDITED = 1\n")
    state = study(tmp_path / "edited")
    assert state.is_failed()
    assert "Dask worker 'copy-worker'" in state.message, state.message
    assert "code changed (mnist_models/feeding.py)" in state.message, state.message
    assert not list((tmp_path / "edited" / "runs").glob("dnn-*/manifest.json"))  # nothing stored under the key
