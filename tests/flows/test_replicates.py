"""Seed replicates end to end on a slice: per-seed runs, across-seed tables and figures, and adding a seed."""

import pandas as pd
import pytest

from flows.full_study import full_study
from mnist_models.config import StudyConfig
from mnist_models.replicates import ACROSS_SEED_COLUMNS, COMPARISON_COLUMNS, REPLICATES_COLUMNS

pytestmark = pytest.mark.usefixtures("prefect_harness", "mnist_mirror")

GRID = {"profile": "quick", "models": ["dnn"], "learning_rates": [0.01, 0.001, 0.0001], "epochs": 1,
        "train_subset": 300, "gradient_models": []}


def manifests(artifacts):
    return {path.parent.name: path.stat().st_mtime_ns for path in (artifacts / "runs").glob("*/manifest.json")}


def test_two_seeds_then_a_third_trains_only_the_new_seed(tmp_path):
    state = full_study(StudyConfig(artifacts_dir=tmp_path, seeds=[42, 43], **GRID), return_state=True)
    assert state.is_completed(), state.message
    summary = pd.read_parquet(tmp_path / "tables" / "summary.parquet")
    assert sorted(summary["seed"].unique()) == [42, 43] and len(summary) == 6

    table = pd.read_parquet(tmp_path / "tables" / "replicates.parquet")
    assert list(table.columns) == list(REPLICATES_COLUMNS) and len(table) == 3
    assert (table["seeds"] == 2).all() and table["accuracy_std"].notna().all()
    assert (table["accuracy_mean_low"] <= table["accuracy_mean"]).all()
    means = summary.groupby("learning_rate")["accuracy"].mean()
    assert table.set_index("learning_rate")["accuracy_mean"].to_dict() == pytest.approx(means.to_dict())
    at_lr = pd.read_parquet(tmp_path / "tables" / "accuracy_at_lr.parquet")
    assert set(ACROSS_SEED_COLUMNS) <= set(at_lr.columns) and len(at_lr) == 2
    assert {"lr 0.01", "lr 0.01 std", "lr 0.01 low", "lr 0.01 high"} <= set(
        pd.read_parquet(tmp_path / "tables" / "lr_sweep.parquet").columns)
    assert list(pd.read_parquet(tmp_path / "tables" / "seed_comparisons.parquet").columns) == list(COMPARISON_COLUMNS)
    assert (tmp_path / "figures" / "lr_sweep_seeds.png").exists()
    assert "seed" in (tmp_path / "report" / "report.md").read_text()

    before = manifests(tmp_path)
    assert full_study(StudyConfig(artifacts_dir=tmp_path, seeds=[42, 43, 44], **GRID), return_state=True).is_completed()
    new = {run for run, stamp in manifests(tmp_path).items() if before.get(run) != stamp}
    assert len(new) == 3 and all("-s44-" in run for run in new)
    assert (pd.read_parquet(tmp_path / "tables" / "replicates.parquet")["seeds"] == 3).all()
