"""The whole MNIST study: data -> training grid -> evaluation -> tables -> figures -> report.

Run:   python flows/full_study.py                       (profile `full`: the study's own settings)
       python flows/full_study.py --profile quick --artifacts-dir /tmp/quick
       python flows/full_study.py --plan                (what a run would reuse or recompute, and why; writes nothing)
       python flows/full_study.py --help                (every option, with its default)
Time:  quick profile 70-105 s on 2 cores, with the host's speed (benchmarks/results/timeline.md); full profile
       about 17 min (16 min 25 s) (12-run learning-rate grid + the 20-epoch gradient pair); a finished study
       reruns in seconds.
Reach: full profile at LR 0.001 after 10 epochs: dnn ~0.96, convnet ~0.99, resnet ~0.99 test accuracy;
       LR 0.1 diverges (~0.1) as in the study's table 5.1.
Makes: artifacts/{data,runs,tables,figures,report}/ as described in artifacts/README.md.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timezone

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows._concurrency import artifacts_slot
from flows._runtime import checked_config, parse_config, raise_if_interrupted, run_cli, run_flow
from flows.prepare_data import DataStageError, plan_data, prepare
from mnist_models import planning
from mnist_models.capacity import machine_capacity, parallel_runs
from mnist_models.config import StudyConfig
from mnist_models.data import split_size
from mnist_models.engine import Engine, Produced, Stage
from mnist_models.provenance import Decision
from mnist_models.atomic_files import DiskFullError, ensure_writable_directory, remove_stale_temporaries
from mnist_models.isolation import allow_starts, close_workers, discard_ahead, start_ahead, stop_all
from mnist_models.layout import ArtifactsLayout
from mnist_models.locking import artifacts_lock
from mnist_models.placement import (DASK_CORES, DaskUnreachableError, dask_resources, dask_worker_cores, gpu_slots,
                                    lends_cores, visible_gpus)
from mnist_models.records import PreparedData, RunSpec, StudyResult, TrainedRun
from mnist_models.runs import prune_checkpoints
from tasks import stages
from tasks.caching import study_engine
from tasks.stages import StudyGraph
from tasks.training import train_model


@flow(name="train-grid")
def train_grid(lineages: list[list[RunSpec]], data: PreparedData, layout: ArtifactsLayout, resume: bool = True, gpu_slots: list[int] | None = None,
               stall_timeout: float | None = None,
               ask_cores: bool = False) -> list[tuple[list[str], list[TrainedRun] | BaseException]]:
    """Train the lineages (one task each) in parallel; each lineage's records, or the error that failed it.

    `ask_cores`: on a Dask cluster whose workers lend their cores, each task asks for as many as its training
    process has threads, so a worker starts it only when they are free.
    """
    logger = get_run_logger()
    slots = itertools.cycle(gpu_slots or [None])  # round-robin over the GPU slots; None: CPU only
    costs = planning.epoch_costs(layout)
    total, finished, failed, done = sum(map(len, lineages)), 0, 0, []
    allow_starts()
    # Wherever a Ctrl-C or SIGTERM lands once training has started (it is raised in this thread), the training
    # processes are stopped here: the task runner, on the way out, would otherwise wait for every lineage to end.
    try:
        futures = {}
        for specs in lineages:
            with dask_annotation(specs[0].threads if ask_cores else None):
                futures[train_model.submit(specs, data, layout, resume, next(slots), stall_timeout
                                           or planning.stall_seconds(specs[0], costs, specs[0].threads))] = specs
        progress = create_progress_artifact(0.0, key="training-grid",
                                            description=f"runs trained of {total} planned to train")
        for future in as_completed_or_interrupted(list(futures)):
            specs = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - one crashed lineage must not lose the others
                outcome, failed = error, failed + len(specs)
            done.append(([spec.run_id for spec in specs], outcome))
            finished += len(specs)
            note = f" ({failed} failed)" if failed else ""
            logger.info(f"{finished} of {total} runs done{note}")
            update_progress_artifact(progress, 100.0 * finished / max(1, total),
                                     description=f"{finished} of {total} runs done{note}")
    except BaseException:  # Ctrl-C, SIGTERM, a cancelled deployment run
        stopped = stop_all()
        logger.warning(f"interrupted after {finished} of {total} runs: stopped {stopped} training process(es); "
                       "a rerun continues from their last checkpoints")
        raise
    return done


def as_completed_or_interrupted(futures: list, poll_seconds: float = 0.5) -> Iterator:
    """The futures as they complete; every `poll_seconds` of waiting, the interruption of a SIGINT or SIGTERM
    whose exception was lost (`raise_if_interrupted`), which a wait with no end would only notice once a lineage
    ends: its training processes killed by the signal, Prefect would retry the lineage meanwhile."""
    finished = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(finished.put)
    for _ in futures:
        while True:
            try:
                future = finished.get(timeout=poll_seconds)
                break
            except queue.Empty:
                raise_if_interrupted()
        yield future


def dask_annotation(threads: int | None):
    """Dask's annotation of the tasks submitted inside it: a training task's `threads` cores, or nothing (None)."""
    if threads is None:
        return contextlib.nullcontext()
    import dask

    return dask.annotate(**dask_resources(threads))


def grid_runner(graph: StudyGraph):
    """The `train` stage's runner: its lineages on this machine's cores (or GPU slots), or on a Dask cluster."""
    config, layout, data = graph.config, graph.layout, graph.data
    resume = "train" not in graph.engine.refresh

    def run(stage: Stage, units, upstream):
        specs = {run_id: graph.by_id[run_id].spec for unit in units for run_id in unit}
        capacity = machine_capacity(layout)
        slots = [] if config.dask_address else gpu_slots(visible_gpus(), len(specs))
        parallel = parallel_runs(config, len(units), capacity, gpu_slots=len(slots))
        discard_ahead(keep=0 if config.dask_address else parallel)  # processes started ahead beyond this grid's
        gpus = f", {len(slots)} GPU slot(s) on GPU(s) {sorted(set(slots))}" if slots else ""
        get_run_logger().info(f"{parallel} run(s) at once on {describe_threads(specs.values())}: "
                              f"{capacity.describe()}{gpus}")
        lineages = [[specs[run_id] for run_id in unit] for unit in units]
        if config.dask_address:
            get_run_logger().info(describe_dask_cores(graph.dask_cores))
        try:
            done = train_grid.with_options(task_runner=task_runner_for(config, parallel))(
                lineages, data, layout, resume, slots, config.stall_timeout, ask_cores=lends_cores(graph.dask_cores))
        finally:
            close_workers()  # the training processes the worker threads kept from lineage to lineage
        for run_ids, outcome in done:
            yield run_ids, (outcome if isinstance(outcome, BaseException)
                            else {trained.spec.run_id: Produced(trained) for trained in outcome})

    return run


def describe_threads(specs: Iterable[RunSpec]) -> str:
    """`1 thread(s) each`, or where spare cores went to the longest lineages, e.g.
    `1-3 threads (3 for the longest: resnet lr=0.001)`."""
    specs = list(specs)
    counts = sorted({spec.threads for spec in specs})
    if len(counts) == 1:
        return f"{counts[0]} thread(s) each"
    most = sorted({f"{spec.model} lr={spec.learning_rate:g}" for spec in specs if spec.threads == counts[-1]})
    return f"{counts[0]}-{counts[-1]} threads ({counts[-1]} for the longest: {', '.join(most)})"


def describe_dask_cores(dask_cores: Sequence[int]) -> str:
    """What the Dask cluster's workers lent when the study was planned, and what the training tasks make of it."""
    if not dask_cores:
        return "Dask: no worker connected when the study was planned; one thread per training task"
    if lends_cores(dask_cores):
        return (f"Dask: {len(dask_cores)} worker(s) lend {sum(dask_cores)} core(s) (at most {max(dask_cores)} on one);"
                " each training task asks for its threads' cores")
    return (f"Dask: {sum(not count for count in dask_cores)} of {len(dask_cores)} worker(s) lend no cores "
            f"(`dask worker --resources {DASK_CORES}=N`); one thread per training task")


