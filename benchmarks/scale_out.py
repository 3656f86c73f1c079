"""How the study scales past one machine: measured on a real Dask cluster, then simulated to 64 workers.

Run:   python benchmarks/scale_out.py [--models convnet,resnet] [--learning-rates 0.01,0.001] [--epochs 3]
           [--train-subset 20000] [--costs-from PATH] [--speedups-from PATH] [--keep-temp]
       python benchmarks/scale_out.py --simulate-only      (part 2 again; part 1 read back from scale_out.json)
Time:  about 5 min on 2 cores with the defaults (a warm-up flow, then the sweep twice); --simulate-only: seconds.
Makes: benchmarks/results/scale_out.{md,json,png}.

Part 1, measured. A `dask scheduler` and one, then two `dask worker` processes (`--nthreads 1`, 127.0.0.1,
random free ports; a fresh cluster for each count, stopped on exit even on error) train the same sweep with
`flows/full_study.py --dask-address ...` in fresh artifacts folders (nothing cached). The train stage is timed
from the runs' manifests (first `started_unix` to last `finished_unix`) and from the log's `train-grid`
subflow; the flow's whole wall time too. Target: two workers at least 1.8x faster than one.
What each task moves through the scheduler is measured inside the cluster, by plugins registered there:
the serialized task (function, arguments, Prefect's context) as the scheduler sends it to its worker
(`compute-task`'s run_spec through `distributed.protocol.dumps`, the bytes its comm writes), the serialized
result as a worker serves it (`get_data`'s message through the same `dumps`), the workers' own counter of bytes
served (`Worker.transfer_outgoing_bytes_total`), and every byte the scheduler's TCP connections carried during
the flow (its `TCP.write` and frame reads, counted; heartbeats included).

Part 2, simulated. The full study's lineages (`planning.plan_runs` + `planning.lineage_jobs` of the default
configuration: 13 jobs; the 10-epoch ResNet at LR 0.001 is continued to 20 as one lineage) are replayed on
1 to 64 one-thread workers with longest-first list scheduling (`schedule.simulate`). A lineage lasts its epochs
times its model's measured seconds per epoch (one thread), plus the measured fixed cost of a lineage. Costs come
from `--costs-from`: a study's log (default: the full study of benchmarks/results/full_scale, 60,000 images,
two one-thread runs side by side) or an artifacts folder (its manifests). What-if: idle workers lend their cores
to the longest lineages (2 or 4 threads), with per-model thread speed-ups read from ratio_bound.json. Planner:
the thread counts `planning.share_threads` gives on one machine with that many cores (spare cores to the
lineages that would end last), simulated with the same speed-ups.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import schedule
import training_speed
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from flows._runtime import comma_separated
from mnist_models import planning
from mnist_models.config import StudyConfig
from mnist_models.layout import ArtifactsLayout
from mnist_models.runs import measured_epoch_costs, recorded_manifests

SPEEDUP_TARGET = 1.8  # two worker processes against one, train stage
WORKER_COUNTS = (1, 2, 4, 8, 16, 32, 64)
DASK_WORKER_CORES = 8  # the simulated Dask cluster's workers: one per 8-core machine, lending its cores
THREAD_LEVELS = (1, 2, 4)  # threads a lineage may get in the what-if
FULL_IMAGES = 60_000
DEFAULT_COSTS = _common.RESULTS_DIR / "full_scale" / "logs" / "pipeline_refresh.log"
DEFAULT_SPEEDUPS = _common.RESULTS_DIR / "ratio_bound.json"
BUSY_LOAD, BUSY_OTHER_SHARE = 0.7, 0.1  # load at the start, other processes' share of a core: above, not alone
TASK_PLUGIN, RESULT_PLUGIN = "scale-out-task-bytes", "scale-out-result-bytes"
START_TIMEOUT = 90.0  # seconds for the scheduler and workers to come up
EPOCH_LINE = r"Task run '(train (\S+) [^']*)' - (\S+): epoch (\d+)/(\d+) .*\(([\d.]+) s\)$"
LINEAGE_START = r"Task run '(train [^']*)' - \S+: training .* in process \d+$"
LINEAGE_END = r"Task run '(train [^']*)' - Finished in state Completed\(\)$"


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=comma_separated(str), default=["convnet", "resnet"],
                        help="models of the measured sweep (default: convnet,resnet, the pairs that use both cores: "
                             "training_levers.md)")
    parser.add_argument("--learning-rates", type=comma_separated(float), default=[0.01, 0.001],
                        help="learning rates of the measured sweep (default: 0.01,0.001: no run diverges, so "
                             "none stops early)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run of the measured sweep")
    parser.add_argument("--train-subset", type=int, default=20_000, help="training images per run (0: all 60,000)")
    parser.add_argument("--costs-from", type=Path, default=DEFAULT_COSTS,
                        help="a study's log, or an artifacts folder, with measured epoch times (default: %(default)s)")
    parser.add_argument("--speedups-from", type=Path, default=DEFAULT_SPEEDUPS,
                        help="ratio_bound.json giving each model's epoch on 1 thread and on every core")
    parser.add_argument("--simulate-only", action="store_true",
                        help="skip part 1: read it back from the last scale_out.json")
    parser.add_argument("--keep-temp", action="store_true", help="keep the artifacts, cluster and flow logs")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- part 1: a real Dask cluster on this machine


class TaskBytes(SchedulerPlugin):
    """Inside the scheduler: per task, the bytes of the serialized task it sends its worker, and which worker;
    and the bytes all of the scheduler's TCP connections read and wrote."""

    name = TASK_PLUGIN

    def __init__(self) -> None:
        self.tasks: dict[str, dict] = {}
        self.wire = {"bytes_read": 0, "bytes_written": 0, "messages_read": 0, "messages_written": 0}

    async def start(self, scheduler) -> None:
        import distributed.comm.tcp as tcp

        self.scheduler, wire = scheduler, self.wire
        write, read, read_frames = tcp.TCP.write, tcp.TCP.read, tcp.read_bytes_rw

        async def counted_write(comm, *args, **kwargs):
            written = await write(comm, *args, **kwargs)  # frames plus header, as they go on the socket
            wire["bytes_written"] += written
            wire["messages_written"] += 1
            return written

        async def counted_read(comm, *args, **kwargs):
            wire["bytes_read"] += 8  # the message's length prefix
            wire["messages_read"] += 1
            return await read(comm, *args, **kwargs)

        async def counted_frames(stream, count):
            wire["bytes_read"] += count
            return await read_frames(stream, count)

        tcp.TCP.write, tcp.TCP.read, tcp.read_bytes_rw = counted_write, counted_read, counted_frames

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        from distributed.protocol import dumps
        from distributed.protocol.serialize import ToPickle
        from distributed.utils import nbytes

        task = self.scheduler.tasks.get(key)
        if task is None:
            return
        record = self.tasks.setdefault(str(key), {})
        if finish == "processing":
            # What _task_to_msg sends the worker for this task, serialized as the batched stream does.
            frames = dumps([{"op": "compute-task", "key": key, "run_spec": ToPickle(task.run_spec)}])
            record.update(task_bytes=sum(nbytes(frame) for frame in frames), assigned_to=task.processing_on.name)
        elif finish == "memory":
            record.update(result_sizeof=task.nbytes)
        elif finish == "erred":
            record.update(erred=True)

    def reset_wire(self) -> dict:
        """The wire counters so far, then zero."""
        before = dict(self.wire)
        self.wire.update({name: 0 for name in self.wire})
        return before


