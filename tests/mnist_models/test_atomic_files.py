"""Tests for mnist_models.atomic_files: atomic files and folders, a full disk, what dead writers leave behind (on this
host or another sharing the folder), and output permissions under the process umask.

Faults are real: child processes under RLIMIT_FSIZE, and child processes that SIGKILL themselves at
every file-system step of a write (found with an audit hook, so no step is skipped or guessed).
"""

from __future__ import annotations

import itertools
import os
import pickle
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from mnist_models.atomic_files import (
    DiskFullError,
    atomic_directory,
    atomic_path,
    directory_bytes,
    host_tag,
    is_disk_full,
    remove_directory,
    remove_stale_temporaries,
    temporary_directory,
    translating_disk_full,
    write_bytes,
)

# Prepended to a child's script: SIGKILL the child at its N-th file-system step under a root folder.
_KILL_AT_STEP = textwrap.dedent("""
    import os, signal, sys
    _ROOT, _KILL_AT = sys.argv[1], int(sys.argv[2])
    _STEPS = {"open", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.chmod", "shutil.rmtree"}
    _seen = 0

    def _kill_at_step(event, args):
        global _seen
        path = args[0] if args else None
        if event in _STEPS and isinstance(path, (str, os.PathLike)):
            path = os.fspath(path)
            if path.startswith(_ROOT) or not os.path.isabs(path):  # rmtree names files relative to a folder
                _seen += 1
                if _seen == _KILL_AT:
                    os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(_kill_at_step)
""")


def kill_at_every_step(script: str, root: Path, reset: Callable[[], None], check: Callable[[int], str]) -> list[str]:
    """Run `script` once per file-system step, SIGKILLed at that step; return `check`'s verdict for each.

    `reset` prepares `root` before each run; `check(step)` inspects what the killed child left. The last
    run is the one that completes (exit 0), so the list ends with the verdict on a finished write.
    """
    verdicts = []
    for step in itertools.count(1):
        assert step < 200, "the child never completed"
        reset()
        child = subprocess.run([sys.executable, "-c", _KILL_AT_STEP + textwrap.dedent(script), str(root), str(step)],
                               capture_output=True, text=True, timeout=120)
        assert child.returncode in (0, -signal.SIGKILL), child.stderr
        verdicts.append(check(step))
        if child.returncode == 0:
            return verdicts
    raise AssertionError("unreachable")


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_with_file_size_limit(script: str, limit: int, *args: str) -> subprocess.CompletedProcess:
    """Run `script` in a child Python whose files may not grow beyond `limit` bytes (RLIMIT_FSIZE)."""
    prologue = "import signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # EFBIG, not death by signal
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(script), *args],
                          preexec_fn=_limit_file_size(limit), capture_output=True, text=True, timeout=120)


