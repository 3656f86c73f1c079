"""Tests for mnist_models.locking with real concurrent processes: a run lock waits, the artifacts lock refuses;
a lock file planted as a symbolic link or a FIFO is refused without touching what it points at."""

from __future__ import annotations

import json
import os
import signal
import string
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from mnist_models.atomic_files import host_tag
from mnist_models.locking import ArtifactsLockedError, RunLockTimeoutError, artifacts_lock, run_lock

# A child that takes a lock, says so on stdout, and holds it until killed.
HOLD_LOCK = """
    import sys, time
    from mnist_models import locking
    with getattr(locking, sys.argv[1])(sys.argv[2]):
        print("locked", flush=True)
        time.sleep(120)
"""

# A child that trains run-a under its run lock unless it finds the finished folder; it reports when.
TRAIN_ONCE = """
    import json, sys, time
    from pathlib import Path
    from mnist_models.atomic_files import atomic_directory
    from mnist_models.locking import run_lock
    run_dir = Path(sys.argv[1]) / "run-a"
    started = time.time()
    with run_lock(run_dir, poll=0.05):
        acquired = time.time()
        print("locked", flush=True)
        reused = run_dir.exists()
        if not reused:
            with atomic_directory(run_dir) as work:
                time.sleep(1.0)  # training
                (work / "model.keras").write_text(sys.argv[2])
        released = time.time()
    print(json.dumps({"started": started, "acquired": acquired, "released": released, "reused": reused}))
"""


def _start(script: str, *args: str) -> subprocess.Popen:
    """Start a child Python and wait until it reports that it holds its lock."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline().strip()
    assert line == "locked", child.stderr.read() if child.poll() is not None else line
    return child


@pytest.fixture
def holder(tmp_path) -> Iterator:
    """Start a child holding a lock (by function name and path); kill whatever is still running afterwards."""
    children = []

    def start(lock: str, path) -> subprocess.Popen:
        children.append(_start(HOLD_LOCK, lock, str(path)))
        return children[-1]

    yield start
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        child.stderr.close()


def test_a_second_process_waits_for_the_run_and_then_reuses_its_folder(tmp_path):
    first = _start(TRAIN_ONCE, str(tmp_path), "first")
    second = subprocess.Popen([sys.executable, "-c", textwrap.dedent(TRAIN_ONCE), str(tmp_path), "second"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_out, first_err = first.communicate(timeout=60)
    second_out, second_err = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, first_err + second_err

    first_times = json.loads(first_out.splitlines()[-1])
    second_times = json.loads(second_out.splitlines()[-1])
    assert not first_times["reused"] and second_times["reused"]
    assert second_times["acquired"] >= first_times["released"]
    assert second_times["acquired"] - second_times["started"] >= 0.5  # it waited, it did not fail
    assert (tmp_path / "run-a" / "model.keras").read_text() == "first"


def test_a_run_lock_wait_can_be_bounded_and_names_the_holder(tmp_path, holder):
    child = holder("run_lock", tmp_path / "runs" / "run-a")

    started = time.monotonic()
    with pytest.raises(RunLockTimeoutError) as caught:
        with run_lock(tmp_path / "runs" / "run-a", timeout=0.5, poll=0.05):
            pass

    assert 0.5 <= time.monotonic() - started < 5
    run_dir = tmp_path / "runs" / "run-a"
    assert f"run folder {str(run_dir)!r} is still being written by pid {child.pid} on host {host_tag()}" in str(
        caught.value)
    assert isinstance(caught.value, OSError)


def test_a_killed_holder_releases_the_run_lock(tmp_path, holder):
    child = holder("run_lock", tmp_path / "runs" / "run-a")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)

    with run_lock(tmp_path / "runs" / "run-a", timeout=5, poll=0.05) as path:
        assert path == tmp_path / "runs" / ".run-a.lock"
        assert path.read_text().startswith("pid ")


def test_run_locks_of_different_runs_do_not_wait_for_each_other(tmp_path, holder):
    holder("run_lock", tmp_path / "runs" / "run-a")

    started = time.monotonic()
    with run_lock(tmp_path / "runs" / "run-b", timeout=5):
        pass
    assert time.monotonic() - started < 1


def test_the_artifacts_lock_fails_at_once_for_a_second_process(tmp_path, holder):
    child = holder("artifacts_lock", tmp_path)

    started = time.monotonic()
    with pytest.raises(ArtifactsLockedError) as caught:
        with artifacts_lock(tmp_path):
            pass

    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert f"artifacts directory {str(tmp_path)!r} is in use by pid {child.pid} on host {host_tag()} since " in message
    assert "another --artifacts-dir" in message


def test_the_lock_file_names_the_host_of_its_holder(tmp_path):
    with artifacts_lock(tmp_path) as path:
        holder = path.read_text()
    assert holder.startswith(f"pid {os.getpid()} on host {host_tag()} since ")
    assert host_tag() and set(host_tag()) <= set(string.ascii_letters + string.digits + "-")


@pytest.mark.parametrize(("take", "lock_name"), [(artifacts_lock, ".lock"),
                                                 (lambda root: run_lock(root / "run-a"), ".run-a.lock")],
                         ids=["artifacts_lock", "run_lock"])
def test_a_planted_symbolic_link_is_refused_and_its_target_left_untouched(tmp_path, take, lock_name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / lock_name).symlink_to(victim)

    with pytest.raises(ValueError) as caught:
        with take(artifacts):
            pass

    assert victim.read_text() == "precious data\n"
    lock_file = str(artifacts / lock_name)
    assert f"lock file {lock_file!r} is a symbolic link (to {str(victim)!r}); expected a regular file" in str(
        caught.value)


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / ".lock")

    with pytest.raises(ValueError, match=r"lock file .*/\.lock' is not a regular file; expected a regular file"):
        with artifacts_lock(tmp_path, timeout=0):
            pass
