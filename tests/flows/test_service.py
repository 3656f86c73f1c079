"""The production set-up of docs/service.md, for real: a Prefect server on PostgreSQL, the deployments of
prefect.yaml, process workers that train.

One throwaway PostgreSQL cluster (scripts/postgres.sh, Debian's `postgresql` package) and one
`prefect server start` on it for the module, then per test its own workers:
- two deployments' runs naming one artifacts folder queue on the folder's slot and both complete;
- cancelling a run (as the UI does) leaves none of its training processes running;
- a night whose training processes crash ends Failed and the failure automation calls its webhook.
Marked `service` (about 2.5 minutes on 2 cores; `make test` leaves it out, `make test-service` and CI
run it). The few checks of flows/_concurrency.py that need no server are unmarked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from flows._concurrency import artifacts_slot, slot_name
from tests.prefect_harness import (
    REPOSITORY, PrefectServer, Worker, flow_run_logs, free_port, isolation_processes, make_automation,
    receiving_webhooks, running_server, running_worker, tail, wait_for_final, wait_for_log, with_subflows)

POSTGRES_SCRIPT = REPOSITORY / "scripts" / "postgres.sh"
CANCEL_TIMEOUT = 120  # from Cancelling to Cancelled: the worker notices and ends the process
CHILDREN_GRACE = 30  # training processes must be gone this long after the run is Cancelled
NOTIFICATION_TIMEOUT = 60


# --- the slot's naming and its no-op outside a deployment (no server needed) ---

def test_a_folder_has_one_slot_however_it_is_spelled(tmp_path, monkeypatch):
    folder = tmp_path / "artifacts"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder)
    monkeypatch.chdir(tmp_path)

    name = slot_name(folder)
    assert name.startswith("artifacts-") and len(name) == len("artifacts-") + 12
    assert slot_name("artifacts") == slot_name(tmp_path / "link") == slot_name(f"{folder}/../artifacts") == name
    assert slot_name(tmp_path / "other") != name


def test_outside_a_deployment_the_slot_asks_no_server(tmp_path):
    # The command line and the flow tests run outside any deployment: the slot must not need a server.
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):  # nothing listens there
        with artifacts_slot(tmp_path):
            pass


# --- a server on PostgreSQL ---

@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port (its folder under /tmp, where its own user may enter)."""
    directory = Path(tempfile.mkdtemp(prefix="mnist-postgres-"))
    started = subprocess.run([str(POSTGRES_SCRIPT), "start", str(directory), str(free_port())],
                             capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, f"scripts/postgres.sh start failed:\n{started.stdout}\n{started.stderr}"
        yield started.stdout.strip()
    finally:
        subprocess.run([str(POSTGRES_SCRIPT), "stop", str(directory)], timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


def _query(postgres_url: str, sql: str, *arguments):
    """Rows of one query, straight from PostgreSQL (not through the Prefect API)."""
    async def run():
        connection = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await connection.fetch(sql, *arguments)
        finally:
            await connection.close()
    return asyncio.run(run())


@pytest.fixture(scope="module")
def service(postgres_url, tmp_path_factory) -> Iterator[PrefectServer]:
    """`prefect server start` on that PostgreSQL, as docs/service.md sets it up, with the deployments on it."""
    settings = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres_url,
                "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}
    with running_server(tmp_path_factory.mktemp("prefect-home"), settings) as server:
        server.deploy()
        yield server


def _work_window(client, flow_run_id: str) -> tuple:
    """When the flow run's task runs (its subflows' included) started first and ended last."""
    task_runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=with_subflows(client, flow_run_id))))
    assert task_runs, f"flow run {flow_run_id} ran no task"
    return (min(run.start_time for run in task_runs if run.start_time),
            max(run.end_time for run in task_runs if run.end_time))