def _entries(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# --------------------------------------------------------------------------- atomic files


def test_write_bytes_replaces_the_file_and_leaves_no_temporary(tmp_path):
    write_bytes(tmp_path / "a.bin", b"old")
    write_bytes(tmp_path / "a.bin", b"new")

    assert (tmp_path / "a.bin").read_bytes() == b"new"
    assert _entries(tmp_path) == ["a.bin"]


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_path(tmp_path / "a.bin") as temporary:
            temporary.write_bytes(b"ne")
            raise RuntimeError("half way")

    assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert _entries(tmp_path) == ["a.bin"]


# --------------------------------------------------------------------------- a full disk


WRITE_UNDER_LIMIT = """
    import sys
    from mnist_models.atomic_files import DiskFullError, write_bytes
    try:
        write_bytes(sys.argv[1], bytes(int(sys.argv[2])))
    except DiskFullError as error:
        sys.exit(f"DiskFullError: {error}")
    print("written")
"""


def test_a_file_larger_than_the_limit_fails_clearly_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "raw" / "train-images.gz"
    target.parent.mkdir()
    target.write_bytes(b"the previous, complete file")

    child = run_with_file_size_limit(WRITE_UNDER_LIMIT, 64 * 1024, str(target), str(256 * 1024))

    assert child.returncode == 1, child.stdout + child.stderr
    message = child.stderr.strip().splitlines()[-1]
    assert message.startswith("DiskFullError: cannot write")
    assert str(target) in message
    assert "262,144 bytes needed" in message
    assert "File too large" in message
    assert "free space on that disk" in message and "--artifacts-dir" in message
    assert target.read_bytes() == b"the previous, complete file"
    assert _entries(target.parent) == ["train-images.gz"]  # no partial, no temporary


def test_the_same_write_with_room_completes(tmp_path):
    target = tmp_path / "train-images.gz"

    child = run_with_file_size_limit(WRITE_UNDER_LIMIT, 1024 * 1024, str(target), str(256 * 1024))

    assert child.returncode == 0, child.stderr
    assert target.stat().st_size == 256 * 1024


def test_a_parquet_table_too_large_for_the_disk_names_its_file(tmp_path):
    script = """
        import sys
        import numpy as np, pandas as pd
        from mnist_models import tables
        from mnist_models.atomic_files import DiskFullError
        try:
            tables.write_table(pd.DataFrame({"x": np.random.default_rng(0).random(100_000)}), sys.argv[1], "summary")
        except DiskFullError as error:
            sys.exit(f"DiskFullError: {error}")
    """
    child = run_with_file_size_limit(script, 64 * 1024, str(tmp_path))

    assert child.returncode == 1, child.stdout + child.stderr
    assert f"DiskFullError: cannot write {str(tmp_path / 'summary.parquet')!r}" in child.stderr
    assert _entries(tmp_path) == []


def test_other_os_errors_pass_through_untranslated(tmp_path):
    with pytest.raises(PermissionError):
        with translating_disk_full(tmp_path / "x"):
            raise PermissionError(13, "Permission denied")


@pytest.mark.parametrize(("error", "full"), [
    (OSError(28, "No space left on device"), True),
    (OSError(27, "File too large"), True),
    (OSError("IOError: error writing to 'x.parquet'. Detail: [errno 28] No space left on device"), True),
    (OSError(2, "No such file or directory"), False),
    (ValueError("No space left on device"), False),
])
def test_disk_full_is_recognised_by_errno_or_by_the_text_a_library_kept(error, full):
    assert is_disk_full(error) is full


def test_disk_full_error_survives_pickling_across_processes(tmp_path):
    with pytest.raises(DiskFullError) as caught:
        with translating_disk_full(tmp_path / "model.keras", bytes_needed=1000):
            raise OSError(28, "No space left on device")

    copy = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(copy, OSError) and str(copy) == str(caught.value)
    assert "1,000 bytes needed" in str(copy) and "No space left on device" in str(copy)


# --------------------------------------------------------------------------- atomic folders


def _write_run(path: Path, content: str) -> None:
    with atomic_directory(path) as work:
        (work / "model.keras").write_text(content)
        (work / "manifest.json").write_text(content)


def test_atomic_directory_replaces_the_old_folder_and_leaves_nothing_beside_it(tmp_path):
    _write_run(tmp_path / "run-a", "old")
    _write_run(tmp_path / "run-a", "new")

    assert _entries(tmp_path) == ["run-a"]
    assert _entries(tmp_path / "run-a") == ["manifest.json", "model.keras"]
    assert (tmp_path / "run-a" / "model.keras").read_text() == "new"


def test_a_failing_block_keeps_the_old_folder(tmp_path):
    _write_run(tmp_path / "run-a", "old")
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "run-a") as work:
            (work / "model.keras").write_text("new")
            raise RuntimeError("training diverged")

    assert _entries(tmp_path) == ["run-a"]
    assert (tmp_path / "run-a" / "model.keras").read_text() == "old"


