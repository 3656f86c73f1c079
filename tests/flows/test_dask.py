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
