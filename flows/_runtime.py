"""What every flow entry point shares: quiet defaults, mirrors from the environment, CLI errors."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from mnist_models.config import PROFILE_FIELDS, DataConfig, StudyConfig
from mnist_models.datasets import get_dataset
from mnist_models.download import MirrorsExhaustedError, normalize_mirror
from mnist_models.atomic_files import DiskFullError, ensure_writable_directory
from mnist_models.layout import ArtifactsLayout
from mnist_models.locking import ArtifactsLockedError, RunLockTimeoutError
from mnist_models.capacity import check_workers, machine_capacity
from mnist_models.isolation import PARENT_VARIABLE
from mnist_models.placement import DaskUnreachableError
from mnist_models.quiet import quiet_environment

ConfigT = TypeVar("ConfigT", bound=DataConfig)


class StudyFailedError(RuntimeError):
    """A flow run ended Failed; its message says why."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a process manager, a cancelled deployment run), handled like Ctrl-C: the flow stops its
    training processes and its temporary server on the way out instead of dying with them orphaned."""


_received: list[signal.Signals] = []  # SIGINT or SIGTERM, once received: kept where its exception was lost


def _interrupted(signum: int, frame: object) -> None:
    """The CLI's handler of SIGINT (Ctrl-C) and SIGTERM: note the signal, then raise KeyboardInterrupt (Terminated
    for SIGTERM) in the main thread. Python discards an exception raised while that thread runs a finalizer (a
    `__del__`, a weakref callback), and a library may catch it in a callback it runs there; so the note is kept,
    and `raise_if_interrupted`, called where the flow waits, raises it again."""
    _received.append(signal.Signals(signum))
    raise_if_interrupted()


def raise_if_interrupted() -> None:
    """Raise the interruption a SIGINT or SIGTERM to this process asked for, if one came (even one whose exception
    was lost): KeyboardInterrupt, or Terminated for SIGTERM."""
    if _received:
        received = _received[-1]
        raise Terminated(received.name) if received == signal.SIGTERM else KeyboardInterrupt


# Known, user-facing failures: printed as one message instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, MirrorsExhaustedError, PermissionError, ArtifactsLockedError,
               StudyFailedError, DiskFullError, RunLockTimeoutError, DaskUnreachableError)


def quiet_defaults() -> None:
    """Environment defaults for a pleasant local run (each can still be overridden by the user)."""
    for name, value in quiet_environment().items():  # TensorFlow's start-up lines (the rest: banners_filtered)
        os.environ.setdefault(name, value)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline telemetry tracebacks
    os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "false")


def mirror_variable(dataset: str) -> str:
    """The environment variable that overrides a data set's mirrors, e.g. MNIST_MIRROR."""
    return dataset.upper().replace("-", "_") + "_MIRROR"


def resolve_mirrors(dataset: str, mirrors: list[str] | None) -> list[str]:
    """Mirrors to try: the parameter, else $<DATASET>_MIRROR (comma-separated), else the defaults."""
    if mirrors:
        return list(mirrors)
    from_environment = os.environ.get(mirror_variable(dataset), "").strip()
    if from_environment:
        return [mirror.strip() for mirror in from_environment.split(",") if mirror.strip()]
    return list(get_dataset(dataset).mirrors)


