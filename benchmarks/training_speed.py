"""Benchmark: the full-study flow against plain baselines, each run as a subprocess in the same run.

(a) Training: `python flows/full_study.py --refresh --artifacts-dir <fresh temporary dir> ...`
    against benchmarks/plain_keras_study.py doing the same runs one after the other (same Parquet,
    subset, seed, batch 32, validation on the test split every epoch, default TF threading).
    Headline: pipeline wall time / plain-script wall time, target <= 0.7. The pipeline's wall time
    includes all of its own overheads (temporary Prefect server, data stage, worker processes,
    per-epoch callbacks, evaluation, tables, figures, report); the plain script does none of that.
    The pipeline's stage times are also extracted from its log and its run manifests.
(b) Cached rerun: the same flow command without --refresh (every stage Cached) against
    benchmarks/trivial_flow.py (one trivial task). Headline: median / median, target <= 1.5.

Run:   python benchmarks/training_speed.py [--models dnn,convnet,resnet] [--learning-rates 0.1,0.01,0.001,0.0001]
           [--epochs 10] [--gradient-epochs 20] [--train-subset N] [--repeats 3] [--keep-temp]
       short run, about 5 min on 2 cores:
           python benchmarks/training_speed.py --models dnn,convnet,resnet --learning-rates 0.01,0.001
               --epochs 1 --gradient-epochs 0 --train-subset 10000
Time:  the defaults are the full study (3 models x 4 learning rates x 10 epochs, the 20-epoch gradient
       pair, all 60,000 images), run twice (plain script, then the flow): well over an hour on 2 cores
       (NOTES.md: the 12-run grid alone took 36 min one run after the other).
Settings: --gradient-epochs 0 drops the gradient pair (flow: --gradient-models '').
Environment of every subprocess: MNIST_MIRROR (default ../shared/datasets/mnist),
       PREFECT_SERVER_ANALYTICS_ENABLED=false, TF_CPP_MIN_LOG_LEVEL=3, and one fresh PREFECT_HOME in a
       temporary folder shared by every run of the benchmark. A first, untimed-for-the-ratio trivial
       flow creates its database, so every timed run pays the same server start.
Makes: benchmarks/results/training_speed.{json,md} and each subprocess's log in benchmarks/results/logs/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import _common

from flows._runtime import comma_separated

TRAINING_TARGET = 0.5  # pipeline wall / plain-script wall (issue: half a plain script's time)
CACHE_SUMMARY = re.compile(r"cache: (\d+) reused, (\d+) recomputed")
CACHED_TARGET = 1.2  # cached rerun / trivial flow
SOURCE_FOLDERS = ("mnist_models", "tasks", "flows")
LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) \| (\w+)\s*\| (.*)$")
FLOW_BEGIN = re.compile(r"Flow run '([^']+)' - Beginning (?:sub)?flow run '[^']+' for flow '([^']+)'")
FLOW_END = re.compile(r"Flow run '([^']+)' - Finished in state (\w+)")
TRAIN_TASK = re.compile(r"Task run 'train [^']*' - ")
TASK_END = re.compile(r"Task run '([^']+)' - Finished in state (\w+)")


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", type=comma_separated(str), default=["dnn", "convnet", "resnet"])
    parser.add_argument("--learning-rates", type=comma_separated(float), default=[0.1, 0.01, 0.001, 0.0001])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per sweep run (default 10)")
    parser.add_argument("--gradient-epochs", type=int, default=20,
                        help="epochs of the resnet_plain/resnet gradient pair: 20 (default), 2, or 0 = none")
    parser.add_argument("--train-subset", type=int, help="train on a stratified subset (default: all 60,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed cached reruns and trivial flows (default 3)")
    parser.add_argument("--data-artifacts-dir", type=Path, default=_common.REPO_ROOT / "artifacts",
                        help="artifacts root whose data/mnist/*.parquet the plain script loads (made if missing)")
    parser.add_argument("--results-dir", type=Path, default=_common.RESULTS_DIR)
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary PREFECT_HOME and artifacts")
    options = parser.parse_args(argv)
    if options.epochs < 1 or options.repeats < 1 or (options.train_subset is not None and options.train_subset < 1):
        parser.error("--epochs, --repeats and --train-subset must be at least 1")
    return options


def flow_command(options: argparse.Namespace, artifacts_dir: Path, refresh: bool) -> list[str]:
    """The full-study command line with the benchmark's settings."""
    command = [sys.executable, str(_common.REPO_ROOT / "flows" / "full_study.py"), "--artifacts-dir", str(artifacts_dir),
               "--models", ",".join(options.models),
               "--learning-rates", ",".join(f"{rate:g}" for rate in options.learning_rates),
               "--epochs", str(options.epochs)]
    if options.gradient_epochs:
        command += ["--gradient-models", "resnet_plain,resnet", "--gradient-epochs", str(options.gradient_epochs)]
    else:
        command += ["--gradient-models", ""]
    if options.train_subset:
        command += ["--train-subset", str(options.train_subset)]
    return command + (["--refresh"] if refresh else [])


