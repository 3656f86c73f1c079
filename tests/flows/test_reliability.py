"""Faults injected for real into the command line: a training process killed with SIGKILL, a full disk.

Each test runs `python flows/...` as a user would, against the session's Prefect test server.
"""

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPOSITORY = Path(__file__).resolve().parents[2]
TWO_RUNS = ["--profile", "quick", "--models", "dnn,convnet", "--learning-rates", "0.01", "--epochs", "1",
            "--train-subset", "1000", "--gradient-models", ""]
TRAINING_PROCESS = re.compile(r"(convnet-\S+): training .* in process (\d+)")


def _environment(mnist_dir: Path) -> dict[str, str]:
    return {**os.environ, "MNIST_MIRROR": str(mnist_dir), "PREFECT_API_URL": PREFECT_API_URL.value(),
            "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run_killing_convnet(artifacts: Path, mnist_dir: Path, kills: int) -> tuple[int, str]:
    """Run the study; SIGKILL convnet's training process the first `kills` times one starts."""
    process = subprocess.Popen([sys.executable, "flows/full_study.py", "--artifacts-dir", str(artifacts), *TWO_RUNS],
                               cwd=REPOSITORY, env=_environment(mnist_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines, killed = [], 0
    for line in process.stdout:
        lines.append(line)
        match = TRAINING_PROCESS.search(line)
        if match and killed < kills:
            os.kill(int(match.group(2)), signal.SIGKILL)  # what the kernel's OOM killer does
            killed += 1
    assert process.wait(timeout=600) is not None and killed == kills, "".join(lines)[-3000:]
    return process.returncode, "".join(lines)


def test_a_killed_training_process_is_retried_once_and_the_grid_completes(tmp_path, mnist_dir):
    returncode, output = _run_killing_convnet(tmp_path, mnist_dir, kills=1)
    assert returncode == 0, output[-3000:]
    assert "killed by signal 9 (SIGKILL); likely out of memory" in output
    assert "BrokenProcessPool" not in output and "leaked semaphore" not in output
    summary = pd.read_parquet(tmp_path / "tables" / "summary.parquet")
    assert sorted(summary["model"]) == ["convnet", "dnn"]


def test_a_run_killed_twice_is_reported_and_loses_only_itself(tmp_path, mnist_dir):
    returncode, output = _run_killing_convnet(tmp_path, mnist_dir, kills=2)
    assert returncode == 1
    assert re.search(r"error: 1 of 2 runs failed .*\n\s+convnet-\S+: RunCrashedError: the process running train_lineage "
                     r"killed by signal 9 \(SIGKILL\); likely out of memory", output), output[-3000:]
    assert "BrokenProcessPool" not in output and "leaked semaphore" not in output
    # dnn's run was trained, evaluated and reported; the next run trains only convnet.
    assert pd.read_parquet(tmp_path / "tables" / "summary.parquet")["model"].tolist() == ["dnn"]
    assert (tmp_path / "report" / "report.html").exists()
    # The outputs say what is missing and why: the failures table, the report's first lines, the heatmap's cell.
    failures = pd.read_parquet(tmp_path / "tables" / "failures.parquet")
    assert failures["model"].tolist() == ["convnet"] and "SIGKILL" in failures["cause"].iloc[0]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "1 planned run failed and has no result in this report" in report and "convnet-lr0.01" in report
    assert not [path for path in (tmp_path / "runs").iterdir() if path.name.startswith(".convnet")
                and path.suffix == ".tmp" and path.is_dir() and _writer_alive(path)]


def _writer_alive(path: Path) -> bool:
    return _alive(int(path.name.rsplit(".", 4)[1].split("@")[0]))


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_stops_with_one_clear_message_and_the_next_run_completes(tmp_path, mnist_dir):
    command = [sys.executable, "flows/prepare_data.py", "--artifacts-dir", str(tmp_path)]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=REPOSITORY, env=_environment(mnist_dir), capture_output=True, text=True,
                               timeout=300, preexec_fn=_limit_file_size(2 * 2**20))
    assert completed.returncode == 1, completed.stderr[-3000:]
    error = completed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "cannot write" in error and "bytes needed" in error, error
    assert "train-images-idx3-ubyte.gz" in completed.stderr and "Traceback" not in completed.stderr
    leftovers = [path for path in tmp_path.rglob("*") if path.is_file() and path.suffix in (".gz", ".parquet", ".tmp")]
    sizes = {path.name: path.stat().st_size for path in leftovers}
    assert all(size < 2 * 2**20 for size in sizes.values()) and not any(".tmp" in name for name in sizes), sizes
    assert not (tmp_path / "data" / "mnist" / "train.parquet").exists()

    completed = subprocess.run(command, cwd=REPOSITORY, env=_environment(mnist_dir), capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "data" / "mnist" / "train.parquet").exists()
    assert time.monotonic() - started < 300


def test_a_flow_killed_mid_run_resumes_at_its_last_epoch(tmp_path, mnist_dir):
    """kill -9 of the whole flow (its process group) during epoch 3 of 4; the next run continues from epoch 2."""
    options = ["--profile", "quick", "--models", "dnn", "--learning-rates", "0.001", "--epochs", "4",
               "--train-subset", "20000", "--gradient-models", "", "--artifacts-dir", str(tmp_path)]
    process = subprocess.Popen([sys.executable, "flows/full_study.py", *options], cwd=REPOSITORY,
                               env=_environment(mnist_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "epoch 2/4" in line:
            deadline = time.monotonic() + 30
            while not list((tmp_path / "runs" / ".checkpoints").glob("*/epoch-0002/state.json")):
                assert time.monotonic() < deadline, "".join(lines)[-3000:]
                time.sleep(0.05)
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not list((tmp_path / "runs").glob("dnn-*/manifest.json"))

    completed = subprocess.run([sys.executable, "flows/full_study.py", *options], cwd=REPOSITORY,
                               env=_environment(mnist_dir), capture_output=True, text=True, timeout=600)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert re.search(r"continuing from epoch [23] of checkpoint", output), output[-3000:]
    assert "epoch 1/4" not in output
    assert not [path for path in tmp_path.rglob("*.tmp")]  # the killed run's temporaries were removed


LINEAGE = ["--profile", "quick", "--models", "dnn", "--learning-rates", "0.001", "--epochs", "1",
           "--gradient-models", "dnn", "--gradient-learning-rate", "0.001", "--gradient-epochs", "4",
           "--train-subset", "20000"]


def test_a_lineage_killed_at_epoch_3_of_4_resumes_there_and_ends_with_straight_through_weights(tmp_path, mnist_dir):
    """SIGKILL of the training process at epoch 3 of a 1+4-epoch lineage: the retry continues from the epoch-3
    checkpoint, the finished 1-epoch run is neither retrained nor counted failed, and the 4-epoch weights equal
    those of an uninterrupted run."""
    killed_dir, straight_dir = tmp_path / "killed", tmp_path / "straight"
    process = subprocess.Popen([sys.executable, "flows/full_study.py", "--artifacts-dir", str(killed_dir), *LINEAGE],
                               cwd=REPOSITORY, env=_environment(mnist_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines, training_pid, killed = [], None, False
    for line in process.stdout:
        lines.append(line)
        match = re.search(r"training dnn .* in process (\d+)", line)
        if match:
            training_pid = int(match.group(1))
        if "epoch 3/4" in line and not killed:
            deadline = time.monotonic() + 30
            while not list((killed_dir / "runs" / ".checkpoints").glob("*/epoch-0003/state.json")):
                assert time.monotonic() < deadline, "".join(lines)[-3000:]
                time.sleep(0.05)
            os.kill(training_pid, signal.SIGKILL)
            killed = True
    output = "".join(lines)
    assert process.wait(timeout=600) == 0 and killed, output[-3000:]
    after_kill = output.split("killed by signal 9", 1)[1]
    assert "continuing from epoch 3 of checkpoint" in after_kill, output[-3000:]
    assert "epoch 1/4" not in after_kill and "epoch 2/4" not in after_kill
    summary = pd.read_parquet(killed_dir / "tables" / "summary.parquet")
    assert sorted(summary["epochs"]) == [1, 4]  # both runs reported, none failed

    completed = subprocess.run([sys.executable, "flows/full_study.py", "--artifacts-dir", str(straight_dir), *LINEAGE],
                               cwd=REPOSITORY, env=_environment(mnist_dir), capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    import keras

    def weights(root: Path) -> list:
        (folder,) = [path for path in (root / "runs").glob("dnn-lr0.001-e4-*") if path.is_dir()]
        return keras.saving.load_model(folder / "model.keras").get_weights()

    for resumed, straight in zip(weights(killed_dir), weights(straight_dir), strict=True):
        assert (resumed == straight).all()  # to the last bit


def test_a_diverging_learning_rate_is_a_result_not_a_failure(tmp_path, mnist_dir):
    """LR 1e6 makes the loss NaN: the run stops early, is kept as diverged at chance accuracy, shown as such in the
    summary and the report, and the flow exits 0 with the other run intact."""
    options = ["--profile", "quick", "--models", "dnn", "--learning-rates", "1000000,0.001", "--epochs", "3",
               "--gradient-models", "", "--artifacts-dir", str(tmp_path)]
    completed = subprocess.run([sys.executable, "flows/full_study.py", *options], cwd=REPOSITORY,
                               env=_environment(mnist_dir), capture_output=True, text=True, timeout=600)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert re.search(r"dnn-lr1e\+06-\S+: DIVERGED at epoch 1", output), output[-3000:]
    assert "epoch 2/3" not in output.split("DIVERGED")[0].split("dnn-lr1e+06")[-1]
    summary = pd.read_parquet(tmp_path / "tables" / "summary.parquet").set_index("learning_rate")
    assert summary.loc[1e6, "status"] == "diverged at epoch 1"
    assert summary.loc[1e6, "accuracy"] < 0.2 and summary.loc[0.001, "status"] == "trained"
    assert summary.loc[0.001, "accuracy"] > 0.8
    manifest = json.loads(next((tmp_path / "runs").glob("dnn-lr1e+06-*/manifest.json")).read_text())
    assert manifest["diverged"]["epoch"] == 1 and manifest["parameters"]["epochs"] == 3
    report = (tmp_path / "report" / "report.md").read_text()
    assert "1 run diverged" in report and "diverged at epoch 1" in report
    assert pd.read_parquet(tmp_path / "tables" / "failures.parquet").empty


def test_a_hung_training_process_is_killed_retried_and_the_grid_completes(tmp_path, mnist_dir):
    """SIGSTOP of convnet's training process (a hang: alive, silent): after --stall-timeout seconds without a
    progress line it is killed and named hung, the lineage is retried in a new process, and the flow exits 0."""
    process = subprocess.Popen([sys.executable, "flows/full_study.py", "--artifacts-dir", str(tmp_path), *TWO_RUNS,
                                "--stall-timeout", "20"],
                               cwd=REPOSITORY, env=_environment(mnist_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines, stopped = [], None
    for line in process.stdout:
        lines.append(line)
        match = TRAINING_PROCESS.search(line)
        if match and stopped is None:
            stopped = int(match.group(2))
            os.kill(stopped, signal.SIGSTOP)
    output = "".join(lines)
    assert process.wait(timeout=600) == 0 and stopped, output[-3000:]
    assert "reported no progress for 20 s and was killed (hung)" in output, output[-3000:]
    with pytest.raises(ProcessLookupError):
        os.kill(stopped, 0)  # killed and reaped, not left stopped
    assert sorted(pd.read_parquet(tmp_path / "tables" / "summary.parquet")["model"]) == ["convnet", "dnn"]


def test_when_every_run_fails_nothing_earlier_is_published_as_this_run_s(tmp_path, mnist_dir):
    """A finished study, then a run whose only training is killed twice: the flow fails with the cause, the
    failures table names the run, and the study-report artifact says there is no result (not the old report)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    base = ["--profile", "quick", "--models", "dnn", "--epochs", "1", "--train-subset", "1000",
            "--gradient-models", "", "--artifacts-dir", str(tmp_path)]
    completed = subprocess.run([sys.executable, "flows/full_study.py", *base, "--learning-rates", "0.01"],
                               cwd=REPOSITORY, env=_environment(mnist_dir), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    process = subprocess.Popen([sys.executable, "flows/full_study.py", *base, "--learning-rates", "0.001"],
                               cwd=REPOSITORY, env=_environment(mnist_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines, killed = [], 0
    for line in process.stdout:
        lines.append(line)
        match = re.search(r"training dnn .* in process (\d+)", line)
        if match and killed < 2:
            os.kill(int(match.group(1)), signal.SIGKILL)
            killed += 1
    output = "".join(lines)
    assert process.wait(timeout=600) == 1 and killed == 2, output[-3000:]
    assert re.search(r"error: 1 of 1 runs failed .*\n\s+dnn-lr0.001-\S+: RunCrashedError", output), output[-3000:]
    failures = pd.read_parquet(tmp_path / "tables" / "failures.parquet")
    assert failures["learning_rate"].tolist() == [0.001] and "SIGKILL" in failures["cause"].iloc[0]
    with get_client(sync_client=True) as client:
        (report,) = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=["study-report"])))
    assert "No result in this run" in report.data and "dnn-lr0.001" in report.data, report.data[:500]


def test_the_grid_s_progress_is_an_artifact_read_back_from_the_server_while_it_trains(tmp_path, mnist_dir):
    """The Prefect UI shows `k of N runs done` as a progress artifact, updated as each lineage finishes."""
    import threading

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    process = subprocess.Popen([sys.executable, "flows/full_study.py", "--artifacts-dir", str(tmp_path), *TWO_RUNS,
                                "--workers", "1"], cwd=REPOSITORY, env=_environment(mnist_dir),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, done = set(), threading.Event()

    def poll() -> None:  # what the UI would show, read from the server every 0.2 s while the flow runs
        with get_client(sync_client=True) as client:
            while not done.is_set():
                for artifact in client.read_artifacts(artifact_filter=ArtifactFilter(
                        key=ArtifactFilterKey(any_=["training-grid"]))):
                    seen.add((str(artifact.flow_run_id), float(artifact.data), artifact.description))
                time.sleep(0.2)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        output = process.communicate(timeout=600)[0]
    finally:
        done.set()
        poller.join()
    assert process.returncode == 0, output[-3000:]
    (run,) = re.findall(r"Beginning subflow run .* for flow 'train-grid'\n.*View at \S+/flow-run/(\S+)", output) or [None]
    values = sorted({value for flow_run, value, description in seen if "of 2" in (description or "")
                     and (run is None or flow_run == run)})
    assert values[-1] == 100.0 and 50.0 in values, seen  # one of two done, then both, seen while the flow ran


def _servers_of(pid: int) -> list[int]:
    """Processes started for the study `pid` in their own session: its temporary Prefect server."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"MNIST_STUDY_PARENT_PID={pid}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _study_in_its_own_group(tmp_path: Path, mnist_dir: Path) -> subprocess.Popen:
    """The two-run study from the command line, as from a terminal: its own process group, its own temporary
    server, output in one text stream."""
    environment = {**_environment(mnist_dir), "PREFECT_HOME": str(tmp_path / "prefect")}
    environment.pop("PREFECT_API_URL")  # the study starts its own temporary server, as on a user's machine
    return subprocess.Popen([sys.executable, "flows/full_study.py", "--artifacts-dir", str(tmp_path / "artifacts"),
                             *TWO_RUNS], cwd=REPOSITORY, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            # As from a terminal: a test suite started in the background (`make test &`) would
                            # otherwise hand the study an ignored SIGINT, which Python then leaves ignored.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("how", ["SIGTERM to the study", "Ctrl-C at the terminal", "SIGKILL to the study"])
def test_an_interrupted_study_stops_its_training_and_its_server_at_once(tmp_path, mnist_dir, how):
    """`kill`, a cancelled deployment run (SIGTERM) or Ctrl-C (SIGINT to the whole foreground group) used to wait for
    every lineage to finish its epochs; now the study stops its training processes, then its temporary server,
    and exits with the signal's status. Even SIGKILL leaves no training process and no server behind."""
    process = _study_in_its_own_group(tmp_path, mnist_dir)
    lines, training = [], []
    for line in process.stdout:
        lines.append(line)
        if match := TRAINING_PROCESS.search(line):
            training.append(int(match.group(2)))
            break
    assert training, "".join(lines)[-3000:]
    servers = _servers_of(process.pid)
    assert len(servers) == 1, "".join(lines)[-3000:]
    if how == "Ctrl-C at the terminal":
        os.killpg(process.pid, signal.SIGINT)  # the terminal signals the whole group: the training processes too
    else:
        os.kill(process.pid, signal.SIGTERM if how == "SIGTERM to the study" else signal.SIGKILL)
    signalled = time.monotonic()
    lines += process.stdout.readlines()
    process.wait(timeout=60)
    output = "".join(lines)
    assert time.monotonic() - signalled < 30, output[-3000:]
    expected = {"SIGTERM to the study": 143, "Ctrl-C at the terminal": 130, "SIGKILL to the study": -signal.SIGKILL}
    assert process.returncode == expected[how], output[-3000:]
    if how != "SIGKILL to the study":
        # The dnn lineage may be done by then: its process, started ahead, has TensorFlow imported when the grid
        # begins, and its run takes about 5 s from the line read above (the convnet's, logged at the same moment).
        # A Ctrl-C reaches the training processes too, and may end them before the study counts what it stops.
        assert re.search(r"interrupted after [01] of 2 runs: stopped [0-2] training process", output), output[-3000:]
        assert f"interrupted by {'SIGTERM' if how.startswith('SIGTERM') else 'Ctrl-C (SIGINT)'}: training stopped" in \
            output, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
    deadline = time.monotonic() + 10  # a process whose parent is gone notices within half a second
    while any(_alive(pid) for pid in training + servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in training + servers if _alive(pid)], output[-3000:]


def test_a_ctrl_c_while_the_server_starts_ends_the_training_processes_started_ahead(tmp_path, mnist_dir):
    """In a fresh folder the training processes start before the server, to import TensorFlow meanwhile; a Ctrl-C
    then, long before any training, ends them and the server as it ends the study, quietly."""
    process = _study_in_its_own_group(tmp_path, mnist_dir)
    lines, ahead = [], []
    for line in process.stdout:
        lines.append(line)
        if match := re.search(r"started \d+ training process\(es\) ahead, in process\(es\) ([\d, ]*\d)", line):
            ahead = [int(pid) for pid in match.group(1).split(", ")]
            break
    assert ahead, "".join(lines)[-3000:]
    deadline = time.monotonic() + 10
    while not (servers := _servers_of(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers and all(_alive(pid) for pid in ahead), "".join(lines)[-3000:]
    os.killpg(process.pid, signal.SIGINT)  # the terminal signals the whole group: the processes started ahead too
    lines += process.stdout.readlines()
    process.wait(timeout=60)
    output = "".join(lines)
    assert process.returncode == 130, output[-3000:]
    assert "interrupted by Ctrl-C (SIGINT)" in output and "Traceback" not in output, output[-3000:]
    assert not TRAINING_PROCESS.search(output), output[-3000:]  # stopped before any training began
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in ahead + servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in ahead + servers if _alive(pid)], output[-3000:]


LOST_INTERRUPT = """
import concurrent.futures, os, signal, sys
from flows._runtime import run_cli
from flows.full_study import as_completed_or_interrupted


class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # handled in this finalizer: Python discards its KeyboardInterrupt


def main():
    Finalized()
    print("went on after the Ctrl-C", flush=True)
    for _ in as_completed_or_interrupted([concurrent.futures.Future()]):  # a lineage that never ends
        pass


run_cli(main)
"""


def test_a_ctrl_c_whose_exception_python_discarded_still_stops_the_study_s_wait(tmp_path):
    """A KeyboardInterrupt raised while the main thread runs a finalizer is discarded by Python ("Exception ignored
    in"): a study whose Ctrl-C landed there went on training to the end. The CLI notes the signal as well, and the
    grid's wait for its lineages raises it again within half a second."""
    script = tmp_path / "lost_interrupt.py"
    script.write_text(LOST_INTERRUPT)
    began = time.monotonic()
    finished = subprocess.run([sys.executable, str(script)], cwd=REPOSITORY, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "Exception ignored in" in finished.stderr and "went on after the Ctrl-C" in finished.stdout, finished
    assert finished.returncode == 130, finished
    assert "interrupted by Ctrl-C (SIGINT): training stopped" in finished.stderr, finished
    assert time.monotonic() - began < 60


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"  # a zombie has ended
