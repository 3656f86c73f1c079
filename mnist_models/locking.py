"""An exclusive lock on an artifacts directory, so two study runs never write into it at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path


class ArtifactsLockedError(RuntimeError):
    """Another run holds the artifacts directory."""


@contextlib.contextmanager
def artifacts_lock(artifacts_dir: str | os.PathLike[str], timeout: float = 0.0, poll: float = 1.0) -> Iterator[Path]:
    """Hold `<artifacts_dir>/.lock` for the block; wait up to `timeout` seconds, then fail clearly."""
    path = Path(artifacts_dir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise ArtifactsLockedError(
                        f"artifacts directory {str(Path(artifacts_dir))!r} is in use by {holder}; wait for that "
                        "run to finish, or give this run another --artifacts-dir"
                    ) from None
                time.sleep(poll)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
