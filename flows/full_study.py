"""The whole MNIST study: data -> training grid -> evaluation -> tables -> figures -> report.

Run:   python flows/full_study.py                       (profile `full`: the study's own settings)
       python flows/full_study.py --profile quick --artifacts-dir /tmp/quick
       options: --models dnn,convnet --learning-rates 0.01,0.001 --epochs N --seed N --workers N
                --refresh --dask-address tcp://host:8786 --dataset fashion-mnist --mirror DIR_OR_URL
Time:  quick profile about 1 min on 2 cores; full profile about 30 min (measured 28 min 48 s)
       (12-run learning-rate grid + the 20-epoch gradient pair); a finished study reruns in seconds.
Reach: full profile at LR 0.001 after 10 epochs: dnn ~0.96, convnet ~0.99, resnet ~0.99 test accuracy;
       LR 0.1 diverges (~0.1) as in the study's table 5.1.
Makes: artifacts/{data,runs,tables,figures,report}/ as described in artifacts/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows._runtime import StudyFailedError, prefect_api, quiet_defaults, resolve_mirrors, run_cli
from flows.prepare_data import prepare_data
from mnist_models.config import StudyConfig, artifacts_paths
from mnist_models.download import normalize_mirror
from mnist_models import nightly as nightly_lib
from mnist_models.io import ensure_writable_directory
from mnist_models.locking import artifacts_lock
from mnist_models.tables import TABLE_FORMATS, to_markdown
from mnist_models.training import RunSpec, read_manifest
from tasks.caching import cache_storage, with_cache
from tasks.evaluation import evaluate_model
from tasks.nightly import record_history, update_champions
from tasks.reporting import (
    STUDY_TABLES,
    expected_figures,
    file_hashes,
    render_figures,
    render_report,
    write_study_tables,
)
from tasks.training import train_model


def plan_runs(config: StudyConfig, data_hash: str) -> list[tuple[str, RunSpec]]:
    """The study's runs: the model x learning-rate sweep, then the gradient-vanishing pair."""

    def spec(model: str, learning_rate: float, epochs: int) -> RunSpec:
        return RunSpec.create(model, learning_rate, epochs, config.batch_size, config.seed,
                              config.train_subset, config.dataset, data_hash)

    planned = [("sweep", spec(model, rate, config.epochs)) for model in config.models for rate in config.learning_rates]
    planned += [("gradient", spec(model, config.gradient_learning_rate, config.gradient_epochs))
                for model in config.gradient_models]
    unique: dict[str, tuple[str, RunSpec]] = {}
    for role, run in planned:
        unique.setdefault(run.run_id, (role, run))
    return list(unique.values())


# Seconds per training epoch on 2 cores (NOTES.md): dnn 4.3, convnet 13.3, resnet 43.
EPOCH_COST = {"dnn": 4.3, "convnet": 13.3, "resnet": 43.0, "resnet_plain": 43.0}


def longest_first(planned: list[tuple[str, RunSpec]]) -> list[tuple[str, RunSpec]]:
    """Runs in decreasing expected cost, so the long ones do not start last and leave cores idle."""
    return sorted(planned, key=lambda item: -EPOCH_COST.get(item[1].model, 1.0) * item[1].epochs)


def task_runner_for(config: StudyConfig, runs_to_train: int):
    """Dask when an address is given; else a process pool sized to the work, or threads if none."""
    if config.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=config.dask_address)
    workers = min(config.resolved_workers, runs_to_train)
    if workers <= 1:
        # Nothing to train, or one run at a time: no worker processes to start.
        return ThreadPoolTaskRunner(max_workers=max(1, workers))
    return ProcessPoolTaskRunner(max_workers=workers)


