"""The whole MNIST study: data -> training grid -> evaluation -> tables -> figures -> report.

Run:   python flows/full_study.py                       (profile `full`: the study's own settings)
       python flows/full_study.py --profile quick --artifacts-dir /tmp/quick
       python flows/full_study.py --help                (every option, with its default)
Time:  quick profile about 45 s on 2 cores; full profile about 17 min (measured 16 min 25 s)
       (12-run learning-rate grid + the 20-epoch gradient pair); a finished study reruns in seconds.
Reach: full profile at LR 0.001 after 10 epochs: dnn ~0.96, convnet ~0.99, resnet ~0.99 test accuracy;
       LR 0.1 diverges (~0.1) as in the study's table 5.1.
Makes: artifacts/{data,runs,tables,figures,report}/ as described in artifacts/README.md.
"""

from __future__ import annotations

import itertools
import sys
from datetime import date, datetime, timezone

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows._concurrency import artifacts_slot
from flows._runtime import checked_config, parse_config, run_cli, run_flow
from flows.prepare_data import DataStageError, prepare
from mnist_models import planning
from mnist_models.config import StudyConfig
from mnist_models.io import DiskFullError, ensure_writable_directory, remove_stale_temporaries
from mnist_models.isolation import close_workers
from mnist_models.layout import ArtifactsLayout
from mnist_models.locking import artifacts_lock
from mnist_models.placement import gpu_slots, visible_gpus
from mnist_models.provenance import StageStore
from mnist_models.data import split_size
from mnist_models.records import FailedRun, PlannedRun, PreparedData, RunOutcome, StudyResult
from mnist_models.training import read_manifest, trained_run
from tasks import stages
from tasks.caching import Ledger
from tasks.evaluation import evaluate_model
from tasks.nightly import gate_champions, prune_old_runs
from tasks.training import train_model


@flow(name="train-grid")
def train_grid(planned: list[PlannedRun], to_train: list[str], to_evaluate: list[str], data: PreparedData,
               layout: ArtifactsLayout, threads: int | None, resume: bool = True,
               gpu_slots: list[int] | None = None, stall_timeout: float | None = None) -> list[RunOutcome]:
    """Train (one task per lineage) and evaluate the runs that need it, in parallel; a failed run is reported,
    not fatal to the others."""
    logger = get_run_logger()
    slots = itertools.cycle(gpu_slots or [None])  # round-robin over the GPU slots; None: CPU only
    costs = planning.epoch_costs(layout)
    jobs = planning.lineage_jobs([run for run in planned if run.run_id in to_train], costs)
    trained = {}
    for job in jobs:
        stall = stall_timeout or planning.stall_seconds(job[0].spec, costs, threads)
        trained[train_model.submit([run.spec for run in job], data, layout, threads, resume, next(slots),
                                   stall)] = job
    done = {run.run_id: stages.reused_training(run, layout) for run in planned if run.run_id not in to_train}
    evaluations = {evaluate_model.submit(record, data, layout, next(slots)): run_id
                   for run_id, record in done.items() if run_id in to_evaluate}
    outcomes, finished = [], 0
    progress = create_progress_artifact(0.0, key="training-grid",
                                        description=f"runs trained of {len(to_train)} planned to train")
    for future in as_completed(list(trained)):
        job = trained[future]
        try:
            records = future.result()
        except Exception as error:  # noqa: BLE001 - one crashed run must not lose the others
            # The runs of the lineage written before the crash are complete: results, not failures.
            written = {run.run_id: manifest for run in job
                       if (manifest := read_manifest(layout.run(run.run_id))) is not None}
            records = [trained_run(run.spec, written[run.run_id]) for run in job if run.run_id in written]
            outcomes += [RunOutcome(run_id=run.run_id, failure=f"{type(error).__name__}: {error}") for run in job
                         if run.run_id not in written]
        for record in records:
            done[record.spec.run_id] = record
            evaluations[evaluate_model.submit(record, data, layout, next(slots))] = record.spec.run_id
        finished += len(job)
        failed = f" ({len(outcomes)} failed)" if outcomes else ""
        logger.info(f"{finished} of {len(to_train)} runs done{failed}")
        update_progress_artifact(progress, 100.0 * finished / max(1, len(to_train)),
                                 description=f"{finished} of {len(to_train)} runs done{failed}")
    for future, run_id in evaluations.items():
        try:
            outcomes.append(RunOutcome(run_id=run_id, trained=done[run_id], scores=future.result()))
        except Exception as error:  # noqa: BLE001
            outcomes.append(RunOutcome(run_id=run_id, failure=f"evaluation: {type(error).__name__}: {error}"))
    return outcomes + [RunOutcome(run_id=run_id, trained=record) for run_id, record in done.items()
                       if run_id not in evaluations.values()]


def task_runner_for(config: StudyConfig, parallel: int):
    """Dask when an address is given; else threads, each driving one run's own child process."""
    if config.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=config.dask_address)
    return ThreadPoolTaskRunner(max_workers=parallel)