def task_runner_for(config: StudyConfig, parallel: int):
    """Dask when an address is given; else threads, each driving one run's own child process."""
    if config.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=config.dask_address)
    return ThreadPoolTaskRunner(max_workers=parallel)


def study_graph(config: StudyConfig, layout: ArtifactsLayout, engine, today: date,
                flow_run_id: str | None = None) -> tuple[PreparedData, StudyGraph]:
    """The data stage (run now: the runs' ids depend on its content), then the graph of the study's other stages."""
    data = prepare(config.data_config, layout, engine)
    lent = lent_cores(config)
    planned = planned_runs(config, data, layout, lent)
    night = today.isoformat() if config.nightly else None
    return data, StudyGraph(config, layout, data, tuple(planned), engine, night, flow_run_id, lent)


def lent_cores(config: StudyConfig) -> tuple[int, ...]:
    """The cores each worker of the study's Dask cluster lends to training; none off Dask."""
    return dask_worker_cores(config.dask_address) if config.dask_address else ()


def training_threads(config: StudyConfig, planned: list,
                     dask_cores: Sequence[int] = ()) -> dict[planning.LineageName, int]:
    """TensorFlow threads of each lineage of this study on this machine, or on the cores the Dask workers lend
    (a run's key holds them)."""
    lineages = len({run.spec.lineage for run in planned})
    slots = 0 if config.dask_address else len(gpu_slots(visible_gpus(), lineages))
    return planning.share_threads(config, planned, os.cpu_count() or 1, slots, dask_cores)