class TemporaryServer:
    """Prefect's temporary local server, started as Prefect's `SubprocessASGIServer` starts it (uvicorn on a free
    port in 8000-8999, the UI off, ready when /api/health answers), in its own session and ending with this process.

    Prefect's class lives in the server's own module: importing it loaded the whole server into this process, which
    only talks to it, and took 4.6 s before the server's process could even start (measured on 2 cores). In this
    process's group, a Ctrl-C at the terminal would stop the server at once, and the flow would spend minutes
    retrying to record its crash on a server that is gone; in its own session it stays until the flow has recorded
    the crash and stops it on the way out. Its app factory watches this process, so a study killed with SIGKILL
    leaves no server behind either.
    """

    PORTS = range(8000, 9000)
    PORT_IN_USE = 3  # uvicorn's exit status when another process took the port first

    def __init__(self) -> None:
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.address}/api"

    def start(self, timeout: float = 120) -> None:
        """Start the server and wait until it answers; raise RuntimeError with its exit status if it never does."""
        import httpx
        from prefect.logging import get_logger

        self.port = self._free_port()
        get_logger().info(f"Starting temporary server on {self.address}\nSee "
                          "https://www.prefect.io/docs/v3/concepts/server#how-to-guides for more information on "
                          "running a dedicated Prefect server.")
        self.process = self._spawn()
        atexit.register(self.stop)
        deadline, retries = time.monotonic() + timeout, 3
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                if self.process.poll() == self.PORT_IN_USE and retries:  # uvicorn's status for any failed start
                    self.port, retries = self._free_port(), retries - 1
                    self.process = self._spawn()
                elif self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.api_url}/health", timeout=5).status_code == 200:
                        return
                time.sleep(0.1)
        status = self.process.poll()
        self.stop()
        raise RuntimeError(f"the temporary Prefect server at {self.address} did not answer within {timeout:g} s"
                           + ("" if status is None else f" (it exited with status {status})"))

    def _free_port(self) -> int:
        for port in random.sample(self.PORTS, 20):
            with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free port for the temporary Prefect server in {self.PORTS.start}-{self.PORTS.stop - 1}")

    def _spawn(self) -> subprocess.Popen:
        from prefect.settings import get_current_settings

        command = [sys.executable, "-m", "uvicorn", "--factory", "mnist_models.isolation:prefect_server_app",
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
        environment = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                       "PREFECT__SERVER_FINAL": "1", PARENT_VARIABLE: str(os.getpid()),
                       **get_current_settings().to_environment_variables(exclude_unset=True)}
        return subprocess.Popen(command, env=environment, start_new_session=True)

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 5 s) and reap it; nothing if it is not running."""
        process, self.process = self.process, None
        if process is None:
            return
        from prefect.logging import get_logger

        get_logger().info(f"Stopping temporary server on {self.address}")
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """Use the configured Prefect API; without one, start a single temporary local server.

    Prefect would otherwise start a temporary server in every worker process of the process pool;
    one server shared through PREFECT_API_URL keeps the runs, logs and cache in one place.
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield
        return
    server = TemporaryServer()
    server.start(timeout=120)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                drain_prefect_workers(timeout=10)  # while the server is still there to take what they hold
    finally:
        server.stop()


def drain_prefect_workers(timeout: float) -> list[str]:
    """Deliver what Prefect's process-wide log and event workers hold, and stop them; the names of those with items
    still unsent after `timeout` seconds each.

    They read PREFECT_API_URL once, when they start, and are kept per process whatever it says later: stopped, they
    start again at the next log or event, for the server then configured. Where an event loop runs in this thread
    (Playwright's synchronous API keeps one), `drain_all` returns a coroutine instead of waiting: it is then called
    and awaited on Prefect's own loop, as Prefect's test harness does."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drained(worker: type) -> tuple | None:
        return await worker.drain_all(timeout=timeout)  # None where no such worker ran

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # none in this thread (the command line): drain_all waits itself
        results = {worker: worker.drain_all(timeout=timeout) for worker in (APILogWorker, EventsWorker)}
    else:
        results = {worker: run_coro_as_sync(drained(worker)) for worker in (APILogWorker, EventsWorker)}
    return [worker.__name__ for worker, done_and_pending in results.items() if done_and_pending and done_and_pending[1]]


def comma_separated(kind: type) -> Callable[[str], list]:
    """argparse type: a comma-separated list of `kind` values ('' gives an empty list)."""

    def parse(text: str) -> list:
        try:
            return [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}s, got {text!r}")
    return parse


def _scalar(annotation: Any) -> tuple[Any, bool]:
    """The element type of a field's annotation, and whether the field holds several values."""
    arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return arguments[0], True
    if arguments and typing.get_origin(annotation) is not typing.Literal:
        return _scalar(arguments[0])
    return annotation, False


