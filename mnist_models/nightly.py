"""Nightly retraining: a seed per night, the accuracy history, champions, the regression gate and pruning.

A champion is `champion/<model>.json` (its record) and the model it names, `<model>.<sha256>.keras`;
`<model>.keras` is a copy under the documented name. Promotion writes the new model under a new
name first and replaces the record last, so a crash at any moment leaves the old champion or the
new one, whole. `read_champion` and `promote` are the only places that know these names.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mnist_models.io import atomic_path, remove_directory, sha256_file, write_json

HISTORY_COLUMNS = ["date", "flow_run_id", "model", "learning_rate", "epochs", "seed", "accuracy",
                   "accuracy_low", "accuracy_high", "map", "run_id"]
_RUN_COLUMNS = HISTORY_COLUMNS[2:]


def nightly_seed(date: dt.date) -> int:
    """A new, reproducible seed for each night: the date as YYYYMMDD."""
    return int(date.strftime("%Y%m%d"))


def history_rows(sweep: pd.DataFrame, date: dt.date, flow_run_id: str) -> pd.DataFrame:
    """One history row per run of tonight's learning-rate sweep (summary rows; other roles are left out)."""
    missing = [column for column in [*_RUN_COLUMNS, "role"] if column not in sweep.columns]
    if missing:
        raise ValueError(f"sweep runs lack the column(s) {', '.join(missing)}; expected the summary table's "
                         f"columns {', '.join([*_RUN_COLUMNS, 'role'])}")
    rows = sweep.loc[sweep["role"] == "sweep", _RUN_COLUMNS].reset_index(drop=True)
    rows.insert(0, "flow_run_id", flow_run_id)
    rows.insert(0, "date", date.isoformat())
    return rows


def append_history(existing: pd.DataFrame | None, new_rows: pd.DataFrame) -> pd.DataFrame:
    """History with tonight's rows in, in date order; a rerun of a night replaces that night's rows of its models."""
    if existing is None or existing.empty:
        return new_rows.reset_index(drop=True)
    tonight = pd.MultiIndex.from_frame(new_rows[["date", "model"]])
    kept = existing[~pd.MultiIndex.from_frame(existing[["date", "model"]]).isin(tonight)]
    return pd.concat([kept, new_rows], ignore_index=True).sort_values("date", kind="stable", ignore_index=True)


def recent_run_ids(history: pd.DataFrame | None, nights: int) -> set[str]:
    """The run ids of the history's last `nights` nights."""
    if nights < 0:
        raise ValueError(f"nights to keep is {nights}; expected 0 or more")
    if history is None or history.empty or nights == 0:
        return set()
    recent = sorted(history["date"].unique())[-nights:]
    return set(history.loc[history["date"].isin(recent), "run_id"].astype(str))


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


class ChampionMismatchError(ValueError):
    """A champion's record and its model file disagree (the file was changed or replaced by hand)."""


def _record_path(champions_dir: Path, model: str) -> Path:
    return champions_dir / f"{model}.json"


def _versioned_models(champions_dir: Path, model: str) -> list[Path]:
    pattern = re.compile(rf"{re.escape(model)}\.[0-9a-f]{{16}}\.keras")
    return [path for path in champions_dir.glob(f"{model}.*.keras") if pattern.fullmatch(path.name)]


def read_champion(champions_dir: str | os.PathLike[str], model: str) -> dict | None:
    """The champion's record of `model` (accuracy, run id, ..., and `model_path`), or None if it has none yet."""
    champions_dir = Path(champions_dir)
    record_path = _record_path(champions_dir, model)
    if not record_path.exists():
        return None
    record = json.loads(record_path.read_text())
    model_path = champions_dir / record.get("model_file", f"{model}.keras")  # records before model_file: the copy
    if not model_path.exists():
        return None
    if "model_sha256" in record and sha256_file(model_path) != record["model_sha256"]:
        raise ChampionMismatchError(
            f"champion of {model}: {model_path} does not match its record {record_path} (SHA-256 differs); "
            f"expected the file promoted with run {record.get('run_id')}: delete {champions_dir}/{model}.* "
            "to let the next nightly run promote a new champion"
        )
    return {**record, "model_path": str(model_path)}


def promote(champions_dir: str | os.PathLike[str], model: str, model_path: str | os.PathLike[str],
            manifest_path: str | os.PathLike[str], record: dict) -> Path:
    """Make a run's model (and its manifest) the champion of `model`, atomically; return `<model>.keras`.

    `record` holds what the history needs (accuracy, run_id, learning_rate, seed, ...).
    """
    champions_dir, model_path = Path(champions_dir), Path(model_path)
    for path in (model_path, Path(manifest_path)):
        if not path.is_file():
            raise FileNotFoundError(f"cannot promote {model}: {path} does not exist; expected a trained run's file")
    digest = sha256_file(model_path)
    versioned = champions_dir / f"{model}.{digest[:16]}.keras"
    with atomic_path(versioned) as temporary:
        shutil.copyfile(model_path, temporary)
    write_json(_record_path(champions_dir, model), {  # the moment of promotion: the record names the new file
        **record, "model": model, "model_file": versioned.name, "model_sha256": digest,
        "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "manifest": json.loads(Path(manifest_path).read_text()),
    })
    target = champions_dir / f"{model}.keras"
    with atomic_path(target) as temporary:
        shutil.copyfile(versioned, temporary)
    for previous in _versioned_models(champions_dir, model):
        if previous != versioned:
            previous.unlink(missing_ok=True)
    return target


def champion_run_ids(champions_dir: str | os.PathLike[str]) -> set[str]:
    """The run ids every champion under `champions_dir` came from."""
    return {str(json.loads(path.read_text())["run_id"]) for path in Path(champions_dir).glob("*.json")}


@dataclass(frozen=True)
class PrunedRuns:
    """What prune_runs removed: run ids and the bytes freed."""

    run_ids: tuple[str, ...]
    bytes_freed: int

    def describe(self) -> str:
        """One line for the log."""
        if not self.run_ids:
            return "pruned no run folder"
        return (f"pruned {len(self.run_ids)} run folder(s), {self.bytes_freed / 1e6:,.1f} MB freed: "
                + ", ".join(self.run_ids))


def prune_runs(runs_dir: str | os.PathLike[str], keep: Collection[str]) -> PrunedRuns:
    """Delete every run folder under `runs_dir` whose id is not in `keep`.

    `keep` is what champions, the last nights of the history and the current plan use. Hidden
    entries (temporaries, lock files) and links are left alone; each folder leaves its name at once.
    """
    runs_dir = Path(runs_dir)
    candidates = sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []
    removed, freed = [], 0
    for folder in candidates:
        if folder.name in keep or folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
            continue
        freed += remove_directory(folder)
        removed.append(folder.name)
    return PrunedRuns(tuple(removed), freed)