def run_study(config: StudyConfig, layout: ArtifactsLayout, ledger: Ledger, today: date) -> StudyResult:
    """Data, training grid, tables, figures, the nightly gate and the report for one resolved configuration."""
    logger = get_run_logger()
    try:
        data = prepare(config.data_config, layout, ledger)
    except (DataStageError, DiskFullError) as error:
        return StudyResult(artifacts_dir=layout.root, planned=0, error=f"data preparation failed: {error}")
    planned = planning.plan_runs(config, data.content_hash, split_size(layout.absolute(data.train)))
    for folder in planning.prune_checkpoints(layout, planned):
        logger.info(f"removed the checkpoints {folder.name}: no planned run continues them")
    training = {run.run_id: ledger.record(planning.training_decision(run, layout, "train" in ledger.refresh))
                for run in planned}
    to_train = [run_id for run_id, decision in training.items() if decision.action == "recomputed"]
    scores = stages.stored_scores(planned, to_train, data, layout, ledger)
    logger.info(f"{len(planned)} runs planned, {len(to_train)} to train, {len(planned) - len(to_train)} already done")
    to_evaluate = [run.run_id for run in planned if run.run_id not in scores]
    if to_evaluate:
        capacity = planning.machine_capacity(layout)
        slots = [] if config.dask_address else gpu_slots(visible_gpus(), len(to_evaluate))
        parallel = planning.parallel_runs(config, len(to_evaluate), capacity, gpu_slots=len(slots))
        lineages = len({run.spec.lineage for run in planned if run.run_id in to_train})
        threads = planning.threads_per_worker(config, lineages, capacity, gpu_slots=len(slots))
        gpus = f", {len(slots)} GPU slot(s) on GPU(s) {sorted(set(slots))}" if slots else ""
        logger.info(f"{parallel} run(s) at once on {threads or 'the cluster`s'} thread(s) each: "
                    f"{capacity.describe()}{gpus}")
        try:
            outcomes = train_grid.with_options(task_runner=task_runner_for(config, parallel))(
                planned, to_train, to_evaluate, data, layout, threads, "train" not in ledger.refresh, slots,
                config.stall_timeout)
        finally:
            close_workers()  # the training processes the worker threads kept from lineage to lineage
    else:  # every run reused as it is: no worker processes to start
        outcomes = [RunOutcome(run_id=run.run_id, trained=stages.reused_training(run, layout)) for run in planned]
    evaluated, failures = stages.collect(planned, outcomes, scores, data, layout, ledger)
    runs = tuple(planning.study_order(evaluated, config.model_order))
    result = StudyResult(artifacts_dir=layout.root, planned=len(planned), runs=runs, failures=tuple(failures))
    champions = []

    def nightly_gate() -> None:
        champions.extend(gate_champions(layout, data, today.isoformat(), str(flow_run.get_id()),
                                        config.regression_tolerance, config.significance_level))
        prune_old_runs(layout, config.keep_nights, [run.run_id for run in planned])

    if runs:
        result = stages.write_outputs(result, config, layout, ledger,
                                      nightly_gate if config.nightly else lambda: None)
        stages.publish(layout, ledger)
    else:  # nothing to report: the tables and report on disk are an earlier run's, not this one's
        stages.publish_failure(layout, ledger, result)
    return result.model_copy(update={"champions": tuple(champions)})


# Parameters are validated in the flow, not by Prefect's engine: a deployment's bad parameter then fails the
# run with the command line's one-line message instead of pydantic's report (the UI's form is unchanged).
@flow(name="full-study", validate_parameters=False)
def full_study(config: StudyConfig = StudyConfig()) -> StudyResult:
    """Run the study end to end; every stage whose inputs and outputs are unchanged is reused.

    With `nightly`, the seed comes from today's date (UTC), tonight's accuracies enter the history,
    each model's champion is kept or replaced, and a regression fails the run. A nightly run writes into
    `nightly/` inside the artifacts directory, apart from the on-demand study.
    """
    today = datetime.now(timezone.utc).date()
    try:
        config = checked_config(config)
    except ValueError as error:
        return Failed(message=f"error: {error}")
    config = config.resolved(today)
    layout = ArtifactsLayout.at(ensure_writable_directory(config.output_root))
    ledger = Ledger(StageStore(layout), frozenset(config.refresh), get_run_logger().info)
    with artifacts_slot(layout.root), artifacts_lock(layout.root):  # wait for other deployments, then lock
        for leftover in remove_stale_temporaries(layout.root):
            get_run_logger().info(f"removed {leftover}, left by a run that was killed")
        try:
            result = run_study(config, layout, ledger, today)
        except DiskFullError as error:
            return Failed(message=str(error))
    problems = stages.failure_message(result)
    return Failed(message=problems) if problems else result


def main(argv: list[str] | None = None) -> StudyResult:
    """Command line: check the options before any work, run the flow, print where the results are."""
    result = run_flow(full_study, parse_config(StudyConfig, __doc__.split("\n\n")[0], argv))
    print(stages.summary_text(result), file=sys.stdout)
    return result


if __name__ == "__main__":
    run_cli(main)