def config_parser(config_type: type[BaseModel], description: str) -> argparse.ArgumentParser:
    """A command line with one option per configuration field: its flag, type, help and default come from the field."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = config_type.model_construct()
    for name, field in config_type.model_fields.items():
        extra = field.json_schema_extra or {}
        flag = extra.get("flag", "--" + name.replace("_", "-"))
        kind, several = _scalar(field.annotation)
        default = getattr(defaults, name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        # A profile field's description states each profile's default itself.
        stated = "" if name in PROFILE_FIELDS else f" (default: {shown if shown not in (None, '') else '-'})"
        options: dict[str, Any] = {"dest": name, "default": None, "help": field.description + stated}
        if kind is bool:
            options["action"] = "store_true"
        elif typing.get_origin(kind) is typing.Literal:
            options["choices"] = typing.get_args(kind)
        elif "nargs" in extra:
            options.update(nargs=extra["nargs"], metavar=extra.get("metavar"))
        elif extra.get("repeatable"):
            options.update(action="append", type=kind, metavar=extra.get("metavar"))
        else:
            options["type"] = comma_separated(kind) if several else (str if kind is Path else kind)
        parser.add_argument(flag, **options)
    return parser


def parse_config(config_type: type[ConfigT], description: str, argv: list[str] | None,
                 check_machine: bool = True) -> ConfigT:
    """Parse the command line into a validated configuration, then (unless only planning) run the preflight
    checks on this machine, which create the artifacts root."""
    options = {name: value for name, value in vars(config_parser(config_type, description).parse_args(argv)).items()
               if value is not None}
    if options.get("refresh") == []:  # a bare --refresh: every stage
        options["refresh"] = "all"
    config = config_type.validated(**options)
    if check_machine:
        preflight(config)
    return config


def preflight(config: DataConfig) -> None:
    """Check `config` against this machine: usable mirrors, a writable artifacts root, workers that fit (ValueError)."""
    # The configuration checks itself wherever it is built; these checks depend on the machine it runs on.
    for mirror in resolve_mirrors(config.dataset, list(config.mirrors or ())):
        normalize_mirror(mirror)
    layout = ArtifactsLayout.at(ensure_writable_directory(config.artifacts_dir))
    if isinstance(config, StudyConfig):
        check_workers(config, machine_capacity(layout))


def checked_config(config: StudyConfig | dict) -> StudyConfig:
    """A flow's configuration as a deployment or a caller gave it, validated and checked against this machine.

    Deployment parameters arrive as a dict; each bad value gets the command line's one-line message. A StudyConfig
    is validated again too: one built with `model_construct` (unvalidated) leaves its profile fields to the profile.
    """
    values = config.model_dump() if isinstance(config, StudyConfig) else dict(config or {})
    config = StudyConfig.validated(**values)
    preflight(config)
    return config


def run_flow(flow: Callable[..., Any], config: DataConfig) -> Any:
    """Run a flow on the configured (or a temporary local) Prefect server; a failed run raises StudyFailedError."""
    with prefect_api():
        state = flow(config, return_state=True)
        if not state.is_completed():
            raise StudyFailedError(state.message or f"the flow ended {state.name}")
        return state.result()


def run_cli(main: Callable[[], Any]) -> None:
    """Run a CLI entry point; a user error prints one line on stderr and exits with status 1."""
    from prefect.exceptions import TerminationSignal

    quiet_defaults()
    # Prefect raises its own TerminationSignal during a flow run and hands the signal on to this handler after.
    signal.signal(signal.SIGTERM, _interrupted)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (`... &`)
        signal.signal(signal.SIGINT, _interrupted)
    try:
        main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, TerminationSignal) as interrupt:
        terminated = isinstance(interrupt, (Terminated, TerminationSignal))
        print(f"interrupted by {'SIGTERM' if terminated else 'Ctrl-C (SIGINT)'}: training stopped; the finished runs "
              "and the last checkpoints are kept, and the next run continues from them", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
