"""Real Prefect servers, workers and webhook receivers for the deployment tests (no mocks).

`PrefectServer` runs `prefect server start` on a free port with its own PREFECT_HOME (SQLite there, or
the database URL it is given); `start_worker` runs `prefect worker start` against it; every CLI call
and client talks to that server only. Long-running processes write to log files (a pipe could fill up)
and run in their own process group, so that stopping one stops its flow runs and their children too.
"""

from __future__ import annotations

import contextlib
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

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter, FlowRunFilterParentFlowRunId, LogFilter, LogFilterFlowRunId)
from prefect.client.schemas.sorting import LogSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import _runtime

REPOSITORY = Path(__file__).resolve().parents[1]
MNIST_DIR = REPOSITORY.parent / "shared" / "datasets" / "mnist"
PREFECT = str(Path(sys.executable).with_name("prefect"))  # the CLI of the environment running the tests
POOL = "mnist-study"
SERVER_START_TIMEOUT = 120
FLOW_RUN_TIMEOUT = 8 * 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(log: Path, characters: int = 6000) -> str:
    text = log.read_text(errors="replace") if log.exists() else "(no output)"
    return text[-characters:]


def start_process(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start a long-running CLI in its own process group, its output in a file."""
    with log.open("wb") as output:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_until_healthy(process: subprocess.Popen, health_url: str, log: Path, name: str) -> None:
    """Wait until a server's health URL answers 200; fail with its log if it exits or never answers."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(health_url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{name} not healthy after {SERVER_START_TIMEOUT} s:\n{tail(log)}")


def stop_process(process: subprocess.Popen) -> None:
    """Terminate the process group (a worker's flow runs and their training processes too), then kill it."""
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

    def __init__(self, home: Path, port: int, server_settings: dict[str, str] | None = None):
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
            **(server_settings or {}),
        }
        self.env = {**base, "PREFECT_HOME": str(home), "PREFECT_API_URL": self.api_url,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start_process([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                                     self.server_env, self.log, cwd=self.home)
        wait_until_healthy(self.process, f"{self.api_url}/health", self.log, "prefect server")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def cli(self, *arguments: str, cwd: Path = REPOSITORY, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run one prefect CLI command against this server; fail the test with its output if it fails."""
        result = subprocess.run([PREFECT, *arguments], env={**self.env, "PWD": str(cwd)}, cwd=cwd,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, (
            f"prefect {' '.join(arguments)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    @contextlib.contextmanager
    def client(self):
        """A synchronous Prefect client of this server."""
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            with get_client(sync_client=True) as client:
                yield client

    @contextlib.contextmanager
    def running_flows_here(self) -> Iterator[None]:
        """Flows run in this process report to this server, and afterwards to the one configured before.

        Prefect's process-wide event and log workers keep the server they were started for: their key holds no
        URL. Started for this server, they would send a later test's events here after it has stopped, each one
        failing only after ten reconnections, and the session's test harness waits for all of them at its end
        (15 minutes, where CI's timeout ended the suite); started for the harness, they would send this server's
        events there. So both are drained, delivering what they hold, on the way in and on the way out, and the
        next event or log starts them again for the server then configured."""
        drain_prefect_workers()
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            try:
                yield
            finally:
                drain_prefect_workers()

    def deploy(self) -> None:
        """The work pool, and `prefect deploy --all` run from the repository root as a user would."""
        self.cli("work-pool", "create", POOL, "--type", "process")
        self.cli("--no-prompt", "deploy", "--all", timeout=300)

    def run_deployment(self, deployment: str, config: dict) -> str:
        """`prefect deployment run <deployment> --params {"config": ...}`; the new flow run's id.

        The flow's one parameter is the study's configuration; --params replaces it whole."""
        created = self.cli("deployment", "run", deployment, "--params", json.dumps({"config": config}))
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", created.stdout)
        assert match, f"no flow run id in:\n{created.stdout}"
        return match.group(1)


def drain_prefect_workers(timeout: float = 60) -> None:
    """The study's own drain of Prefect's log and event workers; the test fails if anything is left unsent."""
    unsent = _runtime.drain_prefect_workers(timeout)
    assert not unsent, f"Prefect's {', '.join(unsent)} still had items to send after {timeout} s"


@contextlib.contextmanager
def running_server(home: Path, server_settings: dict[str, str] | None = None) -> Iterator[PrefectServer]:
    """A started server on a free port; stopped at the end."""
    server = PrefectServer(home, free_port(), server_settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()


class Worker:
    """A `prefect worker start --pool mnist-study` process, its log and its environment."""

    def __init__(self, process: subprocess.Popen, log: Path, env: dict[str, str]):
        self.process, self.log, self.env = process, log, env

    def check_alive(self) -> None:
        assert self.process.poll() is None, f"the worker exited with {self.process.returncode}:\n{tail(self.log)}"


@contextlib.contextmanager
def running_worker(server: PrefectServer, directory: Path, *options: str,
                   env: dict[str, str] | None = None) -> Iterator[Worker]:
    """A worker started in `directory` (outside the repository, so the pull step must find it), with MNIST
    from the local copy; `options` go to `prefect worker start`. Stopped, with its runs, at the end."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(f"expected the MNIST IDX files in {MNIST_DIR} (see the README)")
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "worker.log"
    worker_env = {**server.env, "PWD": str(directory), "MNIST_MIRROR": str(MNIST_DIR), "TF_CPP_MIN_LOG_LEVEL": "3",
                  **(env or {})}
    process = start_process([PREFECT, "worker", "start", "--pool", POOL, *options], worker_env, log, cwd=directory)
    try:
        yield Worker(process, log, worker_env)
    finally:
        stop_process(process)


def wait_for_final(client, flow_run_id: str, workers: list[Worker], timeout: float = FLOW_RUN_TIMEOUT):
    """The flow run once it reaches a final state; fails the test if a worker dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        flow_run = client.read_flow_run(flow_run_id)
        if flow_run.state is not None and flow_run.state.is_final():
            return flow_run
        for worker in workers:
            worker.check_alive()
        assert time.monotonic() < deadline, (
            f"flow run {flow_run.name} still {flow_run.state_name} after {timeout:.0f} s; worker output:\n"
            + "\n".join(tail(worker.log, 3000) for worker in workers))
        time.sleep(2)


def with_subflows(client, flow_run_id: str) -> list[str]:
    """The flow run's id and those of its subflow runs (e.g. `train-grid`), at any depth."""
    ids, pending = [], [flow_run_id]
    while pending:
        ids.extend(pending)
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=pending)))
        pending = [str(child.id) for child in children]
    return ids


def flow_run_logs(client, flow_run_id: str) -> list:
    """Every log record the server holds for the flow run, its tasks and its subflows, oldest first."""
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=with_subflows(client, flow_run_id)))
    records = []
    while page := client.read_logs(log_filter, limit=200, offset=len(records), sort=LogSort.TIMESTAMP_ASC):
        records.extend(page)
    return records


