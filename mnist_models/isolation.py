"""Run pieces of work (trainings, evaluations) in child processes of their own.

A child that dies (killed by the kernel's OOM killer, a segfault in a native library) loses only the
call it was running: the caller gets a `RunCrashedError` that names the cause, and every other run
goes on. The child's log lines reach the caller's `log` as they are written.

`run_isolated` starts a fresh process for one call. A `Worker` keeps its process for call after call,
so that TensorFlow is imported once per worker rather than once per run (about 2-3 s of CPU each on
the development machine); a worker whose process died starts a new one for its next call.
`worker_for` hands each thread its own worker per environment, and `close_workers` ends them all.
`start_ahead` starts processes before any call needs them, for the next workers to take over.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mnist_models.memory import peak_memory_mb, reset_peak_memory  # noqa: F401  (peak_memory_mb: re-exported)
from mnist_models.quiet import banners_filtered

# What a worker imports before its first call: TensorFlow, once per process, with its start-up banners
# filtered (nothing else silences them). A worker for calls that need no TensorFlow can preload nothing.
PRELOAD = ("tensorflow",)


class RunCrashedError(RuntimeError):
    """The child process died before it could report a result or an error."""


class RunStalledError(RunCrashedError):
    """The child process reported no progress for longer than its caller allows; it was killed."""


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


class Worker:
    """A child process that runs calls one after another, each with its own result, error or crash."""

    def __init__(self, environment: dict[str, str] | None = None, preload: tuple[str, ...] = PRELOAD) -> None:
        self.environment = dict(environment or {})
        self.preload = tuple(preload)  # modules the process imports before its first call
        self.process: subprocess.Popen | None = None
        self.receiver: Connection | None = None
        self.lock = threading.Lock()

    def call(self, function: Callable[..., Any], *args: Any, log: Callable[[str], None] = print,
             on_start: Callable[[int], None] | None = None, stall_seconds: float | None = None,
             **kwargs: Any) -> Any:
        """`function(*args, log=..., **kwargs)` in this worker's process (started if it has none).

        With `stall_seconds`, a process that sends no log line for that long is hung (a deadlock, a
        stopped process, a stuck file system): it is killed and the call raises RunStalledError.
        """
        with self.lock:
            if self.process is None:
                self._start()
            process = self.process
            if on_start is not None:
                on_start(process.pid)
            try:
                pickle.dump((function, args, kwargs), process.stdin)
                process.stdin.flush()
            except BrokenPipeError:
                pass  # the process died already; its exit status says why
            outcome, stalled = None, False
            while outcome is None:
                # Start-up counts too: a process stuck importing TensorFlow is as hung as one stuck in an epoch.
                if stall_seconds is not None and not self.receiver.poll(stall_seconds):
                    stalled = True
                    process.kill()  # SIGKILL ends a stopped process too
                    process.wait()
                    break
                try:
                    kind, payload = self.receiver.recv()
                except EOFError:
                    break
                if kind == "ready":  # TensorFlow imported: progress, nothing to pass on
                    continue
                if kind == "log":
                    log(payload)
                else:
                    outcome = (kind, payload)
            if outcome is None:
                self.close()
                if stalled:
                    raise RunStalledError(f"the process running {function.__name__} reported no progress for "
                                          f"{stall_seconds:.0f} s and was killed (hung)")
                raise RunCrashedError(f"the process running {function.__name__} {describe_exit(process.returncode)}")
        kind, payload = outcome
        if kind == "error":
            raise payload
        return payload

    def _start(self, take_ahead: bool = True) -> None:
        with _starting:  # stop_all either sees this process or stops it from starting
            if _stopping.is_set():
                raise RunCrashedError("not started: the study was interrupted")
            _started.add(self)
            ahead = _take_ahead(self.environment, self.preload) if take_ahead else None
            if ahead is not None:  # started before any call needed it: TensorFlow may be imported already
                self.process, self.receiver = ahead
            else:
                self._spawn()

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        # A Ctrl-C at the terminal signals the whole foreground group, this process's children too. One arriving
        # while a child's interpreter still starts (importing `site`, before any code of ours runs) ended it with
        # "Fatal Python error: init_import_site" and a traceback on the study's terminal. So the child is born
        # with SIGINT blocked (a thread's signal mask survives fork and exec) and unblocks it in `__main__` below,
        # where a Ctrl-C ends it quietly; a pending one is delivered there.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mnist_models.isolation", str(write_end), str(os.getpid()), *self.preload],
                stdin=subprocess.PIPE, pass_fds=(write_end,), env=_child_environment(self.environment))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_end)
        self.receiver = Connection(read_end, writable=False)

    def close(self) -> None:
        """End the process (it exits when its input closes) and wait for it."""
        if self.process is None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self.process.wait()
        self.receiver.close()
        self.process, self.receiver = None, None


def run_isolated(function: Callable[..., Any], *args: Any, log: Callable[[str], None] = print,
                 on_start: Callable[[int], None] | None = None, environment: dict[str, str] | None = None,
                 stall_seconds: float | None = None, preload: tuple[str, ...] = PRELOAD, **kwargs: Any) -> Any:
    """Call `function(*args, log=..., **kwargs)` in a fresh Python process; return its result or raise its error.

    The child is a plain subprocess (not a multiprocessing child), so this works inside daemonic
    processes such as Dask's workers. `function` must be importable by name. `environment` adds to the
    child's environment (a GPU slot's CUDA_VISIBLE_DEVICES, say).
    """
    worker = Worker(environment, preload)
    try:
        return worker.call(function, *args, log=log, on_start=on_start, stall_seconds=stall_seconds, **kwargs)
    finally:
        worker.close()


_started: weakref.WeakSet[Worker] = weakref.WeakSet()  # every worker that started a process, pooled or not
_starting = threading.Lock()
_stopping = threading.Event()  # set by stop_all: no worker starts a process (a retry, a lineage not yet begun)


def stop_all() -> int:
    """Kill every worker's process now, without waiting for its call (an interrupted study), and start no new one
    until `allow_starts`: each call waiting on one raises RunCrashedError at once, and its lineage keeps what it
    saved (its finished runs, its last checkpoint) for the next run to continue from. Returns how many processes
    were running."""
    with _starting:
        _stopping.set()
        workers = list(_started)
    stopped = discard_ahead()
    for worker in workers:
        process = worker.process
        if process is not None and process.poll() is None:
            process.kill()
            stopped += 1
    return stopped


def allow_starts() -> None:
    """Let workers start processes again (a new flow run in this process, after an interrupted one)."""
    _stopping.clear()


def _child_environment(environment: dict[str, str]) -> dict[str, str]:
    """The environment of a worker process started now: this process's, with the worker's own added."""
    return {**os.environ, **environment}


# Processes started before any call needed them, each with the environment it was started with.
_ahead: list[tuple[dict[str, str], Worker]] = []
_ahead_lock = threading.Lock()


def start_ahead(count: int, environment: dict[str, str] | None = None, preload: tuple[str, ...] = PRELOAD) -> list[int]:
    """Start `count` worker processes now, before any call needs them; returns their process ids.

    Their interpreter start and TensorFlow import (about 9 s of one core each here) then overlap whatever this
    process does meanwhile (the flow's server start and data stage), and the next workers of the same environment
    and preload take them over instead of starting their own. One whose environment differs from the one a worker
    would start a process with now is not taken over. `discard_ahead` ends those left unused.
    """
    started = []
    for _ in range(count):
        worker = Worker(environment, preload)
        try:
            worker._start(take_ahead=False)
        except RunCrashedError:  # stop_all meanwhile: an interrupted study starts nothing
            break
        with _ahead_lock:
            _ahead.append((_child_environment(worker.environment), worker))
        started.append(worker.process.pid)
    return started


def _take_ahead(environment: dict[str, str], preload: tuple[str, ...]) -> tuple[subprocess.Popen, Connection] | None:
    """A process started ahead that a worker of `environment` and `preload` would start now, handed over; or None."""
    wanted = _child_environment(environment)
    with _ahead_lock:
        for index, (started_with, worker) in enumerate(_ahead):
            if started_with == wanted and worker.preload == tuple(preload) and worker.process.poll() is None:
                del _ahead[index]
                taken, worker.process, worker.receiver = (worker.process, worker.receiver), None, None
                return taken
    return None


def discard_ahead(keep: int = 0) -> int:
    """End the processes started ahead beyond the first `keep` (they ran no call: killed at once, even in the middle
    of their TensorFlow import); returns how many of them were still running (a Ctrl-C at the terminal may have
    ended some already)."""
    with _ahead_lock:
        ended = [worker for _, worker in _ahead[keep:]]
        del _ahead[keep:]
    running = 0
    for worker in ended:
        process, worker.process = worker.process, None
        running += process.poll() is None
        process.kill()
        process.wait()
        worker.receiver.close()
        worker.receiver = None
    return running


_workers: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[str, Worker]] = {}
_workers_lock = threading.Lock()


def worker_for(environment: dict[str, str] | None = None, generation: str = "") -> Worker:
    """The calling thread's worker for `environment`, made on first use.

    A worker serves one `generation` (a flow run, and the thread count its TensorFlow runs on): a call from
    another generation closes the thread's old worker and starts a new one, so that a long-lived process (a
    Dask worker's) never runs a new flow run's lineages with the code it imported for an earlier one, nor a
    lineage planned for 2 threads on a TensorFlow set to 3.
    """
    key = (threading.get_ident(), tuple(sorted((environment or {}).items())))
    with _workers_lock:
        kept_generation, worker = _workers.get(key, (None, None))
        if worker is not None and kept_generation == generation:
            return worker
        _workers[key] = (generation, Worker(environment))
    if worker is not None:
        worker.close()
    return _workers[key][1]


@atexit.register
def close_workers() -> None:
    """End every worker's process, and those started ahead that no worker took over."""
    discard_ahead()
    with _workers_lock:
        workers = [worker for _, worker in _workers.values()]
        _workers.clear()
    for worker in workers:
        worker.close()


PARENT_VARIABLE = "MNIST_STUDY_PARENT_PID"  # the process a helper server (the temporary Prefect server) ends with


def prefect_server_app():
    """uvicorn factory of a study's temporary Prefect server: Prefect's app, in a process that exits as soon as the
    study that started it (named by $MNIST_STUDY_PARENT_PID) is gone, however it ended."""
    from prefect.server.api.server import create_app

    parent = int(os.environ[PARENT_VARIABLE])
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()
    return create_app()


def _exit_with_parent(parent: int, poll_seconds: float = 0.5) -> None:
    """End this process as soon as its parent is gone (killed, or cancelled by Prefect): an orphaned
    training would go on writing into the artifacts folder for nothing."""
    while os.getppid() == parent:
        time.sleep(poll_seconds)
    os._exit(1)


def _serve(sender: Connection, parent: int, preload: tuple[str, ...] = PRELOAD) -> None:
    """The child: run each call read from stdin until it closes, answering on `sender`."""
    def log(line: str) -> None:
        sender.send(("log", line))

    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()

    with banners_filtered():  # TensorFlow's start-up lines, which no environment variable silences
        for module in preload:
            importlib.import_module(module)
    sender.send(("ready", None))
    while True:
        try:
            function, args, kwargs = pickle.load(sys.stdin.buffer)
        except EOFError:
            break
        reset_peak_memory()
        try:
            result = ("result", function(*args, log=log, **kwargs))
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the caller
            result = ("error", error)
        try:
            sender.send(result)
        except Exception:  # noqa: BLE001 - an exception or result that cannot be pickled
            sender.send(("error", RuntimeError(f"{type(result[1]).__name__}: {result[1]}")))
    sender.close()


if __name__ == "__main__":  # the child: calls on stdin, answers on the descriptor named in argv
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked since birth: see Worker._spawn
        _serve(Connection(int(sys.argv[1]), readable=False), int(sys.argv[2]), tuple(sys.argv[3:]))
        status = 0
    except KeyboardInterrupt:  # a Ctrl-C at the terminal reaches this process too, between calls, while it
        status = 128 + signal.SIGINT  # starts or imports TensorFlow: the study reports it, not this process
    # Every call has answered and closed its files: skip the interpreter's finalization, which with TensorFlow
    # loaded took 1.5 s per process (measured), seconds the flow spent waiting between its grid and evaluation.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