def planned_runs(config: StudyConfig, data: PreparedData, layout: ArtifactsLayout,
                 dask_cores: Sequence[int] = ()) -> list:
    """The study's runs on this data, with the thread count and numerics environment they train with here."""
    images = split_size(layout.absolute(data.train))
    threads = training_threads(config, planning.plan_runs(config, data.content_hash, images), dask_cores)
    return planning.plan_runs(config, data.content_hash, images, threads, os.environ)


def run_study(config: StudyConfig, layout: ArtifactsLayout, engine: Engine, today: date) -> StudyResult:
    """Data, training grid, evaluation, tables, figures, the nightly gate and the report for one configuration."""
    logger = get_run_logger()
    try:
        data, graph = study_graph(config, layout, engine, today, str(flow_run.get_id()))
    except (DataStageError, DiskFullError) as error:
        return StudyResult(artifacts_dir=layout.root, planned=0, error=f"data preparation failed: {error}")
    except DaskUnreachableError as error:
        return StudyResult(artifacts_dir=layout.root, planned=0, error=f"planning the training failed: {error}")
    for folder in prune_checkpoints(layout, graph.planned):
        logger.info(f"removed the checkpoints {folder.name}: no planned run continues them")

    def summarize(stage: Stage, decisions) -> None:
        raise_if_interrupted()  # an interruption whose exception was lost: no stage begins after it
        if stage.name == "train":
            to_train = sum(decision.action == "recomputed" for decision in decisions)
            if not to_train:
                discard_ahead()  # nothing to train after all: end the training processes started ahead
            logger.info(f"{len(graph.planned)} runs planned, {to_train} to train, "
                        f"{len(graph.planned) - to_train} already done")

    outcomes = engine.run(graph.stages(), {"train": grid_runner(graph)}, before=summarize)
    result = graph.result(outcomes)
    if result.runs:
        stages.publish(layout, engine)
    else:  # nothing to report: the tables and report on disk are an earlier run's, not this one's
        stages.publish_failure(layout, engine, result)
    return result


# Parameters are validated in the flow, not by Prefect's engine: a deployment's bad parameter then fails the
# run with the command line's one-line message instead of pydantic's report (the UI's form is unchanged).
@flow(name="full-study", validate_parameters=False)
def full_study(config: StudyConfig = StudyConfig.model_construct()) -> StudyResult:
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
    engine = study_engine(layout, config.refresh, get_run_logger().info)
    with artifacts_slot(layout.root), artifacts_lock(layout.root):  # wait for other deployments, then lock
        for leftover in remove_stale_temporaries(layout.root):
            get_run_logger().info(f"removed {leftover}, left by a run that was killed")
        try:
            result = run_study(config, layout, engine, today)
        except DiskFullError as error:
            return Failed(message=str(error))
        if config.mlflow_tracking_uri and result.runs:  # inside the lock: the champions cannot change meanwhile
            from mnist_models.mlflow_export import export_runs

            try:
                get_run_logger().info(export_runs(layout.root, config.mlflow_tracking_uri).describe())
            except ValueError as error:  # the extra missing, no server, a bad URI: `mnist-study export` redoes it
                get_run_logger().warning(f"MLflow export failed: {error}")
    problems = stages.failure_message(result)
    return Failed(message=problems) if problems else result


