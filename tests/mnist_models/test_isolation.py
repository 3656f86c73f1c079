"""Work in a child process of its own: results, errors and log lines come back; a killed child is named."""

import multiprocessing
import os
import signal

import pytest

from mnist_models.isolation import RunCrashedError, Worker, close_workers, describe_exit, run_isolated, worker_for


def add(a, b, *, log):
    log(f"adding {a} and {b}")
    return {"sum": a + b, "pid": os.getpid()}


def fail(*, log):
    raise FileNotFoundError("no such split: test.parquet")


def die(number, *, log):
    log("about to die")
    os.kill(os.getpid(), number)


def test_the_result_and_the_log_lines_come_back_from_another_process():
    lines = []
    result = run_isolated(add, 2, 3, log=lines.append, preload=())
    assert result["sum"] == 5 and result["pid"] != os.getpid()
    assert lines == ["adding 2 and 3"]


def test_an_error_in_the_child_is_raised_with_its_type():
    with pytest.raises(FileNotFoundError, match="no such split"):
        run_isolated(fail, log=lambda line: None, preload=())


@pytest.mark.parametrize(("number", "cause"), [
    (signal.SIGKILL, "killed by signal 9 (SIGKILL); likely out of memory"),
    (signal.SIGSEGV, "killed by signal 11 (SIGSEGV)")])
def test_a_child_killed_by_a_signal_is_named(number, cause):
    started = []
    with pytest.raises(RunCrashedError, match=fr"the process running die {cause.replace('(', '[(]').replace(')', '[)]')}"):
        run_isolated(die, number, log=lambda line: None, on_start=started.append, preload=())
    assert len(started) == 1 and started[0] != os.getpid()


def test_a_ctrl_c_reaching_a_waiting_child_ends_it_without_a_traceback(capfd):
    """A Ctrl-C at the terminal signals the training processes too; the study reports the interruption, so a child
    waiting for its next call (or still importing TensorFlow) exits with 130 and prints nothing of its own."""
    worker = Worker(preload=())
    assert worker.call(add, 1, 2, log=lambda line: None)["sum"] == 3
    process = worker.process
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 128 + signal.SIGINT
    assert "Traceback" not in capfd.readouterr().err
    worker.close()


def test_a_ctrl_c_reaching_a_child_while_its_interpreter_starts_ends_it_without_a_traceback(capfd):
    """The same Ctrl-C, sent the moment the child exists (still inside Python's own start-up, importing `site`):
    it used to end the child with "Fatal Python error: init_import_site" and a traceback on the study's terminal."""
    worker = Worker(preload=())
    with pytest.raises(RunCrashedError, match="exited with status 130"):
        worker.call(add, 1, 2, log=lambda line: None, on_start=lambda pid: os.kill(pid, signal.SIGINT))
    error = capfd.readouterr().err
    assert "Traceback" not in error and "Fatal Python error" not in error, error
    worker.close()


def test_exit_descriptions():
    assert describe_exit(3) == "exited with status 3 before reporting a result"
    assert describe_exit(None) == "did not finish"


def _in_daemon(queue):
    queue.put(run_isolated(add, 1, 1, log=lambda line: None, preload=())["sum"])


def test_works_inside_a_daemonic_process_such_as_a_dask_worker():
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_in_daemon, args=(queue,), daemon=True)
    process.start()
    assert queue.get(timeout=120) == 2
    process.join(timeout=60)


# --------------------------------------------------------------------------- a worker kept for call after call


def test_a_worker_runs_calls_one_after_another_in_one_process():
    worker = Worker(preload=())
    try:
        first, second = worker.call(add, 1, 2, log=lambda line: None), worker.call(add, 3, 4, log=lambda line: None)
        assert (first["sum"], second["sum"]) == (3, 7) and first["pid"] == second["pid"] != os.getpid()
        with pytest.raises(FileNotFoundError, match="no such split"):
            worker.call(fail, log=lambda line: None)
        assert worker.call(add, 0, 0, log=lambda line: None)["pid"] == first["pid"]  # an error keeps the process
    finally:
        worker.close()


def test_a_worker_whose_process_is_killed_names_it_and_starts_a_new_one_for_the_next_call():
    worker = Worker(preload=())
    try:
        before = worker.call(add, 1, 1, log=lambda line: None)["pid"]
        with pytest.raises(RunCrashedError, match=r"the process running die killed by signal 9 \(SIGKILL\)"):
            worker.call(die, signal.SIGKILL, log=lambda line: None)
        after = worker.call(add, 1, 1, log=lambda line: None)["pid"]
        assert after not in (before, os.getpid())
    finally:
        worker.close()


