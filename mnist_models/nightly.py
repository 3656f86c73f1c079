"""Nightly retraining: a seed per night, the accuracy history, versioned champions and what retention keeps.

A champion is a folder per version, `champion/<model>/v0003/`, holding `model.keras`, the run's
`manifest.json`, `predictions.parquet` (the baseline the gate compares against, stamped with the model's
hash and the test split's) and `record.json` (a `ChampionVersion`). The newest version is the champion.
Promotion and rollback write a whole new version under a temporary name and rename it into place: that
one rename is the moment of promotion, so a crash leaves the old champion or the new one, never a champion
without its baseline. Versions are never changed afterwards, except that a missing or stale baseline is
predicted again from the version's own model. Champions of the previous format (`champion/<model>.json`,
`<model>.<sha>.keras`, `<model>.predictions.parquet`) become version 1 on first use.

Each night also leaves a `NightRuns` record naming every run it used; retention keeps the runs of the last
nights (every flow run of each of those dates) and deletes only folders that are recognisably run folders.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_models import prediction
from mnist_models.evaluation import correct_vector
from mnist_models.io import atomic_directory, remove_directory, sha256_file, write_json
from mnist_models.layout import RunFolder
from mnist_models.records import PreparedData, Record

HISTORY_COLUMNS = ["date", "flow_run_id", "model", "learning_rate", "epochs", "seed", "accuracy",
                   "accuracy_low", "accuracy_high", "map", "run_id"]
_RUN_COLUMNS = HISTORY_COLUMNS[2:]
PROMOTION_COLUMNS = ("date", "model", "version", "previous_version", "old_accuracy", "new_accuracy", "reason",
                     "run_id", "flow_run_id", "promoted_at")
_VERSION = re.compile(r"v(\d{4,})")
_RECORD = "record.json"


def nightly_seed(date: dt.date) -> int:
    """A new, reproducible seed for each night: the date as YYYYMMDD."""
    return int(date.strftime("%Y%m%d"))


# ---- the history --------------------------------------------------------------------------------------------

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


def past_accuracies(history: pd.DataFrame | None, model: str, learning_rate: float, epochs: int,
                    before: dt.date) -> pd.Series:
    """One accuracy per night before `before` of `model` at this learning rate and epoch count, indexed by date,
    oldest first: the run the gate tested that night, else the lower median of the night's runs."""
    if history is None or history.empty:
        history = pd.DataFrame(columns=HISTORY_COLUMNS)
    rows = history[(history["model"] == model) & np.isclose(history["learning_rate"], learning_rate)
                   & (history["epochs"] == epochs) & (history["date"].astype(str) < before.isoformat())]
    values = {date: _night_value(night) for date, night in rows.groupby(rows["date"].astype(str), sort=True)}
    return pd.Series(list(values.values()), index=pd.Index(list(values), dtype=object, name="date"), dtype=float,
                     name="accuracy")