def threads_per_worker(config: StudyConfig, runs_to_train: int) -> int | None:
    """TensorFlow threads per parallel run: the cores shared among the runs that train at once."""
    if config.dask_address:
        return None  # the cluster's workers decide
    workers = min(config.resolved_workers, max(1, runs_to_train))
    return max(1, (os.cpu_count() or 1) // workers)


@flow(name="train-grid")
def train_grid(
    config: StudyConfig, planned: list[tuple[str, RunSpec]], needs_training: dict[str, bool], data: dict
) -> tuple[list[dict], list[str]]:
    """Train and evaluate every planned run in parallel; a failed run is reported, not fatal to the others."""
    logger = get_run_logger()
    paths = artifacts_paths(config.artifacts_dir)
    storage = cache_storage(config.artifacts_dir)
    threads = threads_per_worker(config, sum(needs_training.values()))
    roles = {spec.run_id: role for role, spec in planned}
    training = {
        with_cache(train_model, storage, refresh=needs_training[spec.run_id]).submit(
            spec, data["train"], data["test"], str(paths["runs"]), threads
        ): spec
        for _, spec in longest_first(planned)
    }
    evaluations, failures = [], []
    for done, future in enumerate(as_completed(list(training)), start=1):
        spec = training[future]
        try:
            record = future.result()
        except Exception as error:  # noqa: BLE001 - one crashed run must not lose the others
            failures.append(f"{spec.run_id}: {type(error).__name__}: {error}")
        else:
            refresh = needs_training[spec.run_id] or not (Path(record["run_dir"]) / "predictions.parquet").exists()
            evaluations.append((spec, with_cache(evaluate_model, storage, refresh=refresh).submit(
                record, data["test"], data["content_hash"], roles[spec.run_id])))
        logger.info(f"{done} of {len(training)} runs done" + (f" ({len(failures)} failed)" if failures else ""))
    results = []
    for spec, future in evaluations:
        try:
            results.append(future.result())
        except Exception as error:  # noqa: BLE001
            failures.append(f"{spec.run_id} (evaluation): {type(error).__name__}: {error}")
    order = list(dict.fromkeys([*config.models, *config.gradient_models]))  # the study's order: dnn, convnet, resnet
    results.sort(key=lambda run: (run["role"] != "sweep", order.index(run["model"]), -run["learning_rate"]))
    return results, failures


@flow(name="full-study")
def full_study(
    profile: str = "full",
    artifacts_dir: str = "artifacts",
    models: list[str] | None = None,
    learning_rates: list[float] | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    refresh: bool = False,
    dask_address: str | None = None,
    dataset: str = "mnist",
    mirrors: list[str] | None = None,
    train_subset: int | None = None,
    gradient_models: list[str] | None = None,
    gradient_epochs: int | None = None,
    nightly: bool = False,
    regression_tolerance: float = 0.005,
) -> dict:
    """Run the study end to end; every stage whose inputs and outputs are unchanged is Cached.

    With `nightly`, the seed comes from today's date (UTC), tonight's accuracies are appended to
    the history, each model's champion is kept or replaced, and a regression fails the run.
    """
    today = datetime.now(timezone.utc).date()
    if nightly and seed is None:
        seed = nightly_lib.nightly_seed(today)
    config = StudyConfig.for_profile(
        # Absolute, so that worker processes and Dask workers write where this run reads.
        profile, artifacts_dir=Path(artifacts_dir).resolve(), models=models, learning_rates=learning_rates, epochs=epochs,
        seed=seed, workers=workers, refresh=refresh, dask_address=dask_address, dataset=dataset,
        mirrors=mirrors, train_subset=train_subset, gradient_models=gradient_models,
        gradient_epochs=gradient_epochs, nightly=nightly,
        regression_tolerance=regression_tolerance,
    )
    paths = artifacts_paths(ensure_writable_directory(config.artifacts_dir))
    with artifacts_lock(paths["root"]):
        result = _run_study(config, paths)
        if config.nightly and result["runs"]:
            _nightly(config, paths, result, today)
    if result.get("error"):
        return Failed(message=result["error"])
    if result["failures"]:
        return Failed(message=(
            f"{len(result['failures'])} of {result['planned']} runs failed (the others are saved and reported; "
            "rerun to retrain only the failed ones):\n  " + "\n  ".join(result["failures"])
        ))
    if result.get("regressions"):
        return Failed(message="nightly regression gate failed; champions kept:\n  " + "\n  ".join(result["regressions"]))
    return result


def _nightly(config: StudyConfig, paths: dict[str, Path], result: dict, today) -> None:
    """History, champions and the regression gate of a nightly run."""
    record_history(result["runs"], str(paths["tables"]), str(paths["figures"]), today.isoformat(),
                   str(flow_run.get_id()))
    decisions = update_champions(result["runs"], str(paths["models"] / "champion"), config.regression_tolerance)
    result["champions"] = decisions
    result["regressions"] = [decision["message"] for decision in decisions if decision["regressed"]]


def _run_study(config: StudyConfig, paths: dict[str, Path]) -> dict:
    """Data, training grid, tables, figures and report for one validated configuration."""
    logger = get_run_logger()
    data_state = prepare_data(dataset=config.dataset, artifacts_dir=str(paths["root"]),
                              mirrors=list(config.mirrors) if config.mirrors else None, refresh=config.refresh,
                              return_state=True)
    if not data_state.is_completed():
        return {"artifacts_dir": str(paths["root"]), "runs": [], "failures": [], "planned": 0,
                "error": f"data preparation failed: {data_state.message}"}
    data = data_state.result()
    planned = plan_runs(config, data["content_hash"])
    # A run folder without a complete manifest is never trusted: its run trains again.
    needs_training = {spec.run_id: config.refresh or read_manifest(paths["runs"] / spec.run_id) is None
                      for _, spec in planned}
    pending = sum(needs_training.values())
    logger.info(f"{len(planned)} runs planned, {pending} to train, {len(planned) - pending} already done")
    runner = task_runner_for(config, pending)
    evaluations, failures = train_grid.with_options(task_runner=runner)(config, planned, needs_training, data)

    result: dict = {"artifacts_dir": str(paths["root"]), "runs": evaluations, "failures": failures,
                    "planned": len(planned)}
    if evaluations:
        storage = cache_storage(paths["root"])
        model_names = sorted({run["model"] for run in evaluations}, key=list(config.models + config.gradient_models).index)
        table_outputs = [paths["tables"] / f"{name}.{fmt}" for name in STUDY_TABLES for fmt in TABLE_FORMATS]
        table_paths = with_cache(write_study_tables, storage, table_outputs, config.refresh)(
            evaluations, model_names, str(paths["tables"]))
        figure_outputs = [paths["figures"] / f"{name}.png" for name in expected_figures(evaluations)]
        figure_paths = with_cache(render_figures, storage, figure_outputs, config.refresh)(
            evaluations, table_paths, str(paths["figures"]))
        figure_paths = {"first_25_images": data["first_25_images"], **figure_paths}
        table_paths = {"dataset_facts": data["dataset_facts"], **table_paths}
        settings = config.model_dump(mode="json", exclude={"artifacts_dir", "refresh", "workers", "dask_address"})
        report_paths = with_cache(render_report, storage, [paths["report"] / "report.html"], config.refresh)(
            table_paths, figure_paths, file_hashes({**table_paths, **figure_paths}), settings, str(paths["report"]))
        result.update(tables=table_paths, figures=figure_paths, report=report_paths)
    return result


def comma_separated(kind):
    """argparse type: a comma-separated list of `kind` values ('' gives an empty list)."""

    def parse(text: str):
        try:
            return [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}s, got {text!r}")
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option maps onto a StudyConfig field."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="full", choices=["full", "quick"],
                        help="full = the study (default); quick = every stage on a 2,000-image slice")
    parser.add_argument("--artifacts-dir", default="artifacts", help="root of every output (default: artifacts)")
    parser.add_argument("--models", type=comma_separated(str), help="comma-separated: dnn,convnet,resnet (default: the profile's)")
    parser.add_argument("--learning-rates", type=comma_separated(float), help="comma-separated, e.g. 0.01,0.001")
    parser.add_argument("--epochs", type=int, help="epochs per sweep run (default: the profile's)")
    parser.add_argument("--seed", type=int, help="random seed of every run (default 42)")
    parser.add_argument("--workers", type=int, help="parallel training processes (default: one per core)")
    parser.add_argument("--refresh", action="store_true", help="ignore every cache and recompute everything")
    parser.add_argument("--dask-address", help="run training on an existing Dask cluster, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--dataset", default="mnist", help="mnist (default) or fashion-mnist")
    parser.add_argument("--mirror", action="append", dest="mirrors", metavar="URL_OR_DIR",
                        help="where to download the IDX files from (default: $MNIST_MIRROR, else public mirrors)")
    parser.add_argument("--train-subset", type=int, help="train on a stratified subset of this many images")
    parser.add_argument("--gradient-models", type=comma_separated(str),
                        help="models of the gradient experiment (default resnet_plain,resnet; '' for none)")
    parser.add_argument("--gradient-epochs", type=int, help="epochs of the gradient experiment (default: the profile's)")
    parser.add_argument("--nightly", action="store_true",
                        help="nightly retraining: date seed, history, champions and the regression gate")
    parser.add_argument("--regression-tolerance", type=float, default=0.005,
                        help="nightly: fail if a model's accuracy drops more than this below its champion")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Command line: check the options before any work, run the flow, print where the results are."""
    options = vars(build_parser().parse_args(argv))
    quiet_defaults()
    profile = options.pop("profile")
    StudyConfig.for_profile(profile, **{**options, "artifacts_dir": Path(options["artifacts_dir"])})
    for mirror in resolve_mirrors(options["dataset"], options["mirrors"]):
        normalize_mirror(mirror)
    ensure_writable_directory(options["artifacts_dir"])
    options["artifacts_dir"] = str(Path(options["artifacts_dir"]).resolve())
    with prefect_api():
        state = full_study(profile=profile, **options, return_state=True)
        if not state.is_completed():
            raise StudyFailedError(state.message or f"the study ended {state.name}")
        result = state.result()
    print_summary(result)
    return result


def print_summary(result: dict) -> None:
    """Where the outputs are, and one line per run."""
    import pandas as pd

    report = result.get("report", {})
    print(f"\nReport:  {report.get('html', '-')}\n         {report.get('markdown', '-')}")
    print(f"Tables:  {Path(result['artifacts_dir']) / 'tables'}\nFigures: {Path(result['artifacts_dir']) / 'figures'}")
    if result["runs"]:
        columns = ["model", "learning_rate", "epochs", "accuracy", "accuracy_low", "accuracy_high", "map", "role"]
        print("\n" + to_markdown(pd.DataFrame(result["runs"])[columns]), file=sys.stdout)


if __name__ == "__main__":
    run_cli(main)
