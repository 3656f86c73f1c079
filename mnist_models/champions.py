"""Versioned champions: a folder per version of each model's champion, promotion, rollback, and the promotions table.

A champion is a folder per version, `champion/<model>/v0003/`, holding `model.keras`, the run's
`manifest.json`, `predictions.parquet` (the baseline the gate compares against, stamped with the model's
hash and the test split's) and `record.json` (a `ChampionVersion`). The newest version is the champion.
Promotion and rollback write a whole new version under a temporary name and rename it into place: that
one rename is the moment of promotion, so a crash leaves the old champion or the new one, never a champion
without its baseline. Versions are never changed afterwards, except that a missing or stale baseline is
predicted again from the version's own model. Champions of the previous format (`champion/<model>.json`,
`<model>.<sha>.keras`, `<model>.predictions.parquet`) become version 1 on first use.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_models import prediction
from mnist_models.atomic_files import atomic_directory, write_json
from mnist_models.evaluation import correct_vector
from mnist_models.hashing import sha256_file
from mnist_models.layout import RunFolder
from mnist_models.records import PreparedData, Record

PROMOTION_COLUMNS = ("date", "model", "version", "previous_version", "old_accuracy", "new_accuracy", "reason",
                     "run_id", "flow_run_id", "promoted_at")
_VERSION = re.compile(r"v(\d{4,})")
_RECORD = "record.json"


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