def plain_command(options: argparse.Namespace, data_dir: Path) -> list[str]:
    """The plain sequential Keras script with the same settings."""
    command = [sys.executable, str(_common.REPO_ROOT / "benchmarks" / "plain_keras_study.py"), "--data-dir", str(data_dir),
               "--models", ",".join(options.models),
               "--learning-rates", ",".join(f"{rate:g}" for rate in options.learning_rates),
               "--epochs", str(options.epochs), "--gradient-epochs", str(options.gradient_epochs)]
    return command + (["--train-subset", str(options.train_subset)] if options.train_subset else [])


def _busy_cpu_seconds() -> float:
    """Machine-wide busy CPU seconds so far (all processes, from /proc/stat)."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / 100.0  # USER_HZ is 100 on Linux


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _source_fingerprint() -> str:
    """Hash of the project's source files' names, sizes and modification times.

    The flow's cache keys hash its code, so an edit made while the benchmark runs (another session
    working in the same tree) makes a "cached" rerun recompute; such a rerun is flagged and not counted.
    """
    digest = hashlib.sha256()
    for folder in SOURCE_FOLDERS:
        for path in sorted((_common.REPO_ROOT / folder).rglob("*.py")):
            status = path.stat()
            digest.update(f"{path}:{status.st_size}:{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def run_timed(name: str, command: list[str], environment: dict[str, str], log_dir: Path) -> dict:
    """Run one subprocess to completion; its wall time, CPU time, the machine's other load, and its log."""
    log_path = log_dir / f"{name}.log"
    source_before = _source_fingerprint()
    load_before, busy_before, own_before = _common.load_average(), _busy_cpu_seconds(), _children_cpu_seconds()
    print(f"  {name}: running ...", end="", flush=True)
    clock_started = _seconds_since_midnight()
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=_common.REPO_ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - started
    clock_ended = _seconds_since_midnight()
    own_cpu = _children_cpu_seconds() - own_before
    log_path.write_text(completed.stdout)
    print(f" {wall:.1f} s", flush=True)
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed (exit status {completed.returncode}); see {log_path}\n"
                         f"{completed.stdout[-3000:]}")
    return {
        "name": name, "command": command, "wall_s": round(wall, 3), "cpu_s": round(own_cpu, 1),
        # CPU time other processes used meanwhile (tests, other jobs): contention behind a slow number.
        "other_processes_cpu_s": round(_busy_cpu_seconds() - busy_before - own_cpu, 1),
        "load_average_before": load_before, "load_average_after": _common.load_average(),
        "source_changed_during_run": _source_fingerprint() != source_before,
        "log": str(log_path), "output": completed.stdout, "clock": (clock_started, clock_ended),
    }