class ResultBytes(WorkerPlugin):
    """Inside each worker: when each task ran, and the bytes of its result's message as `get_data` serves it."""

    name = RESULT_PLUGIN

    def setup(self, worker) -> None:
        self.worker, self.results = worker, {}

    def transition(self, key, start, finish, **kwargs) -> None:
        from distributed.protocol import dumps, to_serialize
        from distributed.utils import nbytes

        record = self.results.setdefault(str(key), {"worker": self.worker.name})
        if finish == "executing":
            record["started"] = time.time()
        elif finish == "memory" and key in self.worker.data:
            value = self.worker.data[key]
            frames = dumps({"status": "OK", "data": {key: to_serialize(value)}})
            record.update(finished=time.time(), result_bytes=sum(nbytes(frame) for frame in frames),
                          result_type=type(value).__name__)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(command: list[str], environment: dict[str, str], log: Path) -> subprocess.Popen:
    """A CLI in its own process group (so its children can be ended with it), output to a file."""
    with log.open("wb") as output:
        return subprocess.Popen(command, env=environment, cwd=_common.REPO_ROOT, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process's group (a worker's nanny, worker and training processes), SIGKILL what remains."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _group_cpu_seconds(groups: set[int]) -> float:
    """CPU seconds of every live process in these process groups, with their reaped children's."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in groups:
            total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


@contextlib.contextmanager
def dask_cluster(workers: int, folder: Path, environment: dict[str, str]):
    """A `dask scheduler` and `workers` one-thread `dask worker` processes on 127.0.0.1; yields (address, processes)."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{_free_port()}"
    processes: list[subprocess.Popen] = []
    try:
        processes.append(_start([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                 "--no-dashboard"], environment, folder / "scheduler.log"))
        for index in range(1, workers + 1):
            processes.append(_start([dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--host",
                                     "127.0.0.1", "--no-dashboard", "--name", f"worker-{index}", "--local-directory",
                                     str(folder / f"worker-{index}")], environment, folder / f"worker-{index}.log"))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(workers, timeout=5)
                    break
            except (OSError, TimeoutError):
                exited = [process.args[:2] for process in processes if process.poll() is not None]
                if exited or time.monotonic() > deadline:
                    logs = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}"
                                     for log in sorted(folder.glob("*.log")))
                    raise SystemExit(f"the Dask cluster did not come up ({workers} worker(s); exited: {exited})\n"
                                     f"{logs}")
        yield address, processes
    finally:
        for process in reversed(processes):
            _stop(process)


def train_span(artifacts: Path) -> dict:
    """The train stage by the runs' manifests: first lineage's start to last run's end, and each run's times."""
    manifests = recorded_manifests(ArtifactsLayout.at(artifacts))
    if not manifests:
        raise SystemExit(f"no run manifests under {artifacts / 'runs'}: the flow trained nothing")
    began = min(manifest["started_unix"] for manifest in manifests)
    return {"train_stage_s": round(max(manifest["finished_unix"] for manifest in manifests) - began, 1),
            "runs": [{"run_id": manifest["run_id"], "start_s": round(manifest["started_unix"] - began, 1),
                      "end_s": round(manifest["finished_unix"] - began, 1),
                      "epoch_seconds": manifest["epoch_seconds"], "train_images": manifest["train_images"],
                      "threads": manifest["threads"]} for manifest in manifests]}


