"""The home of run folders: manifests, checkpoints and where a lineage resumes, the run a new one replaces,
and the costs measured by earlier runs.

A run folder is written whole (renamed in), its manifest last: it lists the spec the run was trained
from and the hash of every file, so a folder is complete when its manifest reads back and every file
still has its hash. Runs whose specs differ only in their epochs form a lineage; a longer run continues
the furthest saved state of its lineage: a finished run, or a per-epoch checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mnist_models.hashing import file_sha256
from mnist_models.layout import ArtifactsLayout, RunFolder
from mnist_models.records import PlannedRun, RunSpec, TrainedRun


def read_manifest(folder: RunFolder) -> dict | None:
    """The run's manifest if the folder is complete (manifest readable, every listed file present)."""
    try:
        manifest = json.loads(folder.manifest.read_text())
    except (OSError, ValueError):
        return None
    files = manifest.get("files", [])
    if not files or not all((folder.path / name).exists() for name in files):
        return None
    return manifest if manifest.get("file_hashes") == folder_hashes(folder) else None


def folder_hashes(folder: RunFolder) -> dict[str, str]:
    """SHA-256 of every file of a run folder that training wrote (tensorboard's files one by one)."""
    names = [path for path in sorted(folder.path.rglob("*"))
             if path.is_file() and path != folder.manifest and path != folder.predictions]
    return {path.relative_to(folder.path).as_posix(): file_sha256(path) for path in names}


def trained_run(spec: RunSpec, manifest: dict) -> TrainedRun:
    """The record of a finished run, from its manifest."""
    diverged = manifest.get("diverged") or {}
    return TrainedRun(spec=spec, parameters=manifest["trainable_parameters"], train_seconds=manifest["wall_seconds"],
                      diverged_epoch=diverged.get("epoch"))


@dataclass(frozen=True)
class Start:
    """Where a lineage's training resumes: a saved state after `epoch` epochs, from a run folder or a checkpoint."""

    epoch: int
    folder: RunFolder
    source: str  # the run id, or "checkpoint"


def checkpoints_of(runs_dir: Path, spec: RunSpec) -> Path:
    """The folder of a lineage's per-epoch checkpoints (the latest one is kept until the lineage is done)."""
    return runs_dir / ".checkpoints" / f"{spec.model}-{spec.lineage[:16]}"


def find_start(spec: RunSpec, runs_dir: Path, up_to: int, exclude: frozenset[str] = frozenset()) -> Start | None:
    """The furthest saved state of `spec`'s lineage at or before epoch `up_to`: a finished run (not one of
    `exclude`, the runs about to be written), else a checkpoint."""
    candidates = []
    for manifest_path in runs_dir.glob("*/manifest.json"):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue
        epochs = manifest.get("parameters", {}).get("epochs", 0)
        if manifest.get("lineage") == spec.lineage and 0 < epochs <= up_to and manifest_path.parent.name not in exclude:
            candidates.append(Start(epochs, RunFolder(manifest_path.parent), manifest_path.parent.name))
    for marker in checkpoints_of(runs_dir, spec).glob("epoch-*/state.json"):
        epoch = json.loads(marker.read_text())["epoch"]
        if 0 < epoch <= up_to:
            candidates.append(Start(epoch, RunFolder(marker.parent), "checkpoint"))
    for start in sorted(candidates, key=lambda item: (-item.epoch, item.source == "checkpoint")):
        if start.source == "checkpoint" or read_manifest(start.folder) is not None:
            return start
    return None


def recorded_manifests(layout: ArtifactsLayout) -> tuple[dict, ...]:
    """Every readable manifest under the layout's runs folder (read once while the folder is unchanged)."""
    runs_dir = layout.runs_dir
    status = runs_dir.stat() if runs_dir.exists() else None
    return _manifests_of(runs_dir, (status.st_mtime_ns, status.st_nlink) if status else None)


@lru_cache(maxsize=16)
def _manifests_of(runs_dir: Path, version: tuple[int, int] | None) -> tuple[dict, ...]:
    """Run folders are replaced whole (renamed in), so the folder's modification time tells a change."""
    manifests = []
    for manifest_path in sorted(runs_dir.glob("*/manifest.json")):
        try:
            manifests.append(json.loads(manifest_path.read_text()))
        except (OSError, ValueError):
            continue  # a half-written folder: nothing to learn from
    return tuple(manifests)


def previous_run(spec: RunSpec, layout: ArtifactsLayout) -> RunSpec | None:
    """The spec of the latest run of the same model, learning rate and data set under the layout."""
    candidates = []
    for manifest in recorded_manifests(layout):
        try:
            earlier = RunSpec.model_validate(manifest["parameters"])
        except (ValueError, KeyError):
            continue  # a folder of an older layout: nothing to compare with
        if (earlier.model, earlier.learning_rate, earlier.dataset) == (spec.model, spec.learning_rate, spec.dataset):
            candidates.append((manifest.get("created_at", ""), earlier))
    return max(candidates, key=lambda item: item[0])[1] if candidates else None


def measured_epoch_costs(layout: ArtifactsLayout) -> dict[str, float]:
    """Seconds per epoch per 1,000 training images of each model, the median over this machine's manifests."""
    samples: dict[str, list[float]] = {}
    for manifest in recorded_manifests(layout):
        try:
            per_thousand = [seconds / manifest["train_images"] * 1000 for seconds in manifest["epoch_seconds"]]
        except (KeyError, TypeError, ZeroDivisionError):
            continue  # manifests of older runs hold no per-epoch times
        samples.setdefault(manifest["parameters"]["model"], []).extend(per_thousand)
    return {model: float(sorted(values)[len(values) // 2]) for model, values in samples.items() if values}



def prune_checkpoints(layout: ArtifactsLayout, planned: Sequence[PlannedRun]) -> list[Path]:
    """Remove the checkpoints of lineages no planned run belongs to; return what was removed."""
    wanted = {checkpoints_of(layout.runs_dir, run.spec).name for run in planned}
    removed = [folder for folder in sorted((layout.runs_dir / ".checkpoints").glob("*"))
               if folder.is_dir() and folder.name not in wanted]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