def _seconds_since_midnight() -> float:
    """Local time of day in seconds: the clock Prefect's console log lines are stamped with."""
    now = datetime.now()
    return now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6


def _log_events(output: str, clock_started: float) -> list[tuple[float, str]]:
    """(seconds since midnight, message) for each Prefect console log line; a midnight wrap is unrolled."""
    events, offset, last = [], 0.0, clock_started
    for line in output.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        hours, minutes, seconds, millis = (int(part) for part in match.groups()[:4])
        stamp = hours * 3600 + minutes * 60 + seconds + millis / 1000 + offset
        if stamp < last - 3600:
            offset += 86400
            stamp += 86400
        last = stamp
        events.append((stamp, match.group(6)))
    return events


def pipeline_stages(record: dict) -> dict:
    """Stage durations of one flow run, from its log: start-up, server, each (sub)flow, training, shut-down."""
    clock_started, clock_ended = record["clock"]
    if clock_ended < clock_started:
        clock_ended += 86400
    events = _log_events(record["output"], clock_started)
    stages: dict = {}
    starts: dict[str, tuple[str, float]] = {}
    for stamp, message in events:
        if begin := FLOW_BEGIN.search(message):
            starts[begin.group(1)] = (begin.group(2), stamp)
        elif (end := FLOW_END.search(message)) and end.group(1) in starts:
            flow_name, began = starts[end.group(1)]
            stages[f"flow {flow_name}"] = round(stamp - began, 1)
    server = [stamp for stamp, message in events if "Starting temporary server" in message]
    first_flow = [stamp for stamp, message in events if FLOW_BEGIN.search(message)]
    if server:
        stages["process start -> server start (imports, option checks)"] = round(server[0] - clock_started, 1)
    if server and first_flow:
        stages["temporary server start"] = round(first_flow[0] - server[0], 1)
    flow_ends = [stamp for stamp, message in events if FLOW_END.search(message)]
    if flow_ends:
        stages["flow end -> process exit (log drain, server stop, summary)"] = round(clock_ended - flow_ends[-1], 1)
    training = [stamp for stamp, message in events if TRAIN_TASK.search(message)]
    if training:
        stages["training tasks (first train log -> last train task finished)"] = round(training[-1] - training[0], 1)
    states: dict[str, dict[str, int]] = {}
    for _, message in events:
        if finished := TASK_END.search(message):
            task = re.sub(r"-[0-9a-f]{3}$", "", finished.group(1)).split(" ")[0]
            state = finished.group(2)
            states.setdefault(task, {})
            states[task][state] = states[task].get(state, 0) + 1
    stages["task states"] = states
    decisions = [CACHE_SUMMARY.search(message) for _, message in events]
    stages["cache decisions"] = [match.group(0) for match in decisions if match]
    first = [name for name in stages if name.startswith(("process start", "temporary server"))]
    return {name: stages[name] for name in [*first, *(name for name in stages if name not in first)]}


def fully_cached(stages: dict) -> bool:
    """True when the flow's cache decisions say every stage was reused (`cache: N reused, 0 recomputed`)."""
    return bool(stages["cache decisions"]) and all(CACHE_SUMMARY.search(line).group(2) == "0"
                                                    for line in stages["cache decisions"])


