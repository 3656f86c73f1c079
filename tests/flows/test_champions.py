"""The champions command as an operator runs it (`python flows/champions.py ...`): list, roll back, bad input,
and a nightly run holding the artifacts directory."""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mnist_models import champions
from mnist_models.layout import ArtifactsLayout
from mnist_models.locking import artifacts_lock
from tests.mnist_models.test_champions import MNIST, trained_run

REPOSITORY = Path(__file__).resolve().parents[2]


def champions_command(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "flows/champions.py", *arguments], capture_output=True, text=True,
                          cwd=REPOSITORY, timeout=120)


@pytest.fixture
def nightly_root(tmp_path) -> Path:
    """A nightly artifacts directory whose dnn champion has three versions (0.96, 0.97, 0.98) and convnet one."""
    layout = ArtifactsLayout.at(tmp_path / "nightly")
    for day, (model, run_id, accuracy) in enumerate((("dnn", "dnn-1", 0.96), ("dnn", "dnn-2", 0.97),
                                                     ("dnn", "dnn-3", 0.98), ("convnet", "convnet-1", 0.99)), 20):
        folder = trained_run(tmp_path, run_id, np.arange(100) % (day - 17) != 0)
        champions.promote(layout.champions_dir, model, folder, accuracy=accuracy, dataset="mnist",
                          test_hash=MNIST.test_hash, date=dt.date(2026, 11, day), reason=f"night {day}")
    return layout.root


def test_list_shows_every_version_and_marks_the_champion(nightly_root):
    listed = champions_command("list", "--artifacts-dir", str(nightly_root))

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("convnet (") and lines[1].startswith("* v0001  2026-11-23  accuracy 0.9900")
    assert [line[:7] for line in lines[3:6]] == ["  v0001", "  v0002", "* v0003"]
    assert "run dnn-3  night 22" in lines[5]
    only_dnn = champions_command("list", "--artifacts-dir", str(nightly_root), "--model", "dnn")
    assert only_dnn.stdout.splitlines()[0].startswith("dnn (") and "convnet" not in only_dnn.stdout


def test_rollback_restores_the_previous_champion_and_records_it(nightly_root):
    rolled = champions_command("rollback", "--artifacts-dir", str(nightly_root), "--model", "dnn")

    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.strip() == ("dnn: champion is now v0004, the model of v0002 (accuracy 0.9700, run dnn-2); "
                                     "it was v0003")
    champion = champions.current_champion(nightly_root / "models" / "champion", "dnn")
    assert (champion.run_id, champion.source_version) == ("dnn-2", 2)
    promotions = pd.read_parquet(nightly_root / "tables" / "promotions.parquet")
    assert promotions.iloc[-1][["model", "version", "old_accuracy", "new_accuracy", "reason"]].tolist() == [
        "dnn", 4, 0.98, 0.97, "rollback to v0002 from v0003"]
    assert all((nightly_root / "tables" / f"promotions.{suffix}").exists() for suffix in ("md", "csv"))

    forward = champions_command("rollback", "--artifacts-dir", str(nightly_root), "--model", "dnn",
                                "--to-version", "v3")
    assert forward.returncode == 0 and "champion is now v0005, the model of v0003" in forward.stdout
    assert "* v0005" in champions_command("list", "--artifacts-dir", str(nightly_root), "--model", "dnn").stdout


@pytest.mark.parametrize(("arguments", "message"), [
    (["rollback", "--model", "dnn", "--to-version", "abc"], "expected a version number such as 2 or v0002"),
    (["rollback", "--model", "dnn", "--to-version", "7"], "dnn has no champion version 7; expected one of 1, 2, 3"),
    (["rollback", "--model", "convnet"], "convnet's champion v0001 has no earlier version to roll back to"),
    (["rollback", "--model", "resnet"], "resnet has no champion under"),
    (["list", "--model", "resnet"], "resnet has no champion under"),
    (["rollback"], "the following arguments are required: --model"),
])
def test_bad_input_is_one_line_and_changes_nothing(nightly_root, arguments, message):
    before = champions.promotions_table(nightly_root / "models" / "champion")
    completed = champions_command(*arguments[:1], "--artifacts-dir", str(nightly_root), *arguments[1:])
    assert completed.returncode != 0 and message in completed.stderr, completed.stderr
    assert "Traceback" not in completed.stderr
    assert champions.promotions_table(nightly_root / "models" / "champion").equals(before)


def test_a_directory_without_champions_is_named(tmp_path):
    completed = champions_command("list", "--artifacts-dir", str(tmp_path / "study"))
    assert completed.returncode == 1
    assert "study/models/champion does not exist; expected --artifacts-dir" in completed.stderr


def test_rollback_waits_for_no_running_nightly(nightly_root):
    with artifacts_lock(nightly_root):  # a nightly run holds the directory
        completed = champions_command("rollback", "--artifacts-dir", str(nightly_root), "--model", "dnn")
    assert completed.returncode == 1 and "is in use by" in completed.stderr, completed.stderr
    assert champions.current_champion(nightly_root / "models" / "champion", "dnn").version == 3