def _night_value(night: pd.DataFrame) -> float:
    gated = night[night["decision"].notna()] if "decision" in night.columns else night.iloc[:0]
    accuracies = sorted((gated if len(gated) else night)["accuracy"].astype(float))
    return accuracies[(len(accuracies) - 1) // 2]


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


# ---- champions ----------------------------------------------------------------------------------------------

class ChampionMismatchError(ValueError):
    """A champion's files disagree with its record, or it cannot be compared with tonight's run."""


class ChampionVersion(Record):
    """One version of a model's champion: where it came from, what it was tested on, why it was made."""

    model: str
    version: int
    run_id: str
    accuracy: float  # on the test split of `test_hash`
    learning_rate: float | None
    epochs: int | None
    seed: int | None
    dataset: str | None  # None: a champion of the previous format whose manifest did not say
    data_hash: str | None  # content hash of the whole data set the run was trained on
    test_hash: str | None  # hash of the test split its accuracy and predictions are on; None: unknown
    model_sha256: str
    date: str  # the night it became champion
    flow_run_id: str | None
    promoted_at: str  # UTC, ISO 8601
    reason: str
    previous_version: int | None  # the champion it replaced
    previous_accuracy: float | None
    source_version: int | None = None  # a rollback's copy: the version whose model it is

    @property
    def label(self) -> str:
        return f"v{self.version:04d}"


def model_folder(champions_dir: str | os.PathLike[str], model: str) -> Path:
    """The folder of every champion version of `model`."""
    return Path(champions_dir) / model


def version_folder(champions_dir: str | os.PathLike[str], model: str, version: int) -> RunFolder:
    """A champion version's folder: `model.keras`, `manifest.json`, `predictions.parquet` as in a run folder."""
    return RunFolder(model_folder(champions_dir, model) / f"v{version:04d}")


def champion_models(champions_dir: str | os.PathLike[str]) -> list[str]:
    """Every model with a champion (of either format), sorted."""
    champions_dir = Path(champions_dir)
    if not champions_dir.is_dir():
        return []
    folders = {path.name for path in champions_dir.iterdir() if path.is_dir() and not path.name.startswith(".")}
    previous = {path.stem for path in champions_dir.glob("*.json") if not path.name.startswith(".")}
    return sorted(folders | previous)


def champion_versions(champions_dir: str | os.PathLike[str], model: str) -> list[ChampionVersion]:
    """Every champion version of `model`, oldest first (the last is the champion); reads, never writes.

    A champion of the previous format is shown as the version 1 it becomes on first use.
    """
    versions = [_read_record(folder, model) for folder in _version_folders(champions_dir, model)]
    if versions:
        return versions
    previous = _previous_format(Path(champions_dir), model)
    return [previous.record] if previous else []


def current_champion(champions_dir: str | os.PathLike[str], model: str) -> ChampionVersion | None:
    """The champion of `model`, its model file checked against its record; None only when it has never had one.

    A champion of the previous format is migrated first. Anything that looks like a champion but cannot be
    read is an error, never "no champion".
    """
    migrate_previous_format(champions_dir, model)
    versions = champion_versions(champions_dir, model)
    if not versions:
        _refuse_leftovers(Path(champions_dir), model)
        return None
    champion = versions[-1]
    _check_model_file(version_folder(champions_dir, model, champion.version), champion)
    return champion


def check_comparable(champion: ChampionVersion, data: PreparedData) -> None:
    """Refuse to compare tonight's run with a champion tested on another data set or test split."""
    where = f"champion {champion.label} of {champion.model} (run {champion.run_id})"
    advice = ("expected the same data set and test split; give each data set its own --artifacts-dir, or roll the "
              "champion back to a version of this data set (python flows/champions.py list)")
    if champion.dataset is not None and champion.dataset != data.dataset:
        raise ChampionMismatchError(f"{where} was trained on {champion.dataset!r}, tonight's run on "
                                    f"{data.dataset!r}; {advice}")
    if champion.test_hash is not None and champion.test_hash != data.test_hash:
        raise ChampionMismatchError(f"{where} was tested on the test split {champion.test_hash[:12]}, tonight's run "
                                    f"on {data.test_hash[:12]}; {advice}")
    if champion.test_hash is None and champion.data_hash != data.content_hash:
        raise ChampionMismatchError(f"{where} does not record its test split, and the data set it was trained on "
                                    f"({champion.data_hash}) is not tonight's ({data.content_hash}); {advice}")


def baseline_correct(champions_dir: str | os.PathLike[str], champion: ChampionVersion, test_hash: str,
                     repredict: Callable[[RunFolder], None] | None) -> np.ndarray:
    """Per test image, whether the champion is right: from its stored predictions if they are this model's on
    this test split, else from `repredict(folder)` (which writes them again), else a ChampionMismatchError."""
    folder = version_folder(champions_dir, champion.model, champion.version)
    expected = {"model": champion.model_sha256, "test": test_hash}
    if not _baseline_matches(folder, expected) and repredict is not None:
        repredict(folder)
    if not _baseline_matches(folder, expected):
        state = "missing" if not folder.predictions.exists() else "not stamped with this model and test split"
        raise ChampionMismatchError(
            f"champion {champion.label} of {champion.model}: its predictions {folder.predictions} are {state}"
            f"{' and predicting them again did not help' if repredict else ''}; expected the test-split predictions "
            f"of {folder.model} (model {champion.model_sha256[:12]}, test split {test_hash[:12]}), the gate's baseline")
    return correct_vector(folder.predictions)


def _baseline_matches(folder: RunFolder, expected: dict[str, str]) -> bool:
    stamp = prediction.read_stamp(folder.predictions) if folder.predictions.exists() else None
    return stamp is not None and all(stamp.get(key) == value for key, value in expected.items())


def promote(champions_dir: str | os.PathLike[str], model: str, run: RunFolder, *, accuracy: float, dataset: str,
            test_hash: str, date: dt.date, reason: str, flow_run_id: str | None = None) -> ChampionVersion:
    """Make a run the next champion version of `model`, with its predictions, in one atomic step."""
    for path in (run.model, run.manifest, run.predictions):
        if not path.is_file():
            raise FileNotFoundError(f"cannot promote {model}: {path} does not exist; expected a trained and "
                                    "evaluated run's file")
    digest = sha256_file(run.model)
    if not _baseline_matches(run, {"model": digest, "test": test_hash}):
        raise ValueError(f"cannot promote {model}: {run.predictions} were not made by {run.model} on the test split "
                         f"{test_hash[:12]}; evaluate the run again first")
    manifest = json.loads(run.manifest.read_text())
    parameters = manifest.get("parameters", {})
    migrate_previous_format(champions_dir, model)  # the old champion becomes version 1, this run version 2
    previous = champion_versions(champions_dir, model)
    record = ChampionVersion(
        model=model, version=_next_version(champions_dir, model), run_id=run.run_id, accuracy=accuracy,
        learning_rate=parameters.get("learning_rate"), epochs=parameters.get("epochs"), seed=manifest.get("seed"),
        dataset=dataset, data_hash=manifest.get("data_hash"), test_hash=test_hash, model_sha256=digest,
        date=date.isoformat(), flow_run_id=flow_run_id, promoted_at=_now(), reason=reason,
        previous_version=previous[-1].version if previous else None,
        previous_accuracy=previous[-1].accuracy if previous else None)
    return _write_version(champions_dir, record, run)


def rollback(champions_dir: str | os.PathLike[str], model: str, date: dt.date,
             to_version: int | None = None) -> ChampionVersion:
    """Make an earlier version the champion again, as a new version holding its files; by default the version the
    current champion's model replaced."""
    current = current_champion(champions_dir, model)
    if current is None:
        raise ValueError(f"{model} has no champion under {champions_dir}; nothing to roll back")
    versions = {version.version: version for version in champion_versions(champions_dir, model)}
    source = versions[current.source_version or current.version]
    target = to_version if to_version is not None else source.previous_version
    if target is None:
        raise ValueError(f"{model}'s champion {current.label} has no earlier version to roll back to; "
                         "expected --to-version naming one of " + ", ".join(f"{number}" for number in versions))
    if target not in versions:
        raise ValueError(f"{model} has no champion version {target}; expected one of "
                         + ", ".join(f"{number}" for number in versions))
    chosen = versions[target]
    origin = version_folder(champions_dir, model, chosen.version)
    _check_model_file(origin, chosen)
    if chosen.model_sha256 == current.model_sha256:
        raise ValueError(f"{model}'s champion {current.label} already is the model of version {target}")
    record = chosen.model_copy(update={
        "version": _next_version(champions_dir, model), "date": date.isoformat(), "flow_run_id": None,
        "promoted_at": _now(), "reason": f"rollback to {chosen.label} from {current.label}",
        "previous_version": current.version, "previous_accuracy": current.accuracy,
        "source_version": chosen.source_version or chosen.version})
    return _write_version(champions_dir, record, origin)


def promotions_table(champions_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Every promotion and rollback of every model's champion, in the order they happened."""
    rows = [{"date": version.date, "model": version.model, "version": version.version,
             "previous_version": version.previous_version, "old_accuracy": version.previous_accuracy,
             "new_accuracy": version.accuracy, "reason": version.reason, "run_id": version.run_id,
             "flow_run_id": version.flow_run_id, "promoted_at": version.promoted_at}
            for model in champion_models(champions_dir) for version in champion_versions(champions_dir, model)]
    table = pd.DataFrame(rows, columns=list(PROMOTION_COLUMNS))
    table = table.astype({"version": "int64", "previous_version": "Int64", "old_accuracy": float,
                          "new_accuracy": float})
    return table.sort_values(["promoted_at", "model"], kind="stable", ignore_index=True)


def champion_run_ids(champions_dir: str | os.PathLike[str]) -> set[str]:
    """The run ids the current champions came from."""
    return {versions[-1].run_id for model in champion_models(champions_dir)
            if (versions := champion_versions(champions_dir, model))}


def _version_folders(champions_dir: str | os.PathLike[str], model: str) -> list[Path]:
    folder = model_folder(champions_dir, model)
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir()
             if (match := _VERSION.fullmatch(path.name)) and path.is_dir() and not path.is_symlink()]
    return [path for _, path in sorted(found)]


def _read_record(folder: Path, model: str) -> ChampionVersion:
    try:
        record = ChampionVersion.from_json((folder / _RECORD).read_text())
    except (OSError, ValueError) as error:
        raise ChampionMismatchError(
            f"champion version {folder} of {model} cannot be read ({error}); expected the {_RECORD} that promotion "
            f"wrote; restore it, or move {folder} out of {folder.parent}") from error
    if record.model != model or f"v{record.version:04d}" != folder.name:
        raise ChampionMismatchError(f"{folder / _RECORD} describes {record.model} {record.label}; expected {model} "
                                    f"{folder.name}: the folder was renamed or copied by hand")
    return record


def _check_model_file(folder: RunFolder, record: ChampionVersion) -> None:
    if not folder.model.is_file() or sha256_file(folder.model) != record.model_sha256:
        state = "is missing" if not folder.model.is_file() else "does not match its record (SHA-256 differs)"
        raise ChampionMismatchError(
            f"champion {record.label} of {record.model}: {folder.model} {state}; expected the model promoted with "
            f"run {record.run_id}: restore it, or roll back to another version (python flows/champions.py)")


def _next_version(champions_dir: str | os.PathLike[str], model: str) -> int:
    folders = _version_folders(champions_dir, model)
    return int(_VERSION.fullmatch(folders[-1].name).group(1)) + 1 if folders else 1


def _write_version(champions_dir: str | os.PathLike[str], record: ChampionVersion,
                   origin: RunFolder) -> ChampionVersion:
    """Copy the model, manifest and predictions (if any) of `origin` and the record into a new version folder."""
    final = version_folder(champions_dir, record.model, record.version)
    with atomic_directory(final.path) as temporary:
        for source, target in ((origin.model, "model.keras"), (origin.manifest, "manifest.json"),
                               (origin.predictions, "predictions.parquet")):
            if source.is_file():
                shutil.copyfile(source, temporary / target)
        (temporary / _RECORD).write_text(record.to_json())
    return record


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---- champions of the previous format ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Previous:
    """A champion of the previous format: the version 1 it becomes, and its files."""

    record: ChampionVersion
    model_path: Path
    predictions_path: Path
    manifest: dict
    files: tuple[Path, ...]  # everything to remove once migrated


def _previous_format(champions_dir: Path, model: str) -> _Previous | None:
    record_path = champions_dir / f"{model}.json"
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        model_path = champions_dir / record.get("model_file", f"{model}.keras")
        run_id, accuracy = str(record["run_id"]), float(record["accuracy"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ChampionMismatchError(f"champion record {record_path} cannot be read ({error}); expected the JSON the "
                                    "previous nightly format wrote, with run_id and accuracy") from error
    if not model_path.is_file():
        raise ChampionMismatchError(f"champion record {record_path} names {model_path.name}, which is missing; "
                                    f"restore it, or move {model}.* out of {champions_dir} to start a new champion")
    digest = sha256_file(model_path)
    if record.get("model_sha256", digest) != digest:
        raise ChampionMismatchError(f"champion of {model}: {model_path} does not match its record {record_path} "
                                    f"(SHA-256 differs); expected the file promoted with run {run_id}")
    manifest = record.get("manifest") or {}
    parameters = manifest.get("parameters", {})
    predictions = champions_dir / f"{model}.predictions.parquet"
    stamp = prediction.read_stamp(predictions) if predictions.is_file() else None
    promoted_at = str(record.get("promoted_at", ""))
    version = ChampionVersion(
        model=model, version=1, run_id=run_id, accuracy=accuracy,
        learning_rate=record.get("learning_rate", parameters.get("learning_rate")),
        epochs=parameters.get("epochs"), seed=record.get("seed", manifest.get("seed")),
        dataset=parameters.get("dataset"), data_hash=manifest.get("data_hash"),
        test_hash=(stamp or {}).get("test"), model_sha256=digest, date=promoted_at[:10], flow_run_id=None,
        promoted_at=promoted_at, reason=f"migrated from the previous champion files ({record_path.name})",
        previous_version=None, previous_accuracy=None)
    files = (record_path, model_path, champions_dir / f"{model}.keras", predictions,
             *champions_dir.glob(f"{model}.*.keras"))
    return _Previous(version, model_path, predictions, manifest, files)


def migrate_previous_format(champions_dir: str | os.PathLike[str], model: str) -> ChampionVersion | None:
    """Turn a champion of the previous format into version 1 (then remove the old files); None if there is none."""
    if _version_folders(champions_dir, model):
        return None
    previous = _previous_format(Path(champions_dir), model)
    if previous is None:
        return None
    with atomic_directory(version_folder(champions_dir, model, 1).path) as temporary:
        shutil.copyfile(previous.model_path, temporary / "model.keras")
        if previous.predictions_path.is_file():
            shutil.copyfile(previous.predictions_path, temporary / "predictions.parquet")
        write_json(temporary / "manifest.json", previous.manifest)
        (temporary / _RECORD).write_text(previous.record.to_json())
    for path in previous.files:
        path.unlink(missing_ok=True)
    return previous.record


def _refuse_leftovers(champions_dir: Path, model: str) -> None:
    """Files of a champion without its record mean a champion was lost, not that there never was one."""
    leftovers = sorted(path.name for path in champions_dir.glob(f"{model}.*") if not path.name.startswith("."))
    if leftovers:
        raise ChampionMismatchError(
            f"{champions_dir} holds {', '.join(leftovers)} of a champion of {model} but not its record {model}.json; "
            "expected a whole champion or none: restore the record, or move those files out to start a new champion")


# ---- what each night used, and retention --------------------------------------------------------------------

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