def pipeline_runs(artifacts_dir: Path) -> list[dict]:
    """Each trained run's settings, Keras validation accuracy and training wall time, from its manifest."""
    runs = []
    for manifest_path in sorted((artifacts_dir / "runs").glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        parameters = manifest["parameters"]
        runs.append({"model": parameters["model"], "learning_rate": parameters["learning_rate"],
                     "epochs": parameters["epochs"], "val_accuracy": manifest["final_metrics"]["val_accuracy"],
                     "accuracy": manifest["final_metrics"]["accuracy"], "wall_seconds": manifest["wall_seconds"],
                     "threads": manifest.get("threads"), "lineage": manifest.get("lineage")})
    return runs


def lane_seconds(runs: list[dict]) -> float:
    """The training processes' seconds: each lineage's longest run (its shorter runs are written on the way and
    their wall_seconds are part of the longer one's)."""
    longest: dict[str, float] = {}
    for index, run in enumerate(runs):
        lineage = run.get("lineage") or str(index)
        longest[lineage] = max(longest.get(lineage, 0.0), run["wall_seconds"])
    return sum(longest.values())


def _plain_result(output: str) -> dict:
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit("the plain script printed no JSON result")


def _strip_output(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in ("output", "clock")}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)
    machine = _common.machine_facts()
    log_dir = options.results_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix="training-speed-"))
    prefect_home, artifacts_dir = temporary / "prefect-home", temporary / "artifacts"
    prefect_home.mkdir()
    environment = _common.subprocess_environment(prefect_home)
    data_dir = _common.ensure_parquet(options.data_artifacts_dir.resolve(), _common.subprocess_environment()).parent
    trivial = [sys.executable, str(_common.REPO_ROOT / "benchmarks" / "trivial_flow.py")]
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(options).items()}
    print(f"training_speed: settings {json.dumps(settings)}\n  temporary folder {temporary}")

    try:
        warm_up = run_timed("trivial_flow_first", trivial, environment, log_dir)  # creates the Prefect database
        plain = run_timed("plain_keras_study", plain_command(options, data_dir), environment, log_dir)
        pipeline = run_timed("pipeline_refresh", flow_command(options, artifacts_dir, refresh=True), environment, log_dir)
        cached_runs, trivial_runs = [], []
        for repeat in range(1, options.repeats + 1):
            cached_runs.append(run_timed(f"pipeline_cached_{repeat}", flow_command(options, artifacts_dir, refresh=False),
                                         environment, log_dir))
            trivial_runs.append(run_timed(f"trivial_flow_{repeat}", trivial, environment, log_dir))
        runs = pipeline_runs(artifacts_dir)
    finally:
        if not options.keep_temp:
            shutil.rmtree(temporary, ignore_errors=True)

    plain_result = _plain_result(plain["output"])
    stages = pipeline_stages(pipeline)
    cached_stages = [pipeline_stages(run) for run in cached_runs]
    cached_states = [stage["task states"] for stage in cached_stages]
    all_cached = all(fully_cached(stage) for stage in cached_stages)
    training_ratio = pipeline["wall_s"] / plain["wall_s"]
    for run, stage in zip(cached_runs, cached_stages):
        run["fully_cached"] = fully_cached(stage)
    valid_cached = [run for run in cached_runs if run["fully_cached"] and not run["source_changed_during_run"]]
    excluded = [run["name"] for run in cached_runs if run not in valid_cached]
    trivial_median = statistics.median(run["wall_s"] for run in trivial_runs)
    if valid_cached:
        cached_median = statistics.median(run["wall_s"] for run in valid_cached)
        cached_ratio = cached_median / trivial_median
        cached_verdict = "PASS" if cached_ratio <= CACHED_TARGET else "FAIL"
    else:
        cached_median = cached_ratio = float("nan")
        cached_verdict = "INVALID (no rerun was fully cached)"

    pipeline_by_key = {(run["model"], run["learning_rate"], run["epochs"]): run for run in runs}
    accuracy_rows = []
    for run in plain_result["runs"]:
        match = pipeline_by_key.get((run["model"], run["learning_rate"], run["epochs"]))
        accuracy_rows.append({
            "model": run["model"], "learning_rate": run["learning_rate"], "epochs": run["epochs"], "role": run["role"],
            "plain_val_accuracy": run["val_accuracy"], "pipeline_val_accuracy": match and match["val_accuracy"],
            "plain_run_s": run["seconds"], "pipeline_run_s": match and match["wall_seconds"],
        })
    machine["load_average_at_end"] = _common.load_average()
    other_cpu = {record["name"]: record["other_processes_cpu_s"]
                 for record in [warm_up, plain, pipeline, *cached_runs, *trivial_runs]}

    timing_table = _common.markdown_table(
        ["measurement", "wall s", "own CPU s", "other processes' CPU s", "load avg before -> after", "note"],
        [[record["name"], f"{record['wall_s']:.1f}", f"{record['cpu_s']:.1f}", f"{record['other_processes_cpu_s']:.1f}",
          f"{record['load_average_before'][0]:.2f} -> {record['load_average_after'][0]:.2f}",
          "; ".join(note for note, flagged in (("source edited meanwhile", record["source_changed_during_run"]),
                                                ("recomputed tasks: not counted", record.get("fully_cached") is False))
                    if flagged)]
         for record in [warm_up, plain, pipeline, *cached_runs, *trivial_runs]])
    ratio_table = _common.markdown_table(
        ["comparison", "pipeline s", "baseline s", "ratio", "target", "verdict"],
        [["(a) full study --refresh vs plain Keras script", f"{pipeline['wall_s']:.1f}", f"{plain['wall_s']:.1f}",
          f"{training_ratio:.2f}", f"<= {TRAINING_TARGET}", "PASS" if training_ratio <= TRAINING_TARGET else "FAIL"],
         [f"(b) cached rerun vs trivial one-task flow (medians of {len(valid_cached)} and {len(trivial_runs)})",
          f"{cached_median:.1f}", f"{trivial_median:.1f}", f"{cached_ratio:.2f}", f"<= {CACHED_TARGET}", cached_verdict]])
    accuracy_table = _common.markdown_table(
        ["model", "learning rate", "epochs", "role", "plain val acc", "pipeline val acc", "plain run s", "pipeline run s"],
        [[row["model"], f"{row['learning_rate']:g}", row["epochs"], row["role"], _fmt(row["plain_val_accuracy"]),
          _fmt(row["pipeline_val_accuracy"]), _fmt(row["plain_run_s"], 1), _fmt(row["pipeline_run_s"], 1)]
         for row in accuracy_rows])
    stage_table = _common.markdown_table(
        ["pipeline stage (from its log)", "--refresh s", "cached rerun 1 s"],
        [[name, seconds, cached_stages[0].get(name, "-")] for name, seconds in stages.items() if name != "task states"]
        + [["plain script: training loop only (its own clock)", plain_result["training_seconds"], "-"],
           ["pipeline: lane-seconds, each lineage's longest run's wall_seconds (lineages overlap in parallel)",
            round(lane_seconds(runs), 1), "-"]])

    print("\n" + ratio_table + "\n\n" + timing_table + "\n\n" + stage_table + "\n\n" + accuracy_table)
    print(f"\ncached reruns fully Cached: {all_cached} (task states {cached_states})")
    if excluded:
        print(f"NOT COUNTED in (b): {excluded} recomputed some task or ran while the source changed "
              "(flows' cache keys hash the code: someone edited it during the benchmark)")
    print(f"machine: {machine['nproc']} cores, {machine['cpu_model']}; CPU seconds used by other processes "
          f"during each measurement: {other_cpu}")

    payload = {
        "benchmark": "training_speed", "settings": settings, "machine": machine,
        "commands": {"plain": plain["command"], "pipeline_refresh": pipeline["command"],
                     "pipeline_cached": cached_runs[0]["command"], "trivial_flow": trivial},
        "targets": {"training_ratio_at_most": TRAINING_TARGET, "cached_ratio_at_most": CACHED_TARGET},
        "training": {"pipeline_wall_s": pipeline["wall_s"], "plain_wall_s": plain["wall_s"],
                     "ratio": round(training_ratio, 3), "passed": training_ratio <= TRAINING_TARGET,
                     "plain_training_loop_s": plain_result["training_seconds"], "pipeline_stages_s": stages,
                     "accuracies": accuracy_rows},
        "cached": {"pipeline_cached_wall_s": [run["wall_s"] for run in cached_runs],
                   "trivial_flow_wall_s": [run["wall_s"] for run in trivial_runs],
                   "trivial_flow_first_run_wall_s": warm_up["wall_s"],
                   "pipeline_cached_median_s": cached_median, "trivial_flow_median_s": trivial_median,
                   "ratio": round(cached_ratio, 3), "passed": cached_verdict == "PASS",
                   "counted_reruns": [run["name"] for run in valid_cached],
                   "excluded_reruns (recomputed a task or the source changed meanwhile)": excluded,
                   "fully_cached": all_cached, "cached_rerun_stages_s": cached_stages},
        "measurements": [_strip_output(record) for record in [warm_up, plain, pipeline, *cached_runs, *trivial_runs]],
    }
    json_path = _common.write_json(options.results_dir / "training_speed.json", payload)
    markdown_path = options.results_dir / "training_speed.md"
    markdown_path.write_text(_markdown(payload, ratio_table, timing_table, stage_table, accuracy_table, all_cached))
    print(f"wrote {json_path}\nwrote {markdown_path}")


