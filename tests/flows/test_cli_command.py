"""The `mnist-study` command dispatches to the scripts' own command lines (no study is run here)."""

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def _command(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *arguments], cwd=REPOSITORY, capture_output=True,
                          text=True, timeout=120)


def test_help_lists_every_subcommand():
    completed = _command("--help")
    assert completed.returncode == 0
    assert all(name in completed.stdout for name in ("study", "data", "champions", "plan", "export"))


def test_plan_prints_the_decisions_and_writes_nothing(tmp_path):
    artifacts = tmp_path / "never-written"
    completed = _command("plan", "--profile", "quick", "--artifacts-dir", str(artifacts))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "data mnist/raw/train-images-idx3-ubyte.gz: recomputed (missing or failed verification)" in completed.stdout
    assert "train: 0 reused, 8 to compute" in completed.stdout and not artifacts.exists()


def test_each_subcommand_has_its_script_s_options():
    study = _command("study", "--help")
    assert study.returncode == 0 and "--profile" in study.stdout and "--stall-timeout" in study.stdout
    data = _command("data", "--help")
    assert data.returncode == 0 and "--dataset" in data.stdout and "--profile" not in data.stdout
    champions = _command("champions", "--help")
    assert champions.returncode == 0 and "rollback" in champions.stdout


def test_an_unknown_subcommand_or_bad_option_is_one_clear_error():
    unknown = _command("train")
    assert unknown.returncode == 2
    assert "unknown subcommand 'train'; expected one of: study, data, champions, plan, export" in unknown.stderr
    bad = _command("study", "--epochs", "0", "--artifacts-dir", "/tmp/never-written-by-this-test")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: invalid epochs")
    assert not Path("/tmp/never-written-by-this-test/runs").exists()


def test_the_package_declares_the_command_and_finds_every_subpackage():
    import tomllib

    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["mnist-study"] == "flows.cli:main"
    from setuptools import find_packages

    found = find_packages(str(REPOSITORY), include=project["tool"]["setuptools"]["packages"]["find"]["include"])
    assert "mnist_models.architectures" in found and {"mnist_models", "tasks", "flows"} <= set(found)
