"""What every flow entry point shares: quiet defaults, mirrors from the environment, CLI errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from mnist_models.datasets import get_dataset
from mnist_models.download import MirrorsExhaustedError

# Known, user-facing failures: printed as one message instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, MirrorsExhaustedError, PermissionError)


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