def _markdown(payload: dict, ratio_table: str, timing_table: str, stage_table: str, accuracy_table: str,
              all_cached: bool) -> str:
    machine, settings = payload["machine"], payload["settings"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    gradient = (f"resnet_plain and resnet, {settings['gradient_epochs']} epochs at LR 0.001"
                if settings["gradient_epochs"] else "off")
    busiest = max(payload["measurements"], key=lambda record: record["other_processes_cpu_s"])
    commands = "\n".join(f"    {name}: {subprocess.list2cmdline(command)}" for name, command in payload["commands"].items())
    return f"""# Training-speed benchmark

Date {machine['date']}; machine: {machine['nproc']} cores (nproc), {machine['cpu_model']},
{machine['memory_gib']} GiB; Python {machine['python']}; {versions}.

Settings: models {','.join(settings['models'])}; learning rates {','.join(f'{rate:g}' for rate in settings['learning_rates'])};
{settings['epochs']} epoch(s) per sweep run; gradient pair: {gradient}; training images: {settings['train_subset'] or 'all 60,000'};
batch 32, seed 42, validation on the 10,000 test images after every epoch; {settings['repeats']} cached rerun(s) and
trivial flow(s), alternating. Temporary folders (PREFECT_HOME, the pipeline's artifacts) are deleted afterwards.
Every subprocess: MNIST_MIRROR, PREFECT_SERVER_ANALYTICS_ENABLED=false, TF_CPP_MIN_LOG_LEVEL=3, one fresh
PREFECT_HOME shared by all runs (its database made by the first, separate trivial flow).

Commands:

{commands}

## Verdicts

{ratio_table}

The pipeline's wall time includes its own overheads (temporary Prefect server, data stage, worker
processes, per-epoch recorder and TensorBoard callbacks, evaluation, tables, figures, report); the plain
script does only Keras's fit with validation. Cached reruns fully Cached: {all_cached}. A cached rerun
counts towards (b) only if its cache decisions say it recomputed nothing (`cache: N reused, 0 recomputed`) and the
project's source did not change while it ran (the cache keys hash the code).

## Every measurement

{timing_table}

"other processes' CPU s" is the machine's busy CPU time during the measurement minus the benchmarked
process tree's own: other work on the machine (e.g. a test suite) competed for the 2 cores when it is
large. Busiest: {busiest['name']} with {busiest['other_processes_cpu_s']} CPU s of other processes in
{busiest['wall_s']} s wall.

## Pipeline stages

{stage_table}

## Accuracies (Keras validation accuracy on the test split after the last epoch)

{accuracy_table}
"""


if __name__ == "__main__":
    main()
