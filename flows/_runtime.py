"""What every flow entry point shares: quiet defaults, mirrors from the environment, CLI errors."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from mnist_models.datasets import get_dataset
from mnist_models.download import MirrorsExhaustedError
from mnist_models.locking import ArtifactsLockedError


class StudyFailedError(RuntimeError):
    """A flow run ended Failed; its message says why."""


# Known, user-facing failures: printed as one message instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, MirrorsExhaustedError, PermissionError, ArtifactsLockedError,
               StudyFailedError)


def quiet_defaults() -> None:
    """Environment defaults for a pleasant local run (each can still be overridden by the user)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up banners
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
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=120)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                # Deliver the queued logs and events while the server is still there to take them.
                from prefect.events.worker import EventsWorker
                from prefect.logging.handlers import APILogWorker

                APILogWorker.drain_all(timeout=10)
                EventsWorker.drain_all(timeout=10)
    finally:
        server.stop()


def run_cli(main: Callable[[], Any]) -> None:
    """Run a CLI entry point; a user error prints one line on stderr and exits with status 1."""
    try:
        main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