def test_close_workers_ends_every_kept_process():
    pid = worker_for().call(add, 1, 1, log=lambda line: None)["pid"]
    assert worker_for() is worker_for()
    os.kill(pid, 0)  # alive
    close_workers()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def peak_after_allocating(megabytes, *, log):
    from mnist_models.isolation import peak_memory_mb

    block = bytearray(megabytes << 20)
    block[::4096] = b"\1" * len(block[::4096])  # touch every page
    return peak_memory_mb()


def test_each_call_of_a_worker_measures_its_own_peak_memory():
    worker = Worker(preload=())
    try:
        big, small = worker.call(peak_after_allocating, 400, log=print), worker.call(peak_after_allocating, 1, log=print)
        assert big > 400 and small < big - 300  # the second call's peak is not the first's
    finally:
        worker.close()


def test_a_new_generation_gets_a_new_process_and_the_old_one_ends():
    first = worker_for(generation="flow run 1").call(add, 1, 1, log=lambda line: None)["pid"]
    assert worker_for(generation="flow run 1").call(add, 1, 1, log=lambda line: None)["pid"] == first
    second = worker_for(generation="flow run 2").call(add, 1, 1, log=lambda line: None)["pid"]
    assert second != first
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)
    close_workers()


def threads_after_an_op(threads, *, log):
    """Set TensorFlow's threads as a training process does, run one op (TensorFlow is then running), report them."""
    import tensorflow as tf

    from mnist_models.training import configure_threads

    configure_threads(threads)
    tf.add(tf.constant(1), tf.constant(1)).numpy()
    return {"pid": os.getpid(), "threads": tf.config.threading.get_intra_op_parallelism_threads()}


def test_a_kept_process_cannot_change_its_thread_count_so_the_count_is_part_of_its_generation():
    """Spare cores go to the longest lineage, so lineages of one study may train on different thread counts; a
    worker thread's kept TensorFlow cannot switch, and the training task names the count in the worker's generation."""
    try:
        one = worker_for(generation="flow run 1 on 1 thread(s)").call(threads_after_an_op, 1, log=lambda line: None)
        assert one["threads"] == 1
        with pytest.raises(ValueError, match=r"already runs on 1 thread\(s\); the run was planned for 2"):
            worker_for(generation="flow run 1 on 1 thread(s)").call(threads_after_an_op, 2, log=lambda line: None)
        two = worker_for(generation="flow run 1 on 2 thread(s)").call(threads_after_an_op, 2, log=lambda line: None)
        assert two["threads"] == 2 and two["pid"] != one["pid"]
    finally:
        close_workers()


def stop_myself(*, log):
    log("working")
    os.kill(os.getpid(), signal.SIGSTOP)  # a hang: the process is there, but does nothing


def steady(steps, *, log):
    import time

    for step in range(steps):
        time.sleep(0.3)
        log(f"step {step}")
    return steps


def test_a_process_that_reports_no_progress_is_killed_and_named_hung():
    from mnist_models.isolation import RunStalledError

    worker, started = Worker(preload=()), []
    try:
        worker.call(add, 1, 1, log=lambda line: None)  # started: importing TensorFlow takes longer than 2 s here
        with pytest.raises(RunStalledError, match=r"reported no progress for 2 s and was killed \(hung\)"):
            worker.call(stop_myself, log=lambda line: None, on_start=started.append, stall_seconds=2)
        with pytest.raises(ProcessLookupError):
            os.kill(started[0], 0)  # killed and reaped, not left stopped
        # Progress keeps a slow call alive: each log line restarts the clock.
        worker.call(add, 1, 1, log=lambda line: None)
        assert worker.call(steady, 10, log=lambda line: None, stall_seconds=1.5) == 10
    finally:
        worker.close()


def _parent_of_a_worker(pids):
    worker = Worker(preload=())
    pids.put(worker.call(add, 1, 1, log=lambda line: None)["pid"])
    import time

    time.sleep(60)  # killed by the test before this ends


