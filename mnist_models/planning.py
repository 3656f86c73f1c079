"""Which runs a study needs, how they group into lineages, in what order, and how long each may take.

Pure decisions over a `StudyConfig`: the flows call these and only wire the results to tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from mnist_models.architectures import ARCHITECTURES, BUILDER_FIELDS, check_model_name, model_entry
from mnist_models.capacity import thread_shares
from mnist_models.config import StudyConfig
from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import TRAINING_LIBRARIES, code_closure, library_versions, numerics_environment
from mnist_models.records import EvaluatedRun, PlannedRun, Role, RunSpec
from mnist_models.runs import measured_epoch_costs

# Seconds per training epoch of each model on 2 cores (60,000 images, with validation): the
# relative cost that orders the runs, measured on the 2-core development machine.
EPOCH_COST = {name: model.epoch_seconds for name, model in ARCHITECTURES.items()}  # a deep pair's: per block
STALL_FLOOR_SECONDS = 900.0  # never call a training hung sooner: start-up, tracing and a slow disk take time
STALL_EPOCHS = 10  # ... nor before ten times its expected epoch time has passed without a progress line
LineageName = tuple[str, float, int]  # (model, learning rate, seed): what tells a study's lineages apart


def run_spec(model: str, learning_rate: float, epochs: int, batch_size: int, seed: int,
             train_subset: int | None, dataset: str, data_hash: str, threads: int = 1,
             environment: Mapping[str, str] | None = None) -> RunSpec:
    """A run's spec: the code of every module its training imports (of the registry, only this model's entry),
    the training libraries' versions, TensorFlow's thread count and the `environment` variables that change
    TensorFlow's numerics (unset ones count at TensorFlow's defaults)."""
    check_model_name(model)
    entry, _ = model_entry(model)
    code = code_closure("mnist_models.training", ARCHITECTURES[entry].module,
                        entries={"mnist_models.architectures": ("ARCHITECTURES", entry, BUILDER_FIELDS)})
    return RunSpec(model=model, learning_rate=float(learning_rate), epochs=epochs, batch_size=batch_size, seed=seed,
                   train_subset=train_subset, dataset=dataset, data_hash=data_hash, code_files=code, threads=threads,
                   versions={**library_versions(TRAINING_LIBRARIES), **numerics_environment(environment or {})})


def plan_runs(config: StudyConfig, data_hash: str, train_images: int | None = None,
              threads: int | Mapping[LineageName, int] = 1,
              environment: Mapping[str, str] | None = None) -> list[PlannedRun]:
    """The study's runs, each once with every role it serves: the sweep grid, then the gradient pair, per seed.

    `threads`: TensorFlow's thread count of every run, or of each lineage (`share_threads`). A training subset of
    at least `train_images` (the training split's size) is the whole split: the same runs as no subset, under
    the same run ids.
    """
    subset = config.train_subset
    if subset is not None and train_images is not None and subset >= train_images:
        subset = None

    def spec(model: str, learning_rate: float, epochs: int, seed: int):
        count = threads if isinstance(threads, int) else threads[model, float(learning_rate), seed]
        return run_spec(model, learning_rate, epochs, config.batch_size, seed, subset, config.dataset, data_hash,
                        count, environment)

    wanted: list[tuple[Role, RunSpec]] = [
        ("sweep", spec(model, rate, config.epochs, seed))
        for seed in config.run_seeds for model in config.models for rate in config.learning_rates]
    wanted += [("gradient", spec(model, config.gradient_learning_rate, config.gradient_epochs, seed))
               for seed in config.run_seeds for model in config.gradient_pair]
    roles: dict[str, set[Role]] = {}
    specs = {}
    for role, run in wanted:
        specs.setdefault(run.run_id, run)
        roles.setdefault(run.run_id, set()).add(role)
    return [PlannedRun(spec=specs[run_id], roles=frozenset(roles[run_id])) for run_id in specs]


def epoch_costs(layout: ArtifactsLayout | None = None) -> dict[str, float]:
    """Relative seconds per epoch of each model: measured on this machine where manifests have them, else the
    development machine's (scaled to 60,000 images), so measured and default costs compare."""
    measured = {model: cost * 60 for model, cost in (measured_epoch_costs(layout) if layout else {}).items()}
    return {**EPOCH_COST, **measured}


def model_cost(model: str, costs: dict[str, float] | None = None) -> float:
    """Seconds per epoch of a model: measured or registered; a deep pair's registered cost is per block."""
    costs = costs or EPOCH_COST
    if model in costs:
        return costs[model]
    entry, depth = model_entry(model)
    return costs.get(entry, max(EPOCH_COST.values())) * (depth or 1)


def stall_seconds(spec: RunSpec, costs: dict[str, float] | None = None, threads: int | None = None) -> float:
    """How long a training process may go without a progress line before it counts as hung.

    Ten times the run's expected epoch (its model's measured cost on 2 cores, scaled to its images
    and to one thread when it has one), and never under STALL_FLOOR_SECONDS.
    """
    per_epoch = model_cost(spec.model, costs)
    images = spec.train_subset or 60_000
    expected = per_epoch * images / 60_000 * (2 if threads == 1 else 1)
    return max(STALL_FLOOR_SECONDS, STALL_EPOCHS * expected)


def expected_cost(run: PlannedRun, costs: dict[str, float] | None = None) -> float:
    """Relative cost of a run: seconds per epoch of its model times its epochs."""
    return model_cost(run.spec.model, costs) * run.spec.epochs


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


def share_threads(config: StudyConfig, planned: Sequence[PlannedRun], cores: int, gpu_slots: int = 0,
                  dask_cores: Sequence[int] = ()) -> dict[LineageName, int]:
    """TensorFlow threads of each lineage of the planned runs on `cores`, or on the cores a Dask cluster's workers
    lend (`capacity.thread_shares`: spare cores to the critical path). Weighed by the registered epoch costs, never
    by this machine's measured ones: the counts are in the run keys, which must not change because a run has been
    timed since."""
    jobs = lineage_jobs(planned)
    shares = thread_shares(config, [expected_cost(job[-1]) for job in jobs], cores, gpu_slots, dask_cores)
    return {(job[-1].spec.model, job[-1].spec.learning_rate, job[-1].spec.seed): share
            for job, share in zip(jobs, shares)}


def study_order(runs: Iterable[EvaluatedRun], model_order: Sequence[str]) -> list[EvaluatedRun]:
    """Runs as the tables list them: sweep runs first, models in the study's order, largest learning rate first."""
    return sorted(runs, key=lambda run: (not run.serves("sweep"), model_order.index(run.model), -run.learning_rate,
                                         run.spec.seed))