def wait_for_log(client, flow_run_id: str, pattern: str, workers: list[Worker], timeout: float = 180) -> re.Match:
    """The first match of `pattern` in the flow run's logs on the server, waiting for it to arrive."""
    deadline = time.monotonic() + timeout
    while True:
        for record in flow_run_logs(client, flow_run_id):
            if match := re.search(pattern, record.message):
                return match
        flow_run = client.read_flow_run(flow_run_id)
        assert not flow_run.state.is_final(), (
            f"flow run ended {flow_run.state_name} ({flow_run.state.message}) before logging {pattern!r}")
        for worker in workers:
            worker.check_alive()
        assert time.monotonic() < deadline, f"no log line matching {pattern!r} after {timeout:.0f} s"
        time.sleep(1)


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


@contextlib.contextmanager
def receiving_webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=10)


def make_automation(server: PrefectServer, webhook_url: str) -> subprocess.CompletedProcess:
    """The documented command, `make automation WEBHOOK_URL=...`, against the server. PYTHON is the
    interpreter running the tests, and `-o` keeps make from reinstalling the environment."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed-stamp", "automation", "VENV=.venv",
         f"PYTHON={sys.executable}", f"WEBHOOK_URL={webhook_url}"],
        env={**server.env, "PWD": str(REPOSITORY)}, cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"make automation exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def isolation_processes(marker: str) -> dict[int, str]:
    """The training processes (`python -m mnist_models.isolation ...`) alive now whose environment
    holds `marker` (an environment variable given to one test's worker): pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            if b"mnist_models.isolation" not in command:
                continue
            if marker.encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue  # it ended while we looked
        if "zombie" not in state:  # a zombie has ended; only its exit status is left to collect
            found[int(entry.name)] = " ".join(part.decode(errors="replace") for part in command if part)
    return found
