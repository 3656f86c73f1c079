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


class _WhereTasksRan:
    """A scheduler plugin: each task's worker and resource restrictions when it starts processing."""

    def __init__(self, scheduler) -> None:
        self.scheduler, self.started = scheduler, []

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "processing":
            task = self.scheduler.tasks[key]
            self.started.append((task.processing_on.name, dict(task.resource_restrictions or {})))


@pytest.fixture
def workers_lending_cores(tmp_path):
    """A scheduler (in this process, with the plugin) and two `dask worker` processes lending 1 and 2 cores."""
    import os
    import sys
    import time
    from pathlib import Path

    from dask.distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    from tests.prefect_harness import REPOSITORY, start_process, stop_process, tail

    dask = str(Path(sys.executable).with_name("dask"))
    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0") as cluster:
        plugin = type("WhereTasksRan", (_WhereTasksRan, SchedulerPlugin), {})(cluster.scheduler)
        cluster.scheduler.add_plugin(plugin)
        workers = [start_process([dask, "worker", cluster.scheduler_address, "--nthreads", str(cores), "--resources",
                                  f"cores={cores}", "--name", name, "--no-dashboard"], dict(os.environ),
                                 tmp_path / f"{name}.log", REPOSITORY)
                   for name, cores in (("one-core", 1), ("two-cores", 2))]
        try:
            with Client(cluster.scheduler_address) as client:
                try:
                    client.wait_for_workers(2, timeout=90)
                except TimeoutError:
                    log = tail(tmp_path / "two-cores.log")
                    raise RuntimeError(f"the Dask workers did not come up:\n{log}") from None
            yield cluster.scheduler_address, plugin
        finally:
            for worker in workers:
                stop_process(worker)
            time.sleep(0.5)


@pytest.mark.usefixtures("prefect_harness", "mnist_mirror")
def test_workers_lending_cores_give_the_longest_lineage_more_threads(workers_lending_cores, tmp_path):
    """Two lineages on workers lending 1 and 2 cores: the 3 cores go 2 to the first in line, 1 to the other; each
    task asks for its cores, so the 2-thread lineage can only run on the 2-core worker, and it trains on 2 threads."""
    address, where = workers_lending_cores
    result = full_study(StudyConfig(
        artifacts_dir=tmp_path, profile="quick", models=["dnn"], learning_rates=[0.01, 0.001], epochs=1,
        train_subset=300, gradient_models=[], dask_address=address))
    threads = {run.learning_rate: run.spec.threads for run in result.runs}
    assert sorted(threads.values()) == [1, 2]
    for run in result.runs:
        assert runs_manifest(tmp_path, run.run_id)["threads"] == run.spec.threads
    training = [(worker, asked) for worker, asked in where.started if asked]
    assert sorted(asked["cores"] for _, asked in training) == [1, 2]
    assert [worker for worker, asked in training if asked["cores"] == 2] == ["two-cores"]


def runs_manifest(artifacts, run_id: str) -> dict:
    import json

    return json.loads((artifacts / "runs" / run_id / "manifest.json").read_text())


def test_a_dask_address_with_no_scheduler_is_one_clear_error(tmp_path, closed_port):
    """Planning asks the cluster what its workers lend: where nothing answers, one line and exit status 1."""
    import subprocess
    import sys

    from tests.prefect_harness import REPOSITORY

    address = f"tcp://127.0.0.1:{closed_port}"
    completed = subprocess.run([sys.executable, str(REPOSITORY / "flows" / "full_study.py"), "--plan",
                                "--artifacts-dir", str(tmp_path), "--dask-address", address],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1, completed.stderr[-3000:]
    lines = completed.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: no Dask scheduler answered at {address} within 10 s"), completed.stderr
    assert "expected a running `dask scheduler` there" in lines[-1]
