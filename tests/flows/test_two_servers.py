"""Flows run in the test process against a second Prefect server report there, and later ones to the harness again.

Prefect's process-wide event worker keeps the server it was started for. In CI a flow published to the UI test's
server started it in a process where no flow had run yet; the next test's flows, run against the harness, sent
their events to that server once it had stopped, each failing after ten reconnections, and the harness waited for
all of them at the session's end until the 15-minute timeout failed the suite. `PrefectServer.running_flows_here`
drains the workers on the way in and out. A task run reaches a server only as events (the server records it from
them), so each test reads task runs back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from tests.prefect_harness import PrefectServer, drain_prefect_workers, running_server

pytestmark = pytest.mark.usefixtures("prefect_harness")

ARRIVAL_TIMEOUT = 60  # seconds for a task run's events to be recorded by the server they were sent to


@task
def add_one(number: int) -> int:
    return number + 1


@flow(name="two-servers")
def two_servers() -> int:
    return add_one(1)


@pytest.fixture(scope="module")
def other_server(tmp_path_factory) -> Iterator[PrefectServer]:
    with running_server(tmp_path_factory.mktemp("prefect-home")) as server:
        yield server


def _run_flow() -> str:
    state = two_servers(return_state=True)
    assert state.is_completed(), state.message
    return str(state.state_details.flow_run_id)


def _task_runs(client, flow_run_id: str) -> list[str]:
    """The names of the flow run's task runs, once the server has recorded any, or [] after ARRIVAL_TIMEOUT."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while True:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        if runs or time.monotonic() > deadline:
            return [run.name for run in runs]
        time.sleep(0.5)


def _on_the_harness(flow_run_id: str) -> list[str]:
    with get_client(sync_client=True) as client:
        return _task_runs(client, flow_run_id)


def test_a_flow_after_one_on_another_server_reports_to_the_harness(other_server):
    drain_prefect_workers()  # as in a test process where no flow has run yet
    with other_server.running_flows_here():
        elsewhere = _run_flow()
    here = _run_flow()

    assert [name.split("-")[0] for name in _on_the_harness(here)] == ["add_one"]
    with other_server.client() as client:
        assert len(_task_runs(client, elsewhere)) == 1


def test_a_flow_on_another_server_after_one_on_the_harness_reports_there(other_server):
    here = _run_flow()  # the event worker is now the harness's
    assert len(_on_the_harness(here)) == 1
    with other_server.running_flows_here():
        elsewhere = _run_flow()

    with other_server.client() as client:
        assert len(_task_runs(client, elsewhere)) == 1
    assert len(_on_the_harness(_run_flow())) == 1
