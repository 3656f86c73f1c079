"""Deployment test: prefect.yaml on a real Prefect server, deployed with the CLI and run by a real worker.

One server for the module (`prefect server start`, SQLite in its own PREFECT_HOME), the
`mnist-study` process pool, `prefect deploy --all` from the repository root, then a real
`prefect worker start` that runs `full-study/quick-check` on the local MNIST copy. Every CLI call
talks to that server only. About 3 minutes on 2 cores, most of it the quick study itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Crashed, Failed

REPOSITORY = Path(__file__).resolve().parents[2]
MNIST_DIR = REPOSITORY.parent / "shared" / "datasets" / "mnist"
PREFECT = str(Path(sys.executable).with_name("prefect"))  # the CLI of the environment running the tests
POOL = "mnist-study"
DEPLOYMENTS = {"full-study", "quick-check", "nightly-retrain"}
SERVER_START_TIMEOUT = 120
FLOW_RUN_TIMEOUT = 8 * 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(log: Path, characters: int = 6000) -> str:
    text = log.read_text(errors="replace") if log.exists() else "(no output)"
    return text[-characters:]


def _start(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start a long-running CLI in its own process group, its output in a file (a pipe could fill up)."""
    with log.open("wb") as output:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    """Terminate the process group (the worker's flow run and its training processes too), then kill it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children left behind by a leader that did exit
    except ProcessLookupError:
        pass
    process.wait(timeout=20)


class PrefectServer:
    """A `prefect server start` subprocess and the environment that points the CLI at it."""

    def __init__(self, home: Path, port: int):
        self.home = home
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.log = home / "server.log"
        # Only this server's settings: no PREFECT_* leaking in from the shell or a profile.
        base = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
        self.server_env = {
            **base,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # No auto-scheduled runs: the nightly schedule is stored and checked, but a test run close
            # to 02:00 UTC must not have the worker start a full study.
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        }
        self.env = {**base, "PREFECT_HOME": str(home), "PREFECT_API_URL": self.api_url,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = _start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                              self.server_env, self.log, cwd=self.home)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.process.returncode}:\n{_tail(self.log)}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {SERVER_START_TIMEOUT} s:\n{_tail(self.log)}")

    def cli(self, *arguments: str, cwd: Path = REPOSITORY, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run one prefect CLI command against this server; fail the test with its output if it fails."""
        result = subprocess.run([PREFECT, *arguments], env={**self.env, "PWD": str(cwd)}, cwd=cwd,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, (
            f"prefect {' '.join(arguments)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """A real Prefect server on a free port, SQLite in a temporary PREFECT_HOME; stopped at the end."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect-home"), _free_port())
    try:
        server.start()
        yield server
    finally:
        if server.process is not None:
            _stop(server.process)


@pytest.fixture(scope="module")
def deployed(prefect_server) -> PrefectServer:
    """The work pool, and `prefect deploy --all` run from the repository root as a user would."""
    prefect_server.cli("work-pool", "create", POOL, "--type", "process")
    prefect_server.cli("--no-prompt", "deploy", "--all", timeout=300)
    return prefect_server


def _read_deployments(api_url: str) -> dict:
    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            return {name: client.read_deployment_by_name(f"full-study/{name}") for name in DEPLOYMENTS}


def test_deploy_all_creates_the_three_deployments(deployed):
    deployments = _read_deployments(deployed.api_url)

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
    assert deployments["quick-check"].parameters == {"config": {"profile": "quick", "artifacts_dir": "artifacts/quick"}}
    assert deployments["nightly-retrain"].parameters == {"config": {"profile": "full", "nightly": True}}
    # The UI's form: every configuration field with its default and description.
    fields = deployments["full-study"].parameter_openapi_schema["definitions"]["StudyConfig"]["properties"]
    assert fields["epochs"]["default"] == 10 and "epochs per sweep run" in fields["epochs"]["description"]
    assert fields["regression_tolerance"]["default"] == 0.005

    assert deployments["full-study"].schedules == []
    assert deployments["quick-check"].schedules == []
    (nightly,) = deployments["nightly-retrain"].schedules
    assert nightly.active
    assert nightly.schedule.cron == "0 2 * * *"
    assert nightly.schedule.timezone == "UTC"


