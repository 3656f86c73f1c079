"""Run one piece of work (a training, an evaluation) in a child process of its own.

A child that dies (killed by the kernel's OOM killer, a segfault in a native library) loses only its
own work: the caller gets a `RunCrashedError` that names the cause, and every other run goes on.
The child's log lines reach the caller's `log` as they are written.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import subprocess
import sys
from multiprocessing.connection import Connection
from collections.abc import Callable
from typing import Any

from mnist_models.quiet import banners_filtered


class RunCrashedError(RuntimeError):
    """The child process died before it could report a result or an error."""


def describe_exit(exitcode: int | None) -> str:
    """Why a child process ended, in words a user can act on."""
    if exitcode is None:
        return "did not finish"
    if exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        hint = "; likely out of memory" if number == signal.SIGKILL else ""
        return f"killed by signal {number} ({name}){hint}"
    return f"exited with status {exitcode} before reporting a result"


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(sender, function: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    def log(line: str) -> None:
        sender.send(("log", line))

    try:
        with banners_filtered():  # TensorFlow's start-up lines, which no environment variable silences
            import tensorflow  # noqa: F401
        sender.send(("result", function(*args, log=log, **kwargs)))
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the caller
        try:
            sender.send(("error", error))
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled
            sender.send(("error", RuntimeError(f"{type(error).__name__}: {error}")))
    finally:
        sender.close()


def run_isolated(function: Callable[..., Any], *args: Any, log: Callable[[str], None] = print,
                 on_start: Callable[[int], None] | None = None, environment: dict[str, str] | None = None,
                 **kwargs: Any) -> Any:
    """Call `function(*args, log=..., **kwargs)` in a fresh Python process; return its result or raise its error.

    The child is a plain subprocess (not a multiprocessing child), so this works inside daemonic
    processes such as Dask's workers. `function` must be importable by name. `environment` adds to the
    child's environment (a GPU slot's CUDA_VISIBLE_DEVICES, say).
    """
    read_end, write_end = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "mnist_models.isolation", str(write_end)],
                               stdin=subprocess.PIPE, pass_fds=(write_end,), env={**os.environ, **(environment or {})})
    os.close(write_end)
    if on_start is not None:
        on_start(process.pid)
    try:
        process.stdin.write(pickle.dumps((function, args, kwargs)))
        process.stdin.close()
    except BrokenPipeError:
        pass  # the child died already; its exit status says why
    outcome = None
    with Connection(read_end, writable=False) as receiver:
        while True:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                break
            if kind == "log":
                log(payload)
            else:
                outcome = (kind, payload)
    process.wait()
    if outcome is None:
        raise RunCrashedError(f"the process running {function.__name__} {describe_exit(process.returncode)}")
    kind, payload = outcome
    if kind == "error":
        raise payload
    return payload


if __name__ == "__main__":  # the child: read the call from stdin, answer on the descriptor named in argv
    call = pickle.load(sys.stdin.buffer)
    _child(Connection(int(sys.argv[1]), readable=False), *call)
