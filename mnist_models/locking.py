"""Exclusive locks: one on an artifacts directory, so two study runs never write into it at once, and
one per run folder, so two processes never train the same run at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from mnist_models.atomic_files import host_tag


class ArtifactsLockedError(RuntimeError):
    """Another run holds the artifacts directory."""


class RunLockTimeoutError(TimeoutError):
    """Another process held a run folder's lock for longer than this one would wait."""


def _open_lock_file(path: Path) -> TextIO:
    """Open (or create) the lock file itself: never a file a planted symbolic link points at, nor a non-file."""
    try:  # O_NONBLOCK: a FIFO planted under the name must not hang the open
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as error:
        if not path.is_symlink():
            raise
        raise ValueError(f"lock file {str(path)!r} is a symbolic link (to {os.readlink(path)!r}); expected a regular "
                         "file: remove the link (someone else may have planted it) and run again") from error
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ValueError(f"lock file {str(path)!r} is not a regular file; expected a regular file: remove it and "
                         "run again")
    return os.fdopen(descriptor, "r+")


@contextlib.contextmanager
def _exclusive(path: Path, timeout: float | None, poll: float, busy: Callable[[str], Exception]) -> Iterator[Path]:
    """Hold an flock on `path` for the block, waiting up to `timeout` seconds (None: for ever).

    The file records its holder ("pid N on host H since ..."); `busy(holder)` is raised when the wait runs out.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open_lock_file(path) as handle:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.readline(200).strip()  # written by another process: one short line at most
                    raise busy(holder or "another process") from None
                time.sleep(poll)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on host {host_tag()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def artifacts_lock(artifacts_dir: str | os.PathLike[str], timeout: float = 0.0,
                   poll: float = 1.0) -> contextlib.AbstractContextManager[Path]:
    """Hold `<artifacts_dir>/.lock` for the block; wait up to `timeout` seconds, then fail clearly."""
    def busy(holder: str) -> ArtifactsLockedError:
        return ArtifactsLockedError(
            f"artifacts directory {str(Path(artifacts_dir))!r} is in use by {holder}; wait for that "
            "run to finish, or give this run another --artifacts-dir"
        )
    return _exclusive(Path(artifacts_dir) / ".lock", timeout, poll, busy)


def run_lock(run_dir: str | os.PathLike[str], timeout: float | None = None,
             poll: float = 0.2) -> contextlib.AbstractContextManager[Path]:
    """Hold `<runs>/.<run_id>.lock` for the block, waiting while another process holds it.

    Whoever gets the lock second finds the first one's finished folder and can reuse it. The lock
    file sits beside the folder because the folder itself is replaced whole. With a `timeout`
    (seconds), waiting longer raises RunLockTimeoutError naming the holder.
    """
    run_dir = Path(run_dir)

    def busy(holder: str) -> RunLockTimeoutError:
        return RunLockTimeoutError(
            f"run folder {str(run_dir)!r} is still being written by {holder} after {timeout:g} s; "
            "wait for that run to finish, or give this run another --artifacts-dir"
        )
    return _exclusive(run_dir.parent / f".{run_dir.name}.lock", timeout, poll, busy)