def flow_command(options: argparse.Namespace, artifacts: Path, address: str) -> list[str]:
    command = [sys.executable, str(_common.REPO_ROOT / "flows" / "full_study.py"), "--artifacts-dir", str(artifacts),
               "--dask-address", address, "--models", ",".join(options.models),
               "--learning-rates", ",".join(f"{rate:g}" for rate in options.learning_rates),
               "--epochs", str(options.epochs), "--gradient-models", ""]
    return command + (["--train-subset", str(options.train_subset)] if options.train_subset else [])


def measure(workers: int, options: argparse.Namespace, folder: Path, environment: dict[str, str]) -> dict:
    """The sweep on a fresh cluster of `workers` worker processes, in a fresh artifacts folder."""
    from distributed import Client

    cluster_folder, artifacts = folder / f"cluster-{workers}", folder / f"artifacts-{workers}"
    cluster_folder.mkdir()
    with dask_cluster(workers, cluster_folder, environment) as (address, processes):
        with Client(address, timeout=10) as client:
            client.register_plugin(TaskBytes())
            client.register_plugin(ResultBytes())
            client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[TASK_PLUGIN].reset_wire())
        groups = {process.pid for process in processes}
        cluster_cpu = _group_cpu_seconds(groups)
        record = training_speed.run_timed(f"flow_{workers}_worker", flow_command(options, artifacts, address),
                                          environment, folder)
        cluster_cpu = _group_cpu_seconds(groups) - cluster_cpu
        with Client(address, timeout=10) as client:
            wire = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[TASK_PLUGIN].reset_wire())
            tasks = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[TASK_PLUGIN].tasks)
            results = client.run(lambda dask_worker: dask_worker.plugins[RESULT_PLUGIN].results)
            served = client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
    for worker_results in results.values():
        for key, sizes in worker_results.items():
            tasks.setdefault(key, {}).update(sizes)
    tasks = {key: task for key, task in tasks.items() if "started" in task}
    if not tasks:
        raise SystemExit(f"no task reached the cluster at {address}; see {folder}/flow_{workers}_worker.log")
    began = min(task["started"] for task in tasks.values())
    stages = training_speed.pipeline_stages(record)
    return {
        "workers": workers, "address": address, "command": record["command"],
        "train_grid_flow_s": stages.get("flow train-grid"), **train_span(artifacts),
        # Executing on its worker, seconds from the first task's start (a worker may hold a second task queued).
        "tasks": sorted(({"key": key, **{name: value for name, value in task.items()
                                         if name not in ("started", "finished")},
                          "start_s": round(task["started"] - began, 1),
                          "end_s": round(task.get("finished", float("nan")) - began, 1)}
                         for key, task in tasks.items()), key=lambda task: task["start_s"]),
        "scheduler_wire": wire, "workers_served_bytes": sum(served.values()),
        "train_split_file_bytes": (artifacts / "data" / "mnist" / "train.parquet").stat().st_size,
        "cpu_s": {"flow_process_tree": record["cpu_s"], "dask_cluster": round(cluster_cpu, 1),
                  "other_processes": round(record["other_processes_cpu_s"] - cluster_cpu, 1)},
        "wall_s": round(record["wall_s"], 1), "load_average_before": record["load_average_before"],
        "load_average_after": record["load_average_after"],
        "source_changed_during_run": record["source_changed_during_run"],
    }


