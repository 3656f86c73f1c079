"""Deployment test: prefect.yaml on a real Prefect server, deployed with the CLI and run by a real worker.

One server for the module (`prefect server start`, SQLite in its own PREFECT_HOME), the
`mnist-study` process pool, `prefect deploy --all` from the repository root, then a real
`prefect worker start` that runs `full-study/quick-check`, cut to one dense run, on the local MNIST copy. Every
CLI call talks to that server only. About 90 s on 2 cores: 40 s of server start and deploy, 35 s of the study on
the worker. The same set-up on
PostgreSQL, with two workers, cancelling and crashes, is tests/flows/test_service.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from prefect.states import Crashed, Failed

from tests.prefect_harness import (
    POOL, REPOSITORY, PrefectServer, make_automation, receiving_webhooks, running_server, running_worker, tail,
    wait_for_final)

DEPLOYMENTS = {"full-study", "quick-check", "nightly-retrain"}


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """A real Prefect server on a free port, SQLite in a temporary PREFECT_HOME; stopped at the end."""
    with running_server(tmp_path_factory.mktemp("prefect-home")) as server:
        yield server


@pytest.fixture(scope="module")
def deployed(prefect_server) -> PrefectServer:
    """The work pool, and `prefect deploy --all` run from the repository root as a user would."""
    prefect_server.deploy()
    return prefect_server


def _read_deployments(server: PrefectServer) -> dict:
    with server.client() as client:
        return {name: client.read_deployment_by_name(f"full-study/{name}") for name in DEPLOYMENTS}


def test_deploy_all_creates_the_three_deployments(deployed):
    deployments = _read_deployments(deployed)

    for name, deployment in deployments.items():
        assert deployment.work_pool_name == POOL, name
        assert deployment.entrypoint == "flows.full_study:full_study", name  # importable on Dask workers too
        # The pull step enters the repository root that `prefect deploy` ran from, resolved at deploy time.
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPOSITORY)}}
        ], name
        assert deployment.global_concurrency_limit is not None, f"{name} has no concurrency limit"
        assert deployment.global_concurrency_limit.limit == 1, name
        assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE", name

    assert deployments["full-study"].parameters == {"config": {"profile": "full"}}
    assert deployments["quick-check"].parameters == {"config": {"profile": "quick", "artifacts_dir": "artifacts-quick"}}
    assert deployments["nightly-retrain"].parameters == {"config": {"profile": "full", "nightly": True}}
    # The UI's form: every configuration field with its default and description; a field that the profile sets
    # has none (the form submits every default it shows), and its description states each profile's value.
    fields = deployments["full-study"].parameter_openapi_schema["definitions"]["StudyConfig"]["properties"]
    assert fields["epochs"]["default"] is None and "(default: 10; quick: 1)" in fields["epochs"]["description"]
    assert fields["regression_tolerance"]["default"] == 0.005

    assert deployments["full-study"].schedules == []
    assert deployments["quick-check"].schedules == []
    (nightly,) = deployments["nightly-retrain"].schedules
    assert nightly.active
    assert nightly.schedule.cron == "0 2 * * *"
    assert nightly.schedule.timezone == "UTC"


@pytest.fixture
def worker(deployed, tmp_path):
    """`prefect worker start --pool mnist-study` in a folder of its own; stopped, with its runs, at the end."""
    with running_worker(deployed, tmp_path / "worker") as started:
        yield started


# The quick profile cut to one dense run: every stage still runs, on the worker, from the deployment's entrypoint
# and pull step. The whole quick profile is tests/flows/test_quick_profile.py's (about 150 s more here).
ONE_RUN = {"profile": "quick", "models": ["dnn"], "learning_rates": [0.001], "gradient_models": [],
           "train_subset": 1000}


def test_quick_check_runs_on_a_worker(deployed, worker, tmp_path):
    artifacts = tmp_path / "artifacts"
    flow_run_id = deployed.run_deployment("full-study/quick-check", {**ONE_RUN, "artifacts_dir": str(artifacts)})

    with deployed.client() as client:
        flow_run = wait_for_final(client, flow_run_id, [worker])

    assert flow_run.parameters["config"]["artifacts_dir"] == str(artifacts)
    assert flow_run.state.is_completed(), (
        f"quick-check ended {flow_run.state.name}: {flow_run.state.message}\nworker output:\n{tail(worker.log)}")
    assert (artifacts / "report" / "report.html").is_file(), tail(worker.log)
    summary = pd.read_parquet(artifacts / "tables" / "summary.parquet")
    assert summary[["model", "learning_rate", "status"]].values.tolist() == [["dnn", 0.001, "trained"]], summary


NOTIFICATION_TIMEOUT = 60  # the server's triggers service acts on an event within seconds
NOTIFICATION_QUIET = 5  # how long to wait for a notification that must not come


@pytest.fixture
def webhook_receiver():
    with receiving_webhooks() as receiver:
        yield receiver


def _end_a_run(client, deployment: str, state):
    """Create a run of the deployment (no worker picks it up) and force it into a final state: the
    server emits the same prefect.flow-run.<state> event as for a run that fails on a worker."""
    flow_run = client.create_flow_run_from_deployment(client.read_deployment_by_name(deployment).id)
    client.set_flow_run_state(flow_run.id, state, force=True)
    return client.read_flow_run(flow_run.id)


def test_nightly_failure_notifies_the_webhook(deployed, webhook_receiver):
    # Made twice, the second time with the right URL: the command updates the automation in place
    # (one automation, so one notification per failure) and the new URL is the one called.
    make_automation(deployed, f"{webhook_receiver.url}/old-hook")
    created = make_automation(deployed, f"{webhook_receiver.url}/hook")
    assert "Updated automation 'nightly-retrain-failed'" in created.stdout, created.stdout
    assert webhook_receiver.url not in created.stdout + created.stderr  # the URL is not echoed

    with deployed.client() as client:
        (automation,) = client.read_automations_by_name("nightly-retrain-failed")
        assert automation.enabled
        # A failed quick-check first: if it notified, its POST would come before the others.
        _end_a_run(client, "full-study/quick-check", Failed(message="quick-check broke"))
        failed = _end_a_run(client, "full-study/nightly-retrain", Failed(message="regression gate failed"))
        crashed = _end_a_run(client, "full-study/nightly-retrain", Crashed(message="worker killed"))

    webhook_receiver.wait_for(2, NOTIFICATION_TIMEOUT)
    time.sleep(NOTIFICATION_QUIET)  # room for a wrong third notification (quick-check's) to arrive
    received = webhook_receiver.received
    assert len(received) == 2, f"expected 2 notifications, got {len(received)}: {received}\n{tail(deployed.log)}"
    assert {path for path, _, _ in received} == {"/hook"}
    assert all(headers.get("Content-Type") == "application/json" for _, headers, _ in received)
    notifications = {body["flow_run_id"]: body for body in (json.loads(body) for _, _, body in received)}
    assert notifications.keys() == {str(failed.id), str(crashed.id)}
    for flow_run, state, message in [(failed, "Failed", "regression gate failed"), (crashed, "Crashed", "worker killed")]:
        notification = notifications[str(flow_run.id)]
        assert notification["deployment"] == "full-study/nightly-retrain"
        assert notification["flow_run_name"] == flow_run.name
        assert (notification["state"], notification["message"]) == (state, message)
        assert flow_run.name in notification["text"] and state in notification["text"]
