"""The nightly and the on-demand study share one artifacts folder without touching each other's files.

Run as the deployments do (one folder for both), from the command line: study, nightly, study.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPOSITORY = Path(__file__).resolve().parents[2]
STUDY = ["--profile", "quick", "--models", "dnn", "--learning-rates", "0.001", "--gradient-models", "",
         "--train-subset", "1000"]


def _run(artifacts: Path, mnist_dir: Path, *extra: str) -> str:
    environment = {**os.environ, "MNIST_MIRROR": str(mnist_dir), "PREFECT_API_URL": PREFECT_API_URL.value()}
    completed = subprocess.run([sys.executable, "flows/full_study.py", "--artifacts-dir", str(artifacts), *STUDY,
                                *extra], cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    return output


def _files(root: Path) -> dict[str, int]:
    """Every file under `root` outside the nightly's folder, with its modification time."""
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*")
            if path.is_file() and "nightly" not in path.relative_to(root).parts and path.name != ".lock"}


def test_study_nightly_study_in_one_folder_trains_nothing_the_third_time(tmp_path, mnist_dir):
    first = _run(tmp_path, mnist_dir)
    assert "1 runs planned, 1 to train" in first
    study_files = _files(tmp_path)
    study_report = (tmp_path / "report" / "report.md").read_text()
    assert "## 1. Data" in study_report

    nightly = _run(tmp_path, mnist_dir, "--nightly")
    assert re.search(r"Report:\s+\S+/nightly/report/report.html", nightly), nightly[-2000:]
    assert (tmp_path / "nightly" / "tables" / "history.parquet").exists()
    assert not (tmp_path / "tables" / "history.parquet").exists() and not (tmp_path / "models").exists()
    assert _files(tmp_path) == study_files  # nothing of the study's deleted, rewritten or added

    third = _run(tmp_path, mnist_dir)
    assert "1 runs planned, 0 to train, 1 already done" in third, third[-2000:]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Nightly gate" not in report and "## Nightly gate" not in study_report  # the study's own report
    nightly_runs = [path.name for path in (tmp_path / "nightly" / "runs").iterdir() if not path.name.startswith(".")]
    assert nightly_runs and all(name in os.listdir(tmp_path / "nightly" / "runs") for name in nightly_runs)
    assert pd.read_parquet(tmp_path / "tables" / "summary.parquet")["seed"].tolist() == [42]
