"""Nightly retraining: a seed per night, the accuracy history, champions and the regression gate."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mnist_models.io import atomic_path, write_json

HISTORY_COLUMNS = ["date", "flow_run_id", "model", "learning_rate", "epochs", "seed", "accuracy",
                   "accuracy_low", "accuracy_high", "map", "run_id"]


def nightly_seed(date: dt.date) -> int:
    """A new, reproducible seed for each night: the date as YYYYMMDD."""
    return int(date.strftime("%Y%m%d"))


def history_rows(runs: Sequence[dict], date: dt.date, flow_run_id: str) -> pd.DataFrame:
    """One history row per evaluated sweep run of tonight's study."""
    rows = [{"date": date.isoformat(), "flow_run_id": flow_run_id, **{key: run[key] for key in HISTORY_COLUMNS[2:]}}
            for run in runs if run["role"] == "sweep"]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def append_history(existing: pd.DataFrame | None, new_rows: pd.DataFrame) -> pd.DataFrame:
    """History with tonight's rows added; a rerun of the same flow run replaces its own rows."""
    if existing is None or existing.empty:
        return new_rows.reset_index(drop=True)
    kept = existing[~existing["flow_run_id"].isin(new_rows["flow_run_id"].unique())]
    return pd.concat([kept, new_rows], ignore_index=True)


@dataclass(frozen=True)
class ChampionDecision:
    """What tonight's run of one model means for its champion."""

    model: str
    new_accuracy: float
    champion_accuracy: float | None
    promoted: bool
    regressed: bool

    def describe(self, tolerance: float) -> str:
        """One line for the log and the failure message."""
        if self.champion_accuracy is None:
            return f"{self.model}: first champion, accuracy {self.new_accuracy:.4f}"
        if self.promoted:
            return f"{self.model}: new champion, accuracy {self.new_accuracy:.4f} >= {self.champion_accuracy:.4f}"
        verdict = (f"REGRESSION of more than {tolerance * 100:.2f} points" if self.regressed
                   else "within tolerance")
        return (f"{self.model}: champion kept (accuracy {self.champion_accuracy:.4f}); new accuracy "
                f"{self.new_accuracy:.4f}, {verdict}")


def decide(model: str, new_accuracy: float, champion_accuracy: float | None, tolerance: float) -> ChampionDecision:
    """Promote when at least as accurate as the champion; flag a drop larger than `tolerance`."""
    if champion_accuracy is None:
        return ChampionDecision(model, new_accuracy, None, promoted=True, regressed=False)
    return ChampionDecision(
        model, new_accuracy, champion_accuracy,
        promoted=new_accuracy >= champion_accuracy,
        regressed=new_accuracy < champion_accuracy - tolerance,
    )


def read_champion(champions_dir: str | os.PathLike[str], model: str) -> dict | None:
    """The champion's record of `model` (accuracy, run id, ...), or None if it has none yet."""
    import json

    path = Path(champions_dir) / f"{model}.json"
    if not path.exists() or not (Path(champions_dir) / f"{model}.keras").exists():
        return None
    return json.loads(path.read_text())


def promote(champions_dir: str | os.PathLike[str], run: dict) -> Path:
    """Copy a run's model and manifest to champion/<model>.keras and .json, atomically."""
    import json

    champions_dir = Path(champions_dir)
    target = champions_dir / f"{run['model']}.keras"
    with atomic_path(target) as temporary:
        shutil.copyfile(Path(run["run_dir"]) / "model.keras", temporary)
    manifest = json.loads((Path(run["run_dir"]) / "manifest.json").read_text())
    write_json(champions_dir / f"{run['model']}.json", {
        "model": run["model"], "accuracy": run["accuracy"], "run_id": run["run_id"],
        "learning_rate": run["learning_rate"], "seed": run["seed"], "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "manifest": manifest,
    })
    return target
