"""The study's run folders as a whole: their manifests as stage records, the run a new one replaces, measured costs.

A run folder is its own record: its manifest (written last, by training) lists the spec it was trained
from and the hash of every file. `RunRecords` reads it as the stage engine's record of the `train` stage,
so a folder is reused only when its spec's key equals the planned one and every file is intact.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import StageKey, StageRecord
from mnist_models.records import PlannedRun, RunSpec
from mnist_models.training import checkpoints_of


def spec_key(spec: RunSpec) -> StageKey:
    """A run's key in the terms a cache decision explains: parameters, data, code files, library versions and
    environment."""
    return StageKey(parameters=spec.model_dump(include={"epochs", "batch_size", "seed", "train_subset"}),
                    inputs={"data": spec.data_hash}, code=spec.code_files, versions=spec.versions)



class RunRecords:
    """The `train` stage's records: each run folder's manifest, read as a StageRecord (written by training)."""

    def __init__(self, layout: ArtifactsLayout) -> None:
        self.layout = layout
        self.root = layout.root

    def load(self, stage: str, item: str) -> StageRecord | None:
        """The record of run `item`: the key of the spec it was trained from and its files' hashes; None when
        the folder has no readable manifest."""
        folder = self.layout.run(item)
        try:
            manifest = json.loads(folder.manifest.read_text())
            spec = RunSpec.model_validate(manifest["parameters"])
            hashes = dict(manifest["file_hashes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        base = self.layout.relative(folder.path).as_posix()
        listed = {f"{base}/{name}": digest for name, digest in hashes.items()}
        present = {f"{base}/{path.relative_to(folder.path).as_posix()}" for path in folder.path.rglob("*")
                   if path.is_file() and path not in (folder.manifest, folder.predictions)}
        # A file that the manifest does not list counts as a change too: its expected hash is no file at all.
        listed.update({extra: "unlisted" for extra in present - set(listed)})
        return StageRecord(stage=stage, item=item, key=spec_key(spec), outputs=listed, result=manifest)

    def save(self, stage: str, item: str, key: StageKey, outputs: Iterable[Path], result: Any) -> StageRecord:
        """Training wrote the folder and its manifest; check that it reads back as the record of `key`."""
        record = self.load(stage, item)
        if record is None or record.key != key:
            raise RuntimeError(f"run folder {item} has no manifest of the run it was asked to train")
        return record

    def predecessor(self, item: str, key: StageKey, spec: RunSpec) -> StageRecord | None:
        """The latest earlier run of the same model, learning rate and data set: what a new run id replaces."""
        earlier = previous_run(spec, self.layout)
        if earlier is None:
            return None
        return StageRecord(stage="train", item=earlier.run_id, key=spec_key(earlier), outputs={})


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


