"""Which runs a study needs, which of them must train, in what order, and how many at once.

Pure decisions over a `StudyConfig`: the flows call these and only wire the results to tasks.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mnist_models.architectures import ARCHITECTURES, check_model_name
from mnist_models.config import StudyConfig
from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import (TRAINING_LIBRARIES, Decision, StageKey, code_closure, key_change,
                                     library_versions, numerics_environment)
from mnist_models.records import EvaluatedRun, PlannedRun, Role, RunSpec
from mnist_models.training import read_manifest

# Seconds per training epoch of each model on 2 cores (60,000 images, with validation): the
# relative cost that orders the runs, measured on the 2-core development machine.
EPOCH_COST = {"dnn": 4.3, "convnet": 13.3, "resnet": 43.0, "resnet_plain": 43.0}
STALL_FLOOR_SECONDS = 900.0  # never call a training hung sooner: start-up, tracing and a slow disk take time
STALL_EPOCHS = 10  # ... nor before ten times its expected epoch time has passed without a progress line
DEFAULT_RUN_MEMORY_MB = 1536.0  # a run's peak before any manifest has measured one (ResNet: about 1 GiB)


def run_spec(model: str, learning_rate: float, epochs: int, batch_size: int, seed: int,
             train_subset: int | None, dataset: str, data_hash: str) -> RunSpec:
    """A run's spec: the code of every module its training imports (of the registry, only this model's entry),
    the training libraries' versions and the environment that changes TensorFlow's numerics."""
    check_model_name(model)
    builder_module, _ = ARCHITECTURES[model]
    code = code_closure("mnist_models.training", builder_module,
                        entries={"mnist_models.architectures": ("ARCHITECTURES", model)})
    return RunSpec(model=model, learning_rate=float(learning_rate), epochs=epochs, batch_size=batch_size, seed=seed,
                   train_subset=train_subset, dataset=dataset, data_hash=data_hash, code_files=code,
                   versions={**library_versions(TRAINING_LIBRARIES), **numerics_environment()})


def plan_runs(config: StudyConfig, data_hash: str, train_images: int | None = None) -> list[PlannedRun]:
    """The study's runs, each once with every role it serves: the sweep grid, then the gradient pair, per seed.

    A training subset of at least `train_images` (the training split's size) is the whole split: the
    same runs as no subset, under the same run ids.
    """
    subset = config.train_subset
    if subset is not None and train_images is not None and subset >= train_images:
        subset = None

    def spec(model: str, learning_rate: float, epochs: int, seed: int):
        return run_spec(model, learning_rate, epochs, config.batch_size, seed, subset, config.dataset, data_hash)

    wanted: list[tuple[Role, RunSpec]] = [
        ("sweep", spec(model, rate, config.epochs, seed))
        for seed in config.run_seeds for model in config.models for rate in config.learning_rates]
    wanted += [("gradient", spec(model, config.gradient_learning_rate, config.gradient_epochs, seed))
               for seed in config.run_seeds for model in config.gradient_models]
    roles: dict[str, set[Role]] = {}
    specs = {}
    for role, run in wanted:
        specs.setdefault(run.run_id, run)
        roles.setdefault(run.run_id, set()).add(role)
    return [PlannedRun(spec=specs[run_id], roles=frozenset(roles[run_id])) for run_id in specs]


def spec_key(spec: RunSpec) -> StageKey:
    """A run's key in the terms a cache decision explains: parameters, data, code files, library versions and
    environment."""
    return StageKey(parameters=spec.model_dump(include={"epochs", "batch_size", "seed", "train_subset"}),
                    inputs={"data": spec.data_hash}, code=spec.code_files, versions=spec.versions)


def training_decision(run: PlannedRun, layout: ArtifactsLayout, refresh: bool) -> Decision:
    """Reuse a run whose folder holds a manifest and every file with the hash it lists; else say why not.

    A run's folder name is its spec's content address, so a changed spec is a new folder: the reason
    compares it with the latest earlier run of the same model and learning rate.
    """
    folder = layout.run(run.run_id)

    def decision(action: str, reason: str) -> Decision:
        return Decision(stage="train", item=run.run_id, action=action, reason=reason)

    if refresh:
        return decision("recomputed", "--refresh")
    if read_manifest(folder) is not None:
        return decision("reused", "run folder complete and unchanged")
    if folder.manifest.exists():
        return decision("recomputed", "outputs missing or modified (run folder differs from its manifest)")
    previous = _previous_run(run.spec, layout)
    if previous is None:
        return decision("recomputed", "new")
    return decision("recomputed", key_change(spec_key(previous), spec_key(run.spec)) or "new")


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


def _previous_run(spec: RunSpec, layout: ArtifactsLayout) -> RunSpec | None:
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


def epoch_costs(layout: ArtifactsLayout | None = None) -> dict[str, float]:
    """Relative seconds per epoch of each model: measured on this machine where manifests have them, else the
    development machine's (scaled to 60,000 images), so measured and default costs compare."""
    measured = {model: cost * 60 for model, cost in (measured_epoch_costs(layout) if layout else {}).items()}
    return {**EPOCH_COST, **measured}


def stall_seconds(spec: RunSpec, costs: dict[str, float] | None = None, threads: int | None = None) -> float:
    """How long a training process may go without a progress line before it counts as hung.

    Ten times the run's expected epoch (its model's measured cost on 2 cores, scaled to its images
    and to one thread when it has one), and never under STALL_FLOOR_SECONDS.
    """
    per_epoch = (costs or EPOCH_COST).get(spec.model, max(EPOCH_COST.values()))
    images = spec.train_subset or 60_000
    expected = per_epoch * images / 60_000 * (2 if threads == 1 else 1)
    return max(STALL_FLOOR_SECONDS, STALL_EPOCHS * expected)


def expected_cost(run: PlannedRun, costs: dict[str, float] | None = None) -> float:
    """Relative cost of a run: seconds per epoch of its model times its epochs."""
    return (costs or EPOCH_COST).get(run.spec.model, 1.0) * run.spec.epochs


def longest_first(planned: Sequence[PlannedRun]) -> list[PlannedRun]:
    """Runs in decreasing expected cost, so the long ones do not start last and leave cores idle."""
    return sorted(planned, key=lambda run: -expected_cost(run))


def lineage_jobs(planned: Sequence[PlannedRun], costs: dict[str, float] | None = None) -> list[list[PlannedRun]]:
    """The runs to train grouped into lineages (equal but for their epochs), each trained once, longest first.

    The study's resnet at LR 0.001 for 10 epochs (sweep) and for 20 (gradient experiment) is one job:
    the 10-epoch run is written on the way to 20.
    """
    jobs: dict[str, list[PlannedRun]] = {}
    for run in planned:
        jobs.setdefault(run.spec.lineage, []).append(run)
    ordered = [sorted(job, key=lambda run: run.spec.epochs) for job in jobs.values()]
    # Longest processing time first: on a pool of workers, the last jobs to start are the short ones,
    # so no worker idles long at the end of the grid.
    return sorted(ordered, key=lambda job: -expected_cost(job[-1], costs))


def prune_checkpoints(layout: ArtifactsLayout, planned: Sequence[PlannedRun]) -> list[Path]:
    """Remove the checkpoints of lineages no planned run belongs to; return what was removed."""
    from mnist_models.training import checkpoints_of

    wanted = {checkpoints_of(layout.runs_dir, run.spec).name for run in planned}
    removed = [folder for folder in sorted((layout.runs_dir / ".checkpoints").glob("*"))
               if folder.is_dir() and folder.name not in wanted]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


@dataclass(frozen=True)
class Capacity:
    """What this machine offers the training runs: cores, available memory, and a run's expected peak."""

    cores: int
    available_mb: float
    run_mb: float

    @property
    def runs_by_memory(self) -> int:
        return max(1, int(self.available_mb // self.run_mb))

    def describe(self) -> str:
        return (f"{self.cores} core(s), {self.available_mb / 1024:.1f} GiB available at about {self.run_mb:.0f} MiB "
                f"per run (room for {self.runs_by_memory})")


def machine_capacity(layout: ArtifactsLayout | None = None) -> Capacity:
    """This machine's cores and available memory; a run's peak from earlier manifests, else a default."""
    peaks = []
    for manifest in (recorded_manifests(layout) if layout else ()):
        try:
            peaks.append(float(manifest["peak_memory_mb"]))
        except (KeyError, TypeError, ValueError):
            continue
    return Capacity(cores=os.cpu_count() or 1, available_mb=_available_memory_mb(),
                    run_mb=max(peaks) * 1.25 if peaks else DEFAULT_RUN_MEMORY_MB)


def _available_memory_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / 2**20


def check_workers(config: StudyConfig, capacity: Capacity) -> None:
    """Refuse more parallel runs than the machine's memory holds, with the numbers."""
    if config.workers and not config.dask_address and config.workers > capacity.runs_by_memory:
        raise ValueError(f"invalid workers: {config.workers} parallel runs do not fit this machine "
                         f"({capacity.describe()}); expected at most {capacity.runs_by_memory}")


def parallel_runs(config: StudyConfig, runs_to_train: int, capacity: Capacity, gpu_slots: int = 0) -> int:
    """How many runs train at once: the workers option (else one per core, or one per GPU slot on a GPU
    machine), within memory, no more than there are runs."""
    default = gpu_slots or capacity.cores
    return max(1, min(config.workers or default, capacity.runs_by_memory, runs_to_train))


def threads_per_worker(config: StudyConfig, lineages_to_train: int, capacity: Capacity,
                       gpu_slots: int = 0) -> int | None:
    """TensorFlow threads per training process: the cores shared among the lineages that train at once (a
    lineage is one process, however many of its runs it writes)."""
    if config.dask_address:
        return None  # the cluster's workers decide
    return max(1, capacity.cores // parallel_runs(config, max(1, lineages_to_train), capacity, gpu_slots))


def study_order(runs: Iterable[EvaluatedRun], model_order: Sequence[str]) -> list[EvaluatedRun]:
    """Runs as the tables list them: sweep runs first, models in the study's order, largest learning rate first."""
    return sorted(runs, key=lambda run: (not run.serves("sweep"), model_order.index(run.model), -run.learning_rate,
                                         run.spec.seed))