def test_a_crash_at_any_step_leaves_the_old_or_the_new_folder_once_cleaned_up(tmp_path):
    runs = tmp_path / "runs"
    script = """
        import sys
        from pathlib import Path
        from mnist_models.atomic_files import atomic_directory
        with atomic_directory(Path(sys.argv[1]) / "run-a") as work:
            (work / "model.keras").write_text("new")
            (work / "manifest.json").write_text("new")
    """

    def reset() -> None:
        if runs.exists():
            remove_directory(runs)
        _write_run(runs / "run-a", "old")

    def check(step: int) -> str:
        put_back = not (runs / "run-a").exists()
        remove_stale_temporaries(runs)
        assert _entries(runs) == ["run-a"], f"step {step}"
        contents = {(runs / "run-a" / name).read_text() for name in ("model.keras", "manifest.json")}
        assert contents in ({"old"}, {"new"}), f"step {step}: a mixed folder {contents}"
        return "old, put back" if put_back else contents.pop()

    verdicts = kill_at_every_step(script, runs, reset, check)

    # Killed before the new folder is renamed in: the old one (put back if it was aside); after: the new.
    order = ["old", "old, put back", "new"]
    assert verdicts == sorted(verdicts, key=order.index)
    assert set(verdicts) == set(order)
    assert verdicts[-1] == "new"


def test_temporaries_of_a_killed_writer_are_removed_and_a_live_writers_kept(tmp_path):
    script = """
        import sys, time
        from pathlib import Path
        from mnist_models.atomic_files import atomic_directory
        with atomic_directory(Path(sys.argv[1]) / "run-b") as work:
            (work / "model.keras").write_bytes(bytes(1000))
            print(work, flush=True)
            time.sleep(120)
    """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        dead_writers_folder = Path(child.stdout.readline().strip())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert dead_writers_folder.parent == tmp_path
    assert dead_writers_folder.name.startswith(f".run-b.{child.pid}@{host_tag()}.")

    with atomic_path(tmp_path / "nested" / "table.csv") as live_temporary:
        live_temporary.write_text("still being written")
        removed = remove_stale_temporaries(tmp_path)

        assert removed == [dead_writers_folder]
        assert not dead_writers_folder.exists()
        assert live_temporary.read_text() == "still being written"
    assert _entries(tmp_path) == ["nested"]
    assert (tmp_path / "nested" / "table.csv").read_text() == "still being written"


def test_files_that_only_look_like_temporaries_are_left_alone(tmp_path):
    lookalikes = [".run-c.lock", ".notes.tmp", ".run-c.123abc.x.new.tmp", ".run-c.99.xyz.other.tmp",
                  "run-c.1.x.new.tmp", ".run-c.99@.x.new.tmp", ".run-c.99@a@b.x.new.tmp", ".run-c.@host.x.new.tmp"]
    for name in lookalikes:
        (tmp_path / name).write_text("keep")

    assert remove_stale_temporaries(tmp_path) == []
    assert _entries(tmp_path) == sorted(lookalikes)


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped (nothing runs under it now, barring reuse)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def _plant(folder: Path, name: str, *, as_folder: bool = True) -> Path:
    """A temporary left by a writer, with a file inside when it is a folder."""
    path = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    if as_folder:
        path.mkdir()
        (path / "model.keras").write_bytes(bytes(100))
    else:
        path.write_text("half written")
    return path


def test_only_this_hosts_dead_writers_temporaries_are_removed(tmp_path):
    dead = _dead_pid()
    ours = [_plant(tmp_path, f".run-a.{dead}@{host_tag()}.k3j2x9aa.new.tmp"),
            _plant(tmp_path, f".table.csv.{dead}@{host_tag()}.q1w2e3r4.new.tmp", as_folder=False),
            _plant(tmp_path / "checkpoints", f".live.{dead}@{host_tag()}.zz9y8x7w.new.tmp")]
    before_hosts = [_plant(tmp_path, f".run-b.{dead}.abcd1234.new.tmp"),  # named before temporaries named their host
                    _plant(tmp_path, f".run-b.json.{dead}.abcd1234.new.tmp", as_folder=False)]
    other_host = "worker-7" if host_tag() != "worker-7" else "worker-8"
    theirs = [_plant(tmp_path, f".run-c.{dead}@{other_host}.k3j2x9aa.new.tmp"),
              _plant(tmp_path, f".run-d.{dead}@{other_host}.k3j2x9aa.trash.tmp"),
              _plant(tmp_path, f".run-e.{os.getpid()}@{other_host}.k3j2x9aa.old.tmp"),
              _plant(tmp_path, f".table.csv.{dead}@{other_host}.q1w2e3r4.new.tmp", as_folder=False)]

    removed = remove_stale_temporaries(tmp_path)

    assert sorted(removed) == sorted(ours + before_hosts)
    assert not any(path.exists() for path in ours + before_hosts)
    assert all(path.exists() for path in theirs)
    assert (theirs[0] / "model.keras").read_bytes() == bytes(100)
    assert not (tmp_path / "run-e").exists()  # another host's folder aside is not put back either