def plan_study(config: StudyConfig, today: date | None = None) -> list[Decision]:
    """Every decision the study would make, reused or recomputed and why, without training or writing anything."""
    config = config.resolved(today or datetime.now(timezone.utc).date())
    layout = ArtifactsLayout.at(config.output_root)
    engine = study_engine(layout, config.refresh, log=lambda line: None)
    decisions, data = plan_data(config.data_config, layout, engine)
    lent = lent_cores(config)
    if data is None:  # the runs' ids follow from the data's content: name them by their settings until then
        planned = planning.plan_runs(config, "", None, training_threads(config, planning.plan_runs(config, ""), lent),
                                     os.environ)
        waiting = [Decision(stage=stage, item=run.run_id.rpartition("-")[0], action="recomputed",
                            reason=f"upstream recomputed ({upstream})")
                   for stage, upstream in (("train", "data"), ("evaluate", "train")) for run in planned]
        study = [Decision(stage=stage, item="study", action="recomputed", reason="upstream recomputed (evaluate)")
                 for stage in ("tables", "figures", "report")]
        return decisions + waiting + study
    planned = planned_runs(config, data, layout, lent)
    night = (today or datetime.now(timezone.utc).date()).isoformat() if config.nightly else None
    graph = StudyGraph(config, layout, data, tuple(planned), engine, night, dask_cores=lent)
    return decisions + engine.plan(graph.stages())


def processes_ahead(config: StudyConfig, today: date | None = None) -> int:
    """How many training processes to start before the Prefect server and the data stage: as many as the grid will
    run at once when training is sure to be needed (no finished run in the artifacts folder yet, or training
    refreshed), else none. Their TensorFlow import then overlaps the server's start and the data stage, which leave
    a core idle (timeline-baseline-0a1f835: 12.3 s of worker start after 13.5 s of start-up, server and data in the
    quick profile). Not on a Dask cluster (its workers start the processes) nor beside GPUs (each GPU slot's process
    is its own)."""
    config = config.resolved(today or datetime.now(timezone.utc).date())
    layout = ArtifactsLayout.at(config.output_root)
    if config.dask_address or visible_gpus():
        return 0
    if "train" not in config.refresh and any(layout.runs_dir.glob("*/manifest.json")):
        return 0  # some runs may be reused: the plan, after the data stage, decides
    lineages = len({run.spec.lineage for run in planning.plan_runs(config, "")})
    return parallel_runs(config, lineages, machine_capacity(layout))


def plan_text(decisions: list[Decision]) -> str:
    """The plan as the run would log it, one line per decision, then what it adds up to per stage."""
    lines = [f"{decision.stage} {decision.item}: {decision.action} ({decision.reason})" for decision in decisions]
    counts: dict[str, list[int]] = {}
    for decision in decisions:
        counts.setdefault(decision.stage, [0, 0])[decision.action == "recomputed"] += 1
    lines.append("\n" + ", ".join(f"{stage}: {reused} reused, {recomputed} to compute"
                                   for stage, (reused, recomputed) in counts.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> StudyResult | None:
    """Command line: check the options before any work, run the flow, print where the results are.

    With --plan: print what the run would reuse and recompute, and why, and stop (nothing is written).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--plan" in argv:
        argv.remove("--plan")
        print(plan_text(plan_study(parse_config(StudyConfig, __doc__.split("\n\n")[0], argv, check_machine=False))))
        return None
    config = parse_config(StudyConfig, __doc__.split("\n\n")[0], argv)
    started = start_ahead(processes_ahead(config))
    if started:
        from prefect.logging import get_logger

        get_logger().info(f"started {len(started)} training process(es) ahead, in process(es) "
                          f"{', '.join(map(str, started))}: no run is finished here yet, so training is sure to be "
                          "needed; they import TensorFlow while the server starts and the data are prepared")
    try:
        result = run_flow(full_study, config)
    finally:
        discard_ahead()  # those the study did not take over (it failed before its grid, say)
    print(stages.summary_text(result), file=sys.stdout)
    return result


if __name__ == "__main__":
    run_cli(main)