@pytest.mark.service
def test_two_deployments_on_one_folder_queue_on_two_workers(service, postgres_url, tmp_path):
    # Each worker takes one run at a time, so the two runs land on different workers.
    with (running_worker(service, tmp_path / "worker-a", "--name", "worker-a", "--limit", "1") as worker_a,
          running_worker(service, tmp_path / "worker-b", "--name", "worker-b", "--limit", "1") as worker_b,
          service.client() as client):
        workers = [worker_a, worker_b]
        # A nightly-style run on the quick profile first; the folder it holds is where its config put it.
        nightly_id = service.run_deployment("full-study/nightly-retrain",
                                            {"profile": "quick", "nightly": True, "artifacts_dir": str(tmp_path / "artifacts")})
        root = wait_for_log(client, nightly_id, r"holding the artifacts folder (\S+) \(", workers).group(1)
        # While it holds the folder, a run of another deployment into the same folder.
        quick_id = service.run_deployment("full-study/quick-check", {"profile": "quick", "artifacts_dir": root})
        nightly = wait_for_final(client, nightly_id, workers)
        quick = wait_for_final(client, quick_id, workers)
        nightly_work, quick_work = _work_window(client, nightly_id), _work_window(client, quick_id)
        quick_records = flow_run_logs(client, quick_id)
        errors = [record.message for run_id in (nightly_id, quick_id) for record in flow_run_logs(client, run_id)
                  if record.level >= logging.ERROR]
        limit = client.read_global_concurrency_limit_by_name(slot_name(root))

    for flow_run in (nightly, quick):
        assert flow_run.state.is_completed(), (
            f"{flow_run.name} ended {flow_run.state.name}: {flow_run.state.message}\n"
            + "\n".join(tail(worker.log, 3000) for worker in workers))
    # Queued, not refused and not merely late: the quick-check was running (waiting) before the nightly
    # run ended, said so, and did its work only after the nightly run's work was over.
    assert quick.start_time < nightly.end_time, (quick.start_time, nightly.end_time)
    quick_logs = [record.message for record in quick_records]
    assert any(message.startswith(f"waiting for the artifacts folder {root} (held by another flow run")
               for message in quick_logs), quick_logs
    assert any(message.startswith(f"holding the artifacts folder {root} (") and "after waiting" in message
               for message in quick_logs), quick_logs
    assert quick_work[0] >= nightly_work[1], f"work overlapped: nightly {nightly_work}, quick-check {quick_work}"
    assert not errors  # waiting is not an error
    assert (limit.limit, limit.active_slots) == (1, 0)  # both slots given back
    # Each worker ran one of them (both may try to take a run; the server lets one have it).
    ran = {worker.process.pid: {flow_run.name for flow_run in (nightly, quick)
                                if f"Flow run '{flow_run.name}' submitted to infrastructure" in worker.log.read_text()}
           for worker in workers}
    assert sorted(map(len, ran.values())) == [1, 1], ran
    # The server keeps them in PostgreSQL.
    rows = _query(postgres_url, "SELECT id::text, state_type::text FROM flow_run WHERE id = ANY($1::uuid[])",
                  [uuid.UUID(nightly_id), uuid.UUID(quick_id)])
    assert {row["id"]: row["state_type"] for row in rows} == {nightly_id: "COMPLETED", quick_id: "COMPLETED"}
    print(f"\nPostgreSQL {_query(postgres_url, 'SHOW server_version')[0][0]}; "
          f"nightly {nightly.start_time} .. {nightly.end_time} (work {nightly_work[0]} .. {nightly_work[1]}); "
          f"quick-check {quick.start_time} .. {quick.end_time} (work {quick_work[0]} .. {quick_work[1]})")


@contextlib.contextmanager
def _marked_worker(service: PrefectServer, directory: Path) -> Iterator[tuple[Worker, str]]:
    """A worker, and the environment entry that its flow runs and their training processes inherit from it."""
    value = uuid.uuid4().hex
    with running_worker(service, directory, env={"MNIST_TEST_WORKER": value}) as worker:
        yield worker, f"MNIST_TEST_WORKER={value}"


@pytest.mark.service
def test_cancelling_a_run_stops_its_training_processes(service, tmp_path):
    config = {"profile": "quick", "models": ["dnn"], "epochs": 30, "train_subset": 12000,
              "artifacts_dir": str(tmp_path / "artifacts")}
    with _marked_worker(service, tmp_path / "worker") as (worker, marker), service.client() as client:
        flow_run_id = service.run_deployment("full-study/full-study", config)
        wait_for_log(client, flow_run_id, r": epoch \d+/30 ", [worker], timeout=300)
        training = isolation_processes(marker)
        assert training, "the run logs an epoch, but no training process of this worker is running"

        asked_at = time.monotonic()
        client.set_flow_run_state(flow_run_id, Cancelling(message="cancelled by the test, as from the UI"))
        flow_run = wait_for_final(client, flow_run_id, [worker], timeout=CANCEL_TIMEOUT)
        cancelled_at = time.monotonic()
        assert flow_run.state.is_cancelled(), f"ended {flow_run.state.name}: {flow_run.state.message}"

        left = isolation_processes(marker)
        while left and time.monotonic() - cancelled_at < CHILDREN_GRACE:
            time.sleep(0.5)
            left = isolation_processes(marker)
        limit = client.read_global_concurrency_limit_by_name(slot_name(tmp_path / "artifacts"))

    assert not left, f"training processes still running {CHILDREN_GRACE} s after the run was cancelled: {left}"
    assert limit.active_slots == 0, "the cancelled run still holds its artifacts folder's slot"
    print(f"\nCancelled {cancelled_at - asked_at:.1f} s after Cancelling; training processes while running: "
          f"{training}; left {time.monotonic() - cancelled_at:.1f} s after: {left}; slot active: {limit.active_slots}")


@pytest.mark.service
def test_a_night_whose_training_crashes_notifies_the_webhook(service, tmp_path):
    config = {"profile": "quick", "nightly": True, "models": ["dnn"], "artifacts_dir": str(tmp_path / "artifacts")}
    killed = set()
    with (receiving_webhooks() as receiver, _marked_worker(service, tmp_path / "worker") as (worker, marker),
          service.client() as client):
        make_automation(service, f"{receiver.url}/hook")
        flow_run_id = service.run_deployment("full-study/nightly-retrain", config)
        # Every training process of the night dies as under the kernel's OOM killer, retries included.
        while not (flow_run := client.read_flow_run(flow_run_id)).state.is_final():
            for pid in isolation_processes(marker):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            worker.check_alive()
            time.sleep(0.2)
        received = receiver.wait_for(1, NOTIFICATION_TIMEOUT)

    assert killed, "no training process was seen to kill"
    assert flow_run.state.is_failed(), f"ended {flow_run.state.name}: {flow_run.state.message}"
    assert "runs failed" in flow_run.state.message and "killed by signal 9" in flow_run.state.message, (
        flow_run.state.message)
    assert len(received) == 1, received
    path, _, body = received[0]
    notification = json.loads(body)
    assert path == "/hook"
    assert (notification["flow_run_id"], notification["state"]) == (flow_run_id, "Failed")
    assert notification["message"] == flow_run.state.message
    print(f"\nkilled {len(killed)} training processes; the night ended Failed: {flow_run.state.message}")