def measured_part(options: argparse.Namespace) -> dict:
    """Both cluster sizes, one after the other, after an untimed warm-up flow that creates Prefect's database."""
    folder = Path(tempfile.mkdtemp(prefix="scale-out-"))
    environment = _common.subprocess_environment(folder / "prefect-home")
    # Prefect's 20 s default for its temporary server to answer is short for a fresh database on a loaded machine.
    environment.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    try:
        training_speed.run_timed("trivial_flow_first", [sys.executable, str(_common.REPO_ROOT / "benchmarks" /
                                                                           "trivial_flow.py")], environment, folder)
        runs = [measure(workers, options, folder, environment) for workers in (1, 2)]
    except BaseException:
        print(f"kept {folder} (the flows' and the cluster's logs)", file=sys.stderr)
        raise
    if options.keep_temp:
        print(f"kept {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    one, two = runs
    speedups = {name: round(one[name] / two[name], 2) for name in ("train_stage_s", "train_grid_flow_s", "wall_s")
                if one.get(name) and two.get(name)}
    task_bytes = [task["task_bytes"] for run in runs for task in run["tasks"] if "task_bytes" in task]
    result_bytes = [task["result_bytes"] for run in runs for task in run["tasks"] if "result_bytes" in task]
    return {
        "settings": {"models": options.models, "learning_rates": options.learning_rates, "epochs": options.epochs,
                     "train_subset": options.train_subset or None, "gradient_models": []},
        "configurations": runs, "speedup": speedups, "target": SPEEDUP_TARGET,
        "passed": speedups.get("train_stage_s", 0) >= SPEEDUP_TARGET,
        "bytes_per_task": {"tasks": len(task_bytes), "task_max": max(task_bytes),
                           "task_median": statistics.median(task_bytes), "result_max": max(result_bytes),
                           "result_median": statistics.median(result_bytes)},
        "train_split_array_bytes": FULL_IMAGES * 28 * 28,  # uint8 pixels, what the 47 MB refers to
    }


# ---------------------------------------------------------------- part 2: the full study on 1 to 64 workers


def costs_from_log(log: Path) -> tuple[dict[str, float], list[float], set[int]]:
    """Median seconds per epoch of each model on 60,000 images (from the epoch lines), each lineage's seconds outside
    its epochs, and the training images per run (a run id's `-nN-` names a subset, scaled up like the manifests')."""
    epochs: dict[str, list[float]] = {}
    per_task: dict[str, list[float]] = {}
    spans: dict[str, list[float]] = {}
    images = set()
    for stamp, message in training_speed._log_events(log.read_text(), 0.0):
        if match := re.search(EPOCH_LINE, message):
            subset = re.search(r"-n(\d+)-", match.group(3))
            count = int(subset.group(1)) if subset else FULL_IMAGES
            images.add(count)
            epochs.setdefault(match.group(2), []).append(float(match.group(6)) * FULL_IMAGES / count)
            per_task.setdefault(match.group(1), []).append(float(match.group(6)))
        elif match := re.search(LINEAGE_START, message):
            spans[match.group(1)] = [stamp]
        elif (match := re.search(LINEAGE_END, message)) and match.group(1) in spans:
            spans[match.group(1)].append(stamp)
    fixed = [span[1] - span[0] - sum(per_task.get(task, [])) for task, span in spans.items() if len(span) == 2]
    return {model: statistics.median(values) for model, values in epochs.items()}, fixed, images


def costs_from_artifacts(artifacts: Path) -> tuple[dict[str, float], list[float], set[int]]:
    """Seconds per epoch on 60,000 images (runs.measured_epoch_costs, scaled), each lineage's time outside its epochs
    (training's own start to its last run's end: the process start is not in it), and the training images per run."""
    layout = ArtifactsLayout.at(artifacts)
    costs = {model: per_thousand * FULL_IMAGES / 1000 for model, per_thousand in measured_epoch_costs(layout).items()}
    lineages: dict[str, dict] = {}
    for manifest in recorded_manifests(layout):
        longest = lineages.get(manifest["lineage"])
        if longest is None or manifest["parameters"]["epochs"] > longest["parameters"]["epochs"]:
            lineages[manifest["lineage"]] = manifest
    fixed = [manifest["finished_unix"] - manifest["started_unix"] - sum(manifest["epoch_seconds"])
             for manifest in lineages.values()]
    return costs, fixed, {manifest["train_images"] for manifest in lineages.values()}


def thread_speedups(path: Path) -> dict[str, dict[str, float]]:
    """Per model, a run's speed-up on 2 threads (measured: ratio_bound.json's bare epoch, one thread with a neighbour
    against one process on both cores) and on 4 (Amdahl's law from the 2-thread figure: this machine has 2 cores)."""
    measured = json.loads(path.read_text())["seconds_per_epoch"]
    speedups = {}
    for model, configurations in measured.items():
        one_thread = statistics.mean(configurations["bare, side by side"])
        two = one_thread / configurations["bare, one process on every core"][0]
        speedups[model] = {"1": 1.0, "2": round(two, 3), "4": round(amdahl_speedup({"2": two}, 4), 3)}
    return speedups


def study_lineages(costs: dict[str, float], fixed_s: float) -> list[dict]:
    """The default configuration's training jobs, longest first, each with its simulated seconds on one thread."""
    jobs = planning.lineage_jobs(planning.plan_runs(StudyConfig(), ""), costs)
    lineages = []
    for job in jobs:
        epochs_s = planning.model_cost(job[-1].spec.model, costs) * job[-1].spec.epochs
        lineages.append({"lineage": " + ".join(f"{run.spec.model} lr={run.spec.learning_rate:g} e={run.spec.epochs}"
                                               for run in job),
                         "model": job[-1].spec.model, "learning_rate": job[-1].spec.learning_rate,
                         "seed": job[-1].spec.seed, "epochs": job[-1].spec.epochs, "epochs_s": round(epochs_s, 1),
                         "fixed_s": round(fixed_s, 1), "seconds": round(epochs_s + fixed_s, 1)})
    return lineages


def with_threads(lineages: list[dict], workers: int, speedups: dict[str, dict[str, float]]) -> tuple[float, dict]:
    """What-if: idle workers lend their cores to the longest lineage, step by step (1 -> 2 -> 4 threads), while that
    shortens the schedule. A lineage on n threads starts first and holds n workers until it ends; the others follow
    longest first on the free workers, and on those it frees."""

    def seconds(index: int, threads: dict[int, int]) -> float:
        lineage, count = lineages[index], threads.get(index, 1)  # threads speed up the epochs, not the fixed cost
        return lineage["fixed_s"] + lineage["epochs_s"] / speedups.get(lineage["model"], {}).get(str(count), 1.0)

    def makespan(threads: dict[int, int]) -> float:
        slots = [seconds(index, threads) for index, count in threads.items() for _ in range(count)]
        slots += [0.0] * (workers - len(slots))
        heapq.heapify(slots)
        for duration in sorted((seconds(index, threads) for index in range(len(lineages)) if index not in threads),
                               reverse=True):
            heapq.heappush(slots, heapq.heappop(slots) + duration)
        return max(slots)

    threads: dict[int, int] = {}
    best = makespan(threads)
    while True:
        longest = max(range(len(lineages)), key=lambda index: seconds(index, threads))
        current = threads.get(longest, 1)
        if current == THREAD_LEVELS[-1]:
            break
        trial = {**threads, longest: THREAD_LEVELS[THREAD_LEVELS.index(current) + 1]}
        if sum(trial.values()) > workers or (candidate := makespan(trial)) >= best - 0.05:
            break
        threads, best = trial, candidate
    return best, {lineages[index]["lineage"]: count for index, count in threads.items()}


def amdahl_speedup(speedups: dict[str, float], threads: int) -> float:
    """A model's epoch speed-up on `threads` threads: Amdahl's law fitted to its measured 2-thread figure."""
    parallel = min(1.0, max(0.0, 2 * (1 - 1 / speedups.get("2", 1.0))))
    return 1 / ((1 - parallel) + parallel / threads)


def with_planner(lineages: list[dict], cores: int, speedups: dict[str, dict[str, float]],
                 worker_cores: int | None = None) -> tuple[float, dict]:
    """The study on one machine with `cores` cores, or on a Dask cluster of `cores` in workers lending
    `worker_cores` each, as the planner shares them (`planning.share_threads`): where every lineage trains at once,
    the spare cores go to the lineages that would end last (on Dask: no more than one worker lends, every lineage
    fitting at once); otherwise one thread each, longest first. Returns the simulated wall time and the lineages
    given more than one thread."""
    config = StudyConfig(dask_address="tcp://scheduler:8786" if worker_cores else None)
    lent = ([worker_cores] * (cores // worker_cores) or [cores]) if worker_cores else []
    shares = planning.share_threads(config, planning.plan_runs(config, ""), cores, dask_cores=lent)

    def seconds(lineage: dict, count: int) -> float:
        return lineage["fixed_s"] + lineage["epochs_s"] / amdahl_speedup(speedups.get(lineage["model"], {}), count)

    counts = [shares[lineage["model"], lineage["learning_rate"], lineage["seed"]] for lineage in lineages]
    if len(set(counts)) == 1:
        wall, _ = schedule.simulate([seconds(lineage, counts[0]) for lineage in lineages], cores // counts[0])
    else:  # shares differ only where every lineage trains at once
        wall = max(seconds(lineage, count) for lineage, count in zip(lineages, counts))
    return wall, {lineage["lineage"]: count for lineage, count in zip(lineages, counts) if count > 1}


def simulated_part(options: argparse.Namespace) -> dict:
    source = options.costs_from
    if source.is_dir():
        costs, fixed, images = costs_from_artifacts(source)
    elif source.is_file():
        costs, fixed, images = costs_from_log(source)
    else:
        raise SystemExit(f"--costs-from {source}: no such log file or artifacts folder")
    if not costs:
        raise SystemExit(f"--costs-from {source}: no epoch times found (expected a study's log or run manifests)")
    fixed_s = statistics.median(fixed) if fixed else 0.0
    measured_models = sorted(costs)
    costs = {**planning.EPOCH_COST, **costs}  # a model the source lacks keeps its registered cost (said so below)
    lineages = study_lineages(costs, fixed_s)
    costs = {model: costs[model] for model in sorted({lineage["model"] for lineage in lineages})}
    speedups = thread_speedups(options.speedups_from)
    critical = max(lineage["seconds"] for lineage in lineages)
    total = sum(lineage["seconds"] for lineage in lineages)
    rows = []
    for workers in WORKER_COUNTS:
        wall, idle = schedule.simulate([lineage["seconds"] for lineage in lineages], workers)
        threaded, given = with_threads(lineages, workers, speedups)
        planned, shared = with_planner(lineages, workers, speedups)
        on_dask, dask_shared = with_planner(lineages, workers, speedups, DASK_WORKER_CORES)
        rows.append({"workers": workers, "wall_s": round(wall, 1), "utilisation": round(total / wall / workers, 3),
                     "speedup": round(total / wall, 2), "on_critical_path": abs(wall - critical) < 0.05,
                     "what_if_wall_s": round(threaded, 1), "what_if_threads": given,
                     "planner_wall_s": round(planned, 1), "planner_threads": shared,
                     "dask_planner_wall_s": round(on_dask, 1), "dask_planner_threads": dask_shared})
    floor = max(lineage["fixed_s"] + lineage["epochs_s"] / speedups.get(lineage["model"], {}).get(
        str(THREAD_LEVELS[-1]), 1.0) for lineage in lineages)
    return {"costs_from": str(source), "seconds_per_epoch": {model: round(costs[model], 3) for model in sorted(costs)},
            "measured_models": measured_models, "source_train_images": sorted(images),
            "fixed_per_lineage_s": round(fixed_s, 1),
            "fixed_per_lineage_samples": len(fixed), "lineages": lineages, "critical_path_s": critical,
            "what_if_floor_s": round(floor, 1),
            "total_s": round(total, 1), "thread_speedups": speedups, "speedups_from": str(options.speedups_from),
            "rows": rows}


# ---------------------------------------------------------------- report


def plot(payload: dict):
    """Left: the measured train stage and wall on 1 and 2 workers; right: the simulated full study against workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    measured = payload.get("measured")
    if measured:
        runs = measured["configurations"]
        bars = (("train_stage_s", "train stage (manifests)"), ("train_grid_flow_s", "train-grid subflow (log)"),
                ("wall_s", "whole flow"))
        for offset, (field, label) in zip((-0.27, 0.0, 0.27), bars):
            left.bar([index + offset for index in range(len(runs))], [run[field] or 0 for run in runs], 0.27,
                     label=label)
        left.set_xticks(list(range(len(runs))), [f"{run['workers']} worker process(es)" for run in runs])
        left.set_ylabel("seconds")
        left.set_title(f"measured: train stage {measured['speedup'].get('train_stage_s')}x faster on 2")
        left.legend(fontsize=8)
    simulated = payload["simulated"]
    workers = [row["workers"] for row in simulated["rows"]]
    right.plot(workers, [row["wall_s"] for row in simulated["rows"]], "o-", label="one thread per lineage")
    right.plot(workers, [row["what_if_wall_s"] for row in simulated["rows"]], "s--",
               label="what-if: idle cores to the longest lineages")
    right.plot(workers, [row["planner_wall_s"] for row in simulated["rows"]], "^-.",
               label="the planner on one machine with that many cores")
    right.plot(workers, [row["dask_planner_wall_s"] for row in simulated["rows"]], "v:",
               label=f"the planner on Dask workers lending {DASK_WORKER_CORES} cores each")
    right.axhline(simulated["critical_path_s"], color="grey", linestyle=":",
                  label=f"critical path (longest lineage) {simulated['critical_path_s']:.0f} s")
    right.axhline(simulated["what_if_floor_s"], color="grey", linestyle="-.", linewidth=0.8,
                  label=f"what-if floor: longest lineage on {THREAD_LEVELS[-1]} threads "
                        f"{simulated['what_if_floor_s']:.0f} s")
    right.plot(workers, [simulated["total_s"] / count for count in workers], color="lightgrey", label="total / workers")
    right.set_xscale("log", base=2)
    right.set_xticks(workers, [str(count) for count in workers])
    right.set_yscale("log")
    right.set_xlabel("cores: one-core workers, one machine, or 8-core Dask workers (per line)")
    right.set_ylabel("train stage, seconds")
    right.set_title("simulated: the full study's 13 lineages, longest first")
    right.legend(fontsize=8)
    figure.tight_layout()
    return figure


def markdown(payload: dict) -> str:
    machine, measured, simulated = payload["machine"], payload.get("measured"), payload["simulated"]
    unmeasured = sorted(set(simulated["seconds_per_epoch"]) - set(simulated["measured_models"]))
    lines = ["# Scaling the study past one machine", "",
             f"Date {machine['date']}; machine: {machine['nproc']} cores, {machine['cpu_model']}, "
             f"{machine['memory_gib']} GiB; load average at start {machine['load_average_at_start']}; "
             f"versions {machine['versions']}.", ""]
    if measured:
        settings = measured["settings"]
        one, two = measured["configurations"]
        lines += [
            "## Measured: a real Dask cluster on this machine", "",
            f"`dask scheduler` + 1, then 2 `dask worker --nthreads 1` processes on 127.0.0.1 (a fresh cluster each), "
            f"`flows/full_study.py --dask-address ...` in fresh artifacts folders: "
            f"models {','.join(settings['models'])}, "
            f"learning rates {','.join(f'{rate:g}' for rate in settings['learning_rates'])}, {settings['epochs']} "
            f"epoch(s), {settings['train_subset'] or 'all'} training images, no gradient pair: "
            f"{len(one['runs'])} lineages of one run each.", "",
            _common.markdown_table(
                ["", "1 worker", "2 workers", "speed-up"],
                [["train stage (manifests: first start to last end), s", one["train_stage_s"], two["train_stage_s"],
                  measured["speedup"].get("train_stage_s")],
                 ["train-grid subflow (log), s", one["train_grid_flow_s"], two["train_grid_flow_s"],
                  measured["speedup"].get("train_grid_flow_s")],
                 ["whole flow, wall s", one["wall_s"], two["wall_s"], measured["speedup"].get("wall_s")],
                 ["CPU s: flow / Dask cluster / other processes",
                  " / ".join(str(value) for value in one["cpu_s"].values()),
                  " / ".join(str(value) for value in two["cpu_s"].values()), ""],
                 ["load average before", one["load_average_before"], two["load_average_before"], ""]]), "",
            _alone(machine, one, two), "", _neighbour_slowdown(one, two), "",
            f"Target: train stage at least {measured['target']}x faster on two workers: "
            f"**{'PASS' if measured['passed'] else 'FAIL'}** ({measured['speedup'].get('train_stage_s')}x).", "",
            "Where each lineage ran (worker plugin: the task executing on its worker, seconds from the first start):",
            "",
            _common.markdown_table(["workers", "worker", "start s", "end s"],
                                   [[run["workers"], task.get("worker"), task["start_s"], task["end_s"]]
                                    for run in (one, two) for task in run["tasks"]]), "",
        ]
        sizes = measured["bytes_per_task"]
        split = one["train_split_file_bytes"]
        wire = [run["scheduler_wire"] for run in (one, two)]
        lines += [
            "### Bytes through the scheduler per task", "",
            f"The training data stays on disk: a task carries paths and hashes, and the worker's training process "
            f"reads the Parquet file itself. Measured inside the cluster for all {sizes['tasks']} tasks:", "",
            _common.markdown_table(["what", "median KB", "max KB", "how"], [
                ["the serialized task (function, arguments, Prefect context)", _kb(sizes["task_median"]),
                 _kb(sizes["task_max"]),
                 "scheduler plugin: `compute-task`'s run_spec through `distributed.protocol.dumps`"],
                ["its serialized result (Prefect State with the run records)", _kb(sizes["result_median"]),
                 _kb(sizes["result_max"]),
                 "worker plugin: `get_data`'s message through `distributed.protocol.dumps`"]]),
            "",
            f"Against the training split: {split / 1e6:.1f} MB as Parquet on disk, "
            f"{measured['train_split_array_bytes'] / 1e6:.2f} MB as uint8 pixels: a task and its result are "
            f"{(sizes['task_max'] + sizes['result_max']) / measured['train_split_array_bytes'] * 100:.3f}% of it.", "",
            "Cross-checks over each whole flow run: the scheduler's TCP connections read "
            + " and ".join(f"{_kb(counts['bytes_read'])} KB / wrote {_kb(counts['bytes_written'])} KB "
                           f"({counts['messages_read'] + counts['messages_written']} messages, heartbeats included) "
                           f"with {run['workers']} worker(s)" for counts, run in zip(wire, (one, two)))
            + f"; the workers' own counter of bytes served (`transfer_outgoing_bytes_total`): "
            f"{one['workers_served_bytes']} and {two['workers_served_bytes']} bytes, Dask's `sizeof` estimate of the "
            f"results (it does not look inside a Prefect State: an undercount; the serialized size above is the "
            f"real one).",
            "",
        ]
    lines += [
        "## Simulated: the full study on 1 to 64 workers", "",
        f"Jobs: `planning.lineage_jobs` of the default configuration ({len(simulated['lineages'])} lineages, longest "
        f"first). A lineage lasts its epochs x its model's median seconds per epoch on one thread, plus "
        f"{simulated['fixed_per_lineage_s']} s (the median time a lineage spent outside its epochs: process start, "
        f"data, model build, tracing, predictions, writing; {simulated['fixed_per_lineage_samples']} lineages). "
        f"Epoch times from `{_relative(simulated['costs_from'])}`: "
        + ", ".join(f"{model} {seconds:g} s" for model, seconds in simulated["seconds_per_epoch"].items()
                    if model in simulated["measured_models"])
        + (f"; registered, not measured: {', '.join(unmeasured)}" if unmeasured else "")
        + ". Runs that diverge stop early in reality; the plan cannot know that, so all planned epochs count."
        + ("" if simulated["source_train_images"] == [FULL_IMAGES] else
           f" **The source's runs trained on {simulated['source_train_images']} images, scaled to {FULL_IMAGES:,}: "
           f"their validation and tracing count {FULL_IMAGES:,}/N times over; prefer a full-size study.**"), "",
        _common.markdown_table(["lineage", "seconds on 1 thread"],
                               [[lineage["lineage"], lineage["seconds"]] for lineage in simulated["lineages"]]), "",
        _common.markdown_table(
            ["workers", "wall s", "wall min", "speed-up vs 1", "workers busy", "limited by",
             "what-if wall s", "what-if threads", "planner wall s", "planner threads",
             f"Dask {DASK_WORKER_CORES}-core workers wall s", f"Dask {DASK_WORKER_CORES}-core workers threads"],
            [[row["workers"], row["wall_s"], f"{row['wall_s'] / 60:.1f}", row["speedup"], f"{row['utilisation']:.0%}",
              "**critical path**" if row["on_critical_path"] else "workers", row["what_if_wall_s"],
              "; ".join(f"{name}: {count}" for name, count in row["what_if_threads"].items()) or "-",
              row["planner_wall_s"],
              "; ".join(f"{name}: {count}" for name, count in row["planner_threads"].items()) or "1 each",
              row["dask_planner_wall_s"],
              "; ".join(f"{name}: {count}" for name, count in row["dask_planner_threads"].items()) or "1 each"]
             for row in simulated["rows"]]), "",
        f"Critical path: the longest lineage, {simulated['lineages'][0]['lineage']}, {simulated['critical_path_s']} s; "
        f"all lineages one after the other: {simulated['total_s']} s.", "", _cost_check(measured, simulated), "",
        f"What-if: idle workers lend their cores to the longest lineage, 1 -> 2 -> 4 threads, while that shortens the "
        f"schedule. Thread speed-ups from `{_relative(simulated['speedups_from'])}` (2 threads: measured, a model's "
        f"bare "
        f"epoch on one thread beside another process against one process on both cores; 4 threads: Amdahl's law fitted "
        f"to the 2-thread figure, not measured, as this machine has 2 cores): "
        + ", ".join(f"{model} {values['2']}x / {values['4']}x"
                    for model, values in simulated["thread_speedups"].items())
        + ".", "",
        "Planner: what `flows/full_study.py` does on one machine with that many cores (`planning.share_threads`, "
        "`capacity.thread_shares`). Where the study's lineages outnumber the cores they queue, one thread each; where "
        "every lineage trains at once, each gets a core and the spare cores go one at a time to the lineage that "
        "would end last (by the registered epoch costs: a run's thread count is in its key, so it must not follow "
        "this machine's timings). Speed-ups on n threads: Amdahl's law fitted to the measured 2-thread figure.", "",
        f"Dask {DASK_WORKER_CORES}-core workers: the same cores as `dask worker --nthreads {DASK_WORKER_CORES} "
        f"--resources cores={DASK_WORKER_CORES}` processes (fewer cores: one worker lending them all). The planner "
        "shares the lent cores by the same rule, no lineage getting more than one worker lends and every lineage "
        "fitting on the workers at once; each training task asks Dask for its cores. Workers that lend no cores "
        "(`--nthreads 1` alone) keep one thread per task: the 'wall s' column.", "",
    ]
    return "\n".join(lines)


def _cost_check(measured: dict | None, simulated: dict) -> str:
    """Part 1's own epochs (one thread, its subset) scaled to 60,000 images, against the simulation's costs."""
    if not measured:
        return ""
    samples: dict[str, list[float]] = {}
    for run in measured["configurations"][0]["runs"]:  # the one-worker run: no neighbour on the other core
        model = run["run_id"].split("-lr")[0]
        samples.setdefault(model, []).extend(seconds * FULL_IMAGES / run["train_images"]
                                             for seconds in run["epoch_seconds"])
    pairs = [f"{model} {statistics.median(values):.1f} s (simulated with {simulated['seconds_per_epoch'][model]:g} s)"
             for model, values in sorted(samples.items()) if model in simulated["seconds_per_epoch"]]
    return ("Check against today's code and machine: part 1's one-worker epochs, scaled to 60,000 images (which "
            "over-counts the per-epoch validation on 10,000 test images and the gradient probe), were "
            + ", ".join(pairs) + ". Where these differ by more than the scaling explains, rerun the full study and "
            "pass its log or artifacts as --costs-from: the simulated seconds scale with the costs, the shape of "
            "the curve (where the critical path takes over) depends only on their ratios.")


def _alone(machine: dict, *runs: dict) -> str:
    """Whether the measurement had the machine to itself: the load before it started, and the CPU other processes
    used during each flow (the load before each flow also holds this script's own previous step)."""
    shares = [run["cpu_s"]["other_processes"] / run["wall_s"] for run in runs]
    alone = machine["load_average_at_start"][0] < BUSY_LOAD and max(shares) < BUSY_OTHER_SHARE
    before = " / ".join(f"{run['load_average_before'][0]:.2f}" for run in runs)
    others = " and ".join(f"{run['cpu_s']['other_processes']:g} CPU s ({share:.0%} of one core)"
                          for run, share in zip(runs, shares))
    return (f"{'Run alone' if alone else 'NOT run alone (rerun before quoting)'}: 1-minute load average "
            f"{machine['load_average_at_start'][0]:.2f} at the start (before each flow, with this script's previous "
            f"step in it: {before}); other processes used {others} during the two flows (machine-wide busy time "
            f"from /proc/stat less the flow's and the cluster's own).")


def _neighbour_slowdown(one: dict, two: dict) -> str:
    """Per model, the median epoch alone (one worker) against beside the other worker: what two cores give."""
    def medians(run: dict) -> dict[str, float]:
        samples: dict[str, list[float]] = {}
        for entry in run["runs"]:
            samples.setdefault(entry["run_id"].split("-lr")[0], []).extend(entry["epoch_seconds"])
        return {model: statistics.median(values) for model, values in samples.items()}

    alone, paired = medians(one), medians(two)
    return ("Median epoch, alone on one worker against beside the other worker: "
            + ", ".join(f"{model} {alone[model]:.1f} s -> {paired[model]:.1f} s ({paired[model] / alone[model]:.2f}x)"
                        for model in sorted(alone) if model in paired)
            + ". Each worker trained one lineage at a time and both were busy to the end (table below), so two "
              "workers can give at most 2 / that factor here: the shortfall from 2x is the two vCPUs' shared "
              "throughput, not the scheduling.")


def _kb(value: float) -> str:
    return f"{value / 1000:.1f}"


def _relative(path: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(_common.REPO_ROOT))
    return path


def _end_on_signal(signum, frame):
    """Terminate every process this script started (the flow, its Prefect server, the cluster), then exit.

    subprocess.run would SIGKILL the flow alone and orphan its server: so each descendant is ended here by its id,
    listed before any of them ends; the cluster's own clean-up then finds its processes gone.
    """
    import psutil

    descendants = psutil.Process().children(recursive=True)
    for process in descendants:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(descendants, timeout=15)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _end_on_signal)
    json_path = _common.RESULTS_DIR / "scale_out.json"
    payload = {"benchmark": "scale_out", "machine": _common.machine_facts()}
    if options.simulate_only:
        earlier = json.loads(json_path.read_text()) if json_path.exists() else {}
        payload.update(machine=earlier.get("machine", payload["machine"]), measured=earlier.get("measured"))
    else:
        load = payload["machine"]["load_average_at_start"]
        print(f"load average at start: {load}" + (" (busy: the result will say so)" if load[0] >= BUSY_LOAD else ""),
              flush=True)
        payload["measured"] = measured_part(options)
    payload["simulated"] = simulated_part(options)
    _common.write_json(json_path, payload)
    text = markdown(payload)
    (_common.RESULTS_DIR / "scale_out.md").write_text(text)
    figure = plot(payload)
    figure.savefig(_common.RESULTS_DIR / "scale_out.png", dpi=120)
    import matplotlib.pyplot as plt

    plt.close(figure)
    print(text)


if __name__ == "__main__":
    main()
