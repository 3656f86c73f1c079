"""benchmarks/training_speed.py's reading of a pipeline's run folders: a lineage's seconds are counted once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def manifest(runs: Path, run_id: str, lineage: str, epochs: int, wall_seconds: float) -> None:
    folder = runs / run_id
    folder.mkdir(parents=True)
    folder.joinpath("manifest.json").write_text(json.dumps({
        "run_id": run_id, "lineage": lineage, "wall_seconds": wall_seconds, "threads": 1,
        "parameters": {"model": lineage.split("-")[0], "learning_rate": 0.001, "epochs": epochs},
        "final_metrics": {"accuracy": 0.9, "val_accuracy": 0.9}}))


def test_a_lineage_s_shorter_run_is_not_counted_again(tmp_path, monkeypatch):
    """The 6-epoch run's 264.5 s contain the 3-epoch run's 135.8 s, written on the way: 264.5 + 100, not 500.3."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("training_speed", None)
    from training_speed import lane_seconds, pipeline_runs

    runs = tmp_path / "runs"
    manifest(runs, "resnet-e3", "resnet-lr0.001-s42", 3, 135.8)
    manifest(runs, "resnet-e6", "resnet-lr0.001-s42", 6, 264.5)
    manifest(runs, "dnn-e3", "dnn-lr0.001-s42", 3, 100.0)
    assert lane_seconds(pipeline_runs(tmp_path)) == 364.5