@pytest.fixture
def worker(deployed, tmp_path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """`prefect worker start --pool mnist-study`, started outside the repository so that the pull step
    must find it; MNIST from the local copy beside the repository. Stopped, with its runs, at the end."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"expected the MNIST IDX files in {MNIST_DIR} (see the README)")
    directory = tmp_path / "worker"
    directory.mkdir()
    log = tmp_path / "worker.log"
    env = {**deployed.env, "PWD": str(directory), "MNIST_MIRROR": str(MNIST_DIR), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = _start([PREFECT, "worker", "start", "--pool", POOL], env, log, cwd=directory)
    try:
        yield process, log
    finally:
        _stop(process)


def test_quick_check_runs_on_a_worker(deployed, worker, tmp_path):
    process, log = worker
    artifacts = tmp_path / "artifacts"
    # The flow's one parameter is the study's configuration; --params replaces it whole.
    config = {"profile": "quick", "artifacts_dir": str(artifacts)}
    created = deployed.cli("deployment", "run", "full-study/quick-check", "--params", json.dumps({"config": config}))
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", created.stdout)
    assert match, f"no flow run id in:\n{created.stdout}"

    with temporary_settings({PREFECT_API_URL: deployed.api_url}):
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + FLOW_RUN_TIMEOUT
            while True:
                flow_run = client.read_flow_run(match.group(1))
                if flow_run.state is not None and flow_run.state.is_final():
                    break
                assert process.poll() is None, f"the worker exited with {process.returncode}:\n{_tail(log)}"
                assert time.monotonic() < deadline, (
                    f"quick-check still {flow_run.state_name} after {FLOW_RUN_TIMEOUT} s; worker output:\n{_tail(log)}")
                time.sleep(2)

    assert flow_run.parameters["config"]["artifacts_dir"] == str(artifacts)
    assert flow_run.state.is_completed(), (
        f"quick-check ended {flow_run.state.name}: {flow_run.state.message}\nworker output:\n{_tail(log)}")
    assert (artifacts / "report" / "report.html").is_file(), _tail(log)
    assert (artifacts / "tables" / "summary.parquet").is_file(), _tail(log)


NOTIFICATION_TIMEOUT = 60  # the server's triggers service acts on an event within seconds
NOTIFICATION_QUIET = 5  # how long to wait for a notification that must not come


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST (path, headers, body) and answers 200."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *arguments):  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.5)
        return list(self.received)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=10)


def _make_automation(server: PrefectServer, webhook_url: str) -> subprocess.CompletedProcess:
    """The documented command, `make automation WEBHOOK_URL=...`, against the test's server. PYTHON is
    the interpreter running the tests, and `-o` keeps make from reinstalling the environment."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed-stamp", "automation", "VENV=.venv",
         f"PYTHON={sys.executable}", f"WEBHOOK_URL={webhook_url}"],
        env={**server.env, "PWD": str(REPOSITORY)}, cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"make automation exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def _end_a_run(client, deployment: str, state):
    """Create a run of the deployment (no worker picks it up) and force it into a final state: the
    server emits the same prefect.flow-run.<state> event as for a run that fails on a worker."""
    flow_run = client.create_flow_run_from_deployment(client.read_deployment_by_name(deployment).id)
    client.set_flow_run_state(flow_run.id, state, force=True)
    return client.read_flow_run(flow_run.id)


def test_nightly_failure_notifies_the_webhook(deployed, webhook_receiver):
    # Made twice, the second time with the right URL: the command updates the automation in place
    # (one automation, so one notification per failure) and the new URL is the one called.
    _make_automation(deployed, f"{webhook_receiver.url}/old-hook")
    created = _make_automation(deployed, f"{webhook_receiver.url}/hook")
    assert "Updated automation 'nightly-retrain-failed'" in created.stdout, created.stdout
    assert webhook_receiver.url not in created.stdout + created.stderr  # the URL is not echoed

    with temporary_settings({PREFECT_API_URL: deployed.api_url}):
        with get_client(sync_client=True) as client:
            (automation,) = client.read_automations_by_name("nightly-retrain-failed")
            assert automation.enabled
            # A failed quick-check first: if it notified, its POST would come before the others.
            _end_a_run(client, "full-study/quick-check", Failed(message="quick-check broke"))
            failed = _end_a_run(client, "full-study/nightly-retrain", Failed(message="regression gate failed"))
            crashed = _end_a_run(client, "full-study/nightly-retrain", Crashed(message="worker killed"))

    webhook_receiver.wait_for(2, NOTIFICATION_TIMEOUT)
    time.sleep(NOTIFICATION_QUIET)  # room for a wrong third notification (quick-check's) to arrive
    received = webhook_receiver.received
    assert len(received) == 2, f"expected 2 notifications, got {len(received)}: {received}\n{_tail(deployed.log)}"
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