def test_a_worker_process_ends_when_its_parent_is_killed():
    """What cancelling a flow run does to its process: the training processes it started must not live on."""
    import time

    context = multiprocessing.get_context("spawn")
    pids = context.Queue()
    parent = context.Process(target=_parent_of_a_worker, args=(pids,))
    parent.start()
    child = pids.get(timeout=120)
    os.kill(child, 0)  # alive while its parent is
    os.kill(parent.pid, signal.SIGKILL)
    parent.join()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"worker process {child} outlived its killed parent {parent.pid}")


def tensorflow_loaded(*, log):
    import sys

    return "tensorflow" in sys.modules


def test_a_worker_preloads_tensorflow_unless_told_otherwise():
    assert run_isolated(tensorflow_loaded, log=lambda line: None) is True  # training's processes: imported once
    assert run_isolated(tensorflow_loaded, log=lambda line: None, preload=()) is False


def wait_forever(*, log):
    import time

    log("started")
    time.sleep(600)


def test_stop_all_ends_running_calls_at_once_and_starts_no_process_until_allowed():
    import threading
    import time

    from mnist_models.isolation import allow_starts, stop_all

    started, outcome = threading.Event(), {}

    def call():
        try:
            Worker(preload=()).call(wait_forever, log=lambda line: started.set())
        except RunCrashedError as error:
            outcome["error"] = error

    thread = threading.Thread(target=call)
    thread.start()
    assert started.wait(60)
    began = time.monotonic()
    try:
        assert stop_all() == 1
        thread.join(10)
        assert not thread.is_alive() and time.monotonic() - began < 10
        assert "killed by signal 9" in str(outcome["error"])
        with pytest.raises(RunCrashedError, match="not started: the study was interrupted"):
            run_isolated(add, 1, 2, log=lambda line: None, preload=())  # a retry, or a lineage not yet begun
    finally:
        allow_starts()
    assert run_isolated(add, 1, 2, log=lambda line: None, preload=())["sum"] == 3


# --------------------------------------------------------------------------- processes started ahead


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_take_over_the_processes_started_ahead_then_start_their_own():
    from mnist_models.isolation import discard_ahead, start_ahead

    workers = [Worker(preload=()) for _ in range(3)]
    try:
        ahead = start_ahead(2, preload=())
        assert len(ahead) == 2 and os.getpid() not in ahead
        pids = [worker.call(add, 1, 1, log=lambda line: None)["pid"] for worker in workers]
        assert sorted(pids[:2]) == sorted(ahead) and pids[2] not in ahead  # none left for the third
        assert workers[0].call(add, 2, 2, log=lambda line: None)["pid"] == pids[0]  # kept, call after call
        assert discard_ahead() == 0
    finally:
        for worker in workers:
            worker.close()
    assert not any(alive(pid) for pid in pids)


def test_a_process_started_ahead_in_another_environment_is_not_taken_over_and_discarding_ends_it(monkeypatch):
    from mnist_models.isolation import discard_ahead, start_ahead

    (other,) = start_ahead(1, environment={"CUDA_VISIBLE_DEVICES": "0"}, preload=())
    (before_the_change,) = start_ahead(1, preload=())
    monkeypatch.setenv("MNIST_STUDY_TEST_VARIABLE", "set after the start")  # what the process was started without
    worker = Worker(preload=())
    try:
        assert worker.call(add, 1, 1, log=lambda line: None)["pid"] not in (other, before_the_change)
    finally:
        worker.close()
    assert alive(other) and alive(before_the_change)
    assert discard_ahead() == 2
    assert not alive(other) and not alive(before_the_change)


def test_discarding_ends_processes_started_ahead_in_the_middle_of_their_tensorflow_import():
    import time

    from mnist_models.isolation import discard_ahead, start_ahead

    pids = start_ahead(2)  # TensorFlow's import takes seconds: these are still in it
    began = time.monotonic()
    assert discard_ahead(keep=1) == 1 and alive(pids[0]) and not alive(pids[1])
    assert discard_ahead() == 1 and not alive(pids[0])
    assert time.monotonic() - began < 5  # killed, not waited for


def test_stop_all_ends_the_processes_started_ahead_and_starts_none_until_allowed():
    from mnist_models.isolation import allow_starts, discard_ahead, start_ahead, stop_all

    (pid,) = start_ahead(1, preload=())
    try:
        assert stop_all() == 1  # the process started ahead, counted with the workers' processes
        assert not alive(pid)
        assert start_ahead(2, preload=()) == []  # an interrupted study starts nothing
    finally:
        allow_starts()
    assert discard_ahead() == 0
