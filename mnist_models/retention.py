"""What each night used, and retention: a `NightRuns` record per nightly flow run naming every run it used;
retention keeps the runs of the last nights (every flow run of each of those dates) and deletes only folders
that are recognisably run folders.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mnist_models.atomic_files import remove_directory, write_json
from mnist_models.records import Record


class NightRuns(Record):
    """Every run one nightly flow run used (sweep and gradient alike): what retention keeps for that night."""

    date: str
    flow_run_id: str
    run_ids: tuple[str, ...]


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def record_night(nights_dir: str | os.PathLike[str], date: dt.date, flow_run_id: str,
                 run_ids: Iterable[str]) -> Path:
    """Write (or rewrite) the record of the runs one flow run used on `date`; one file per date and flow run."""
    if not _SAFE_NAME.fullmatch(flow_run_id):
        raise ValueError(f"flow run id {flow_run_id!r} cannot name a file; expected letters, digits, '.', '_', '-'")
    night = NightRuns(date=date.isoformat(), flow_run_id=flow_run_id, run_ids=tuple(sorted(set(map(str, run_ids)))))
    return write_json(Path(nights_dir) / f"{night.date}_{flow_run_id}.json", night.model_dump(mode="json"))


def read_nights(nights_dir: str | os.PathLike[str]) -> list[NightRuns]:
    """Every night's record, by date then flow run id; an unreadable one is an error (it guards runs)."""
    nights = []
    for path in sorted(Path(nights_dir).glob("*.json")) if Path(nights_dir).is_dir() else []:
        if path.name.startswith("."):
            continue
        try:
            nights.append(NightRuns.from_json(path.read_text()))
        except (OSError, ValueError) as error:
            raise ValueError(f"night record {path} cannot be read ({error}); expected the JSON record_night writes. "
                             "Retention stops rather than delete runs that night may have used") from error
    return sorted(nights, key=lambda night: (night.date, night.flow_run_id))


def kept_run_ids(nights: Collection[NightRuns], keep_nights: int) -> set[str]:
    """The runs of the last `keep_nights` dates with a record, every flow run of each of those dates."""
    _check_nights(keep_nights)
    dates = sorted({night.date for night in nights})[-keep_nights:] if keep_nights else []
    return {run_id for night in nights if night.date in dates for run_id in night.run_ids}


@dataclass(frozen=True)
class PrunedRuns:
    """What prune_runs removed (run ids and the bytes freed) and the folders it left alone, not knowing them."""

    run_ids: tuple[str, ...]
    bytes_freed: int
    unknown: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the log."""
        text = ("pruned no run folder" if not self.run_ids else
                f"pruned {len(self.run_ids)} run folder(s), {self.bytes_freed / 1e6:,.1f} MB freed: "
                + ", ".join(self.run_ids))
        if self.unknown:
            text += (f"; left {len(self.unknown)} folder(s) without a valid manifest alone: "
                     + ", ".join(self.unknown))
        return text


def is_run_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` is a run folder training made: its manifest.json is readable and names the folder."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir() or folder.name.startswith("."):
        return False
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("run_id") == folder.name


def prune_runs(runs_dir: str | os.PathLike[str], keep: Collection[str]) -> PrunedRuns:
    """Delete every run folder under `runs_dir` whose id is not in `keep`.

    Only folders `is_run_folder` recognises are deleted: hidden entries (temporaries, lock files), links, files
    and folders without a valid manifest are left alone. Each folder leaves its name at once.
    """
    runs_dir = Path(runs_dir)
    candidates = sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []
    removed, unknown, freed = [], [], 0
    for folder in candidates:
        if folder.name in keep or folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
            continue
        if not is_run_folder(folder):
            unknown.append(folder.name)
            continue
        freed += remove_directory(folder)
        removed.append(folder.name)
    return PrunedRuns(tuple(removed), freed, tuple(unknown))


def recent_run_ids(history: pd.DataFrame | None, nights: int) -> set[str]:
    """The run ids of the history's last `nights` nights."""
    _check_nights(nights)
    if history is None or history.empty or nights == 0:
        return set()
    recent = sorted(history["date"].unique())[-nights:]
    return set(history.loc[history["date"].isin(recent), "run_id"].astype(str))


def _check_nights(nights: int) -> None:
    if isinstance(nights, bool) or not isinstance(nights, int) or nights < 0:
        raise ValueError(f"nights to keep is {nights!r}; expected 0 or more")