def test_this_hosts_old_folder_aside_is_put_back_and_another_hosts_is_not(tmp_path):
    dead = _dead_pid()
    other_host = "worker-7" if host_tag() != "worker-7" else "worker-8"
    ours = _plant(tmp_path, f".run-a.{dead}@{host_tag()}.k3j2x9aa.old.tmp")
    theirs = _plant(tmp_path, f".run-b.{dead}@{other_host}.k3j2x9aa.old.tmp")

    assert remove_stale_temporaries(tmp_path) == [ours]
    assert _entries(tmp_path) == [theirs.name, "run-a"]
    assert (tmp_path / "run-a" / "model.keras").read_bytes() == bytes(100)


def test_a_nested_artifacts_root_is_left_to_its_own_run(tmp_path):
    dead = _dead_pid()
    top = _plant(tmp_path / "runs", f".run-a.{dead}@{host_tag()}.k3j2x9aa.new.tmp")
    (tmp_path / ".lock").write_text("")  # the root being cleaned holds its own lock: it is still walked
    quick = tmp_path / "quick"
    nested = _plant(quick / "runs", f".run-a.{dead}@{host_tag()}.k3j2x9aa.new.tmp")
    (quick / ".lock").write_text("pid 1 on host elsewhere since 2026-12-01 02:00:00\n")

    assert remove_stale_temporaries(tmp_path) == [top]
    assert nested.exists()

    assert remove_stale_temporaries(quick) == [nested]  # its own run cleans it
    assert not nested.exists()


def test_a_temporary_directory_is_named_for_this_process_and_host(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    temporary = temporary_directory(tmp_path / "checkpoints" / "live")

    assert temporary.parent == tmp_path / "checkpoints" and temporary.is_dir()
    assert temporary.name.startswith(f".live.{os.getpid()}@{host_tag()}.") and temporary.name.endswith(".new.tmp")
    assert remove_stale_temporaries(tmp_path) == []  # its writer (this process) is alive


# --------------------------------------------------------------------------- permissions


@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"), [(0o077, 0o600, 0o700), (0o022, 0o644, 0o755),
                                                                  (0o002, 0o664, 0o775)])
def test_outputs_get_the_permissions_the_umask_allows(tmp_path, umask, file_mode, folder_mode):
    script = """
        import os, sys
        from pathlib import Path
        from mnist_models.atomic_files import atomic_directory, write_text
        root = Path(sys.argv[1])
        write_text(root / "table.csv", "a,b\\n")
        with atomic_directory(root / "run-a") as work:
            (work / "model.keras").write_text("weights")
        print(oct(os.umask(0)))  # the umask is as the child started: reading it did not change it
    """
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
                           preexec_fn=lambda: os.umask(umask), capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr

    assert child.stdout.strip() == oct(umask)
    assert (tmp_path / "table.csv").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "run-a").stat().st_mode & 0o777 == folder_mode
    assert (tmp_path / "run-a" / "model.keras").stat().st_mode & 0o777 == file_mode


def test_remove_directory_frees_the_name_at_once_and_reports_the_bytes(tmp_path):
    _write_run(tmp_path / "run-d", "x" * 1000)
    (tmp_path / "run-d" / "sub").mkdir()
    (tmp_path / "run-d" / "sub" / "events").write_bytes(bytes(500))
    assert directory_bytes(tmp_path / "run-d") == 2500

    assert remove_directory(tmp_path / "run-d") == 2500
    assert _entries(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        remove_directory(tmp_path / "run-d")
    assert _entries(tmp_path) == []
