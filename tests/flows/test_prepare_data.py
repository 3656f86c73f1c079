"""Flow tests for flows/prepare_data.py: real MNIST from the local folder, caching, failures, CLI.

The in-process runs share the session's Prefect test harness. The CLI runs are subprocesses with
their own PREFECT_HOME: the bad-input ones fail before Prefect starts; the successful one talks to
the harness's server.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from prefect.settings import PREFECT_API_URL

from flows.prepare_data import prepare_data
from mnist_models.config import DataConfig
from mnist_models.records import PreparedData

REPOSITORY = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CORRUPTED = "t10k-labels-idx1-ubyte.gz"


def _run(artifacts: Path, mirror, **values) -> PreparedData:
    state = prepare_data(DataConfig(artifacts_dir=artifacts, mirrors=[str(mirror)], **values), return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def _decisions(artifacts: Path) -> dict[str, tuple[str, str]]:
    """'item' -> (action, reason) of the last run's data-stage decisions."""
    table = pd.read_parquet(artifacts / "tables" / "cache_decisions.parquet")
    return {item: (action, reason) for item, action, reason in table[["item", "action", "reason"]].values}


@pytest.fixture(scope="module")
def prepared(prefect_harness, mnist_dir, tmp_path_factory):
    """One first run of the flow into a fresh artifacts directory: (artifacts, result, decisions)."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    result = _run(artifacts, mnist_dir)
    return artifacts, result, _decisions(artifacts)


# --------------------------------------------------------------------------- in-process runs


def test_first_run_writes_every_output(prepared, mnist_dir):
    artifacts, result, decisions = prepared
    data_dir = artifacts / "data" / "mnist"

    assert result.train == Path("data/mnist/train.parquet") and result.test == Path("data/mnist/test.parquet")
    assert pq.read_metadata(data_dir / "train.parquet").num_rows == 60000
    assert pq.read_metadata(data_dir / "test.parquet").num_rows == 10000
    assert sorted(path.name for path in (data_dir / "raw").iterdir()) == sorted(
        path.name for path in mnist_dir.glob("*.gz"))
    for suffix in ("parquet", "csv", "md"):
        assert (artifacts / "tables" / f"dataset_facts.{suffix}").stat().st_size > 0
    assert "images,60000,10000,70000" in (artifacts / "tables" / "dataset_facts.csv").read_text().splitlines()
    assert (artifacts / "figures" / "first_25_images.png").read_bytes()[:8] == PNG_SIGNATURE
    assert {action for action, _ in decisions.values()} == {"recomputed"} and len(decisions) == 8
    assert decisions[f"mnist/raw/{CORRUPTED}"][1] == "missing or failed verification"
    assert decisions["mnist/train.parquet"][1] == "new"


def test_second_run_reuses_everything_and_rewrites_nothing(prepared, mnist_dir):
    artifacts, first_result, _ = prepared
    outputs = [artifacts / "data" / "mnist" / "train.parquet", artifacts / "data" / "mnist" / "test.parquet",
               artifacts / "tables" / "dataset_facts.parquet", artifacts / "figures" / "first_25_images.png"]
    before = {path: path.stat().st_mtime_ns for path in outputs}

    assert _run(artifacts, mnist_dir) == first_result

    assert {action for action, _ in _decisions(artifacts).values()} == {"reused"}
    assert {path: path.stat().st_mtime_ns for path in outputs} == before


def test_verified_raw_files_need_no_mirror(prepared):
    artifacts, first_result, _ = prepared
    with socket.socket() as holder:  # a port that refuses connections, held so no one is handed it meanwhile
        holder.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{holder.getsockname()[1]}/"
        assert _run(artifacts, closed) == first_result
    assert _decisions(artifacts)[f"mnist/raw/{CORRUPTED}"] == ("reused", "verified against its published checksum")


def test_deleted_parquet_reruns_only_its_normalization(prepared, mnist_dir):
    artifacts, _, _ = prepared
    train, test = artifacts / "data" / "mnist" / "train.parquet", artifacts / "data" / "mnist" / "test.parquet"
    test_mtime = test.stat().st_mtime_ns
    train.unlink()

    _run(artifacts, mnist_dir)

    recomputed = {item: reason for item, (action, reason) in _decisions(artifacts).items() if action == "recomputed"}
    assert recomputed == {"mnist/train.parquet": "outputs missing (data/mnist/train.parquet)"}
    assert pq.read_metadata(train).num_rows == 60000
    assert test.stat().st_mtime_ns == test_mtime


def test_corrupted_mirror_file_fails_with_checksum_message_and_no_parquet(prefect_harness, mnist_dir, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(mnist_dir, mirror)
    (mirror / CORRUPTED).chmod(0o644)
    content = bytearray(gzip.decompress((mirror / CORRUPTED).read_bytes()))
    content[-1] = (content[-1] + 1) % 10  # a different last label, still a valid gzip and IDX file
    (mirror / CORRUPTED).write_bytes(gzip.compress(bytes(content)))
    artifacts = tmp_path / "artifacts"

    state = prepare_data(DataConfig(artifacts_dir=artifacts, mirrors=[str(mirror)]), return_state=True)
    assert state.is_failed()
    assert re.search(f"checksum mismatch for {CORRUPTED} from .*/mirror/{CORRUPTED}", state.message)
    assert "expected 27ae3e4e09519cfbb04c329615203637" in state.message

    assert list(artifacts.rglob("*.parquet")) == []
    assert not (artifacts / "data" / "mnist" / "raw" / CORRUPTED).exists()


def test_the_data_flow_takes_the_artifacts_lock(prefect_harness, mnist_dir, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mnist_models.locking import artifacts_lock\n"
         "with artifacts_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        state = prepare_data(DataConfig(artifacts_dir=tmp_path, mirrors=[str(mnist_dir)]), return_state=True)
        assert state.is_failed() and "is in use by pid" in state.message
        assert not (tmp_path / "data").exists()
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- command line


def _cli_environment(tmp_path: Path, **environment: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("MNIST_MIRROR", "PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false", **environment)
    return env


def _cli_command(arguments: list[str]) -> list[str]:
    return [sys.executable, str(REPOSITORY / "flows" / "prepare_data.py"), *arguments]


# Bad input, each caught before Prefect starts: (arguments, environment, expected error line).
BAD_INPUTS = {
    "unknown-dataset": (["--dataset", "kmnist"], {},
                        r"unknown dataset 'kmnist'; expected one of: fashion-mnist, mnist"),
    "ftp-mirror": (["--mirror", "ftp://x/"], {}, r"mirror 'ftp://x/' has unsupported scheme 'ftp'"),
    "ftp-from-MNIST_MIRROR": ([], {"MNIST_MIRROR": "ftp://from-the-environment/"},
                              r"mirror 'ftp://from-the-environment/' has unsupported scheme 'ftp'"),
    "unwritable-artifacts": (["--artifacts-dir", "{blocked}"], {},
                             r"artifacts directory '.*/a-file/artifacts' cannot be written"),
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Run every BAD_INPUTS case of the CLI at once (each process spends seconds importing)."""
    processes = {}
    for case, (arguments, environment, _) in BAD_INPUTS.items():
        directory = tmp_path_factory.mktemp(case)
        blocker = directory / "a-file"
        blocker.write_text("a regular file, so nothing can be created under it\n")
        arguments = [argument.format(blocked=blocker / "artifacts") for argument in arguments]
        if "--artifacts-dir" not in arguments:
            arguments += ["--artifacts-dir", str(directory / "artifacts")]
        process = subprocess.Popen(
            _cli_command(arguments), cwd=REPOSITORY, env=_cli_environment(directory, **environment),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        processes[case] = (process, arguments, directory)
    runs = {}
    for case, (process, arguments, directory) in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        runs[case] = (subprocess.CompletedProcess(arguments, process.returncode, stdout, stderr), directory)
    return runs


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_cli_rejects_bad_input_with_one_error_line(bad_input_runs, case):
    completed, directory = bad_input_runs[case]

    assert completed.returncode == 1, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: ")
    assert re.search(BAD_INPUTS[case][2], lines[0]), lines[0]
    assert "Traceback" not in completed.stderr + completed.stdout
    assert not (directory / "artifacts" / "data").exists()


def test_cli_honours_mnist_mirror(prefect_harness, tmp_path, mnist_dir):
    artifacts = tmp_path / "artifacts"
    # The harness's server stands in for the temporary one the CLI would start (seconds saved).
    environment = _cli_environment(tmp_path, MNIST_MIRROR=str(mnist_dir), PREFECT_API_URL=PREFECT_API_URL.value())

    completed = subprocess.run(
        _cli_command(["--artifacts-dir", str(artifacts)]), cwd=REPOSITORY, env=environment,
        capture_output=True, text=True, timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    train = artifacts / "data" / "mnist" / "train.parquet"
    assert f"Parquet: {train}," in completed.stdout
    assert pq.read_metadata(train).num_rows == 60000
    assert (artifacts / "figures" / "first_25_images.png").exists()
    # Every file came from the local copy, not from the public mirrors.
    logs = completed.stdout + completed.stderr
    assert logs.count(f"verified from {mnist_dir.resolve().as_uri()}/") == 4


def test_cli_refuses_a_corrupted_mirror_with_the_checksum_message(prefect_harness, tmp_path, mnist_dir):
    mirror = tmp_path / "mirror"
    shutil.copytree(mnist_dir, mirror)
    (mirror / CORRUPTED).chmod(0o644)
    content = bytearray(gzip.decompress((mirror / CORRUPTED).read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    (mirror / CORRUPTED).write_bytes(gzip.compress(bytes(content)))
    artifacts = tmp_path / "artifacts"
    environment = _cli_environment(tmp_path, MNIST_MIRROR=str(mirror), PREFECT_API_URL=PREFECT_API_URL.value())

    completed = subprocess.run(_cli_command(["--artifacts-dir", str(artifacts)]), cwd=REPOSITORY, env=environment,
                               capture_output=True, text=True, timeout=300)

    assert completed.returncode == 1
    last_lines = completed.stderr.strip().splitlines()[-2:]
    assert last_lines[0].startswith(f"error: could not get a verified {CORRUPTED} from any mirror")
    assert "checksum mismatch" in last_lines[1] and "expected 27ae3e4e09519cfbb04c329615203637" in last_lines[1]
    assert "Traceback" not in completed.stderr + completed.stdout
    assert list(artifacts.rglob("*.parquet")) == []


def test_fashion_mnist_goes_through_the_same_stage_with_its_own_checksums(prefect_harness, tmp_path, mnist_dir):
    fashion_dir = mnist_dir.parent / "fashion-mnist"
    result = _run(tmp_path, fashion_dir, dataset="fashion-mnist")
    train = pq.read_table(tmp_path / result.train)
    assert train.num_rows == 60000 and result.train.parent == Path("data/fashion-mnist")
    assert sorted(set(train.column("label").to_pylist())) == list(range(10))
    # The same files offered as MNIST fail MNIST's checksums.
    state = prepare_data(DataConfig(artifacts_dir=tmp_path / "wrong", mirrors=[str(fashion_dir)]), return_state=True)
    assert state.is_failed() and "checksum mismatch" in state.message
