"""Run folders as the stage engine's records of the `train` stage (mnist_models.engine).

A run folder is its own record: `RunRecords` reads its manifest as a StageRecord whose key is the key of
the spec it was trained from, and whose outputs are its files with their hashes. A folder is reused only
when that key equals the planned run's and every file is intact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import StageKey, StageRecord
from mnist_models.records import RunSpec
from mnist_models.runs import previous_run


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


