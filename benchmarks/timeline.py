"""Where one study run's wall time goes: a timeline per process, from the run's log and its run folders.

Run:   python benchmarks/timeline.py --log LOGFILE --artifacts ARTIFACTS_DIR [--output benchmarks/results/timeline]
       python benchmarks/timeline.py --run [--output ...]     (runs `flows/full_study.py --profile quick` itself)
Time:  the analysis a few seconds; --run about 2.5 min on 2 cores (one quick-profile study, after an untimed
       trivial flow that creates the fresh PREFECT_HOME's database, as training_speed.py does).
Makes: OUTPUT.md (machine, command, wall time, table, figure), OUTPUT.json, OUTPUT.png; with --run also
       OUTPUT.log, the study's captured output with two lines of this script's marking its start and exit.

Evidence, and nothing else: the log's HH:MM:SS.mmm lines (server start, flow and subflow begin/end, each stage's
cache decision and last task line, each training task's `in process N`, `epoch k/N ... (s)` and end) and, per
run folder, manifest.json (`started_unix`, `finished_unix`, `epoch_seconds`), the modification time of
predictions.parquet (written by training right after `finished_unix` is taken) and the TensorBoard event files
(each epoch's validation file is opened when validation starts, in whole seconds, and gets its
`evaluation_*` scalars when it ends). Parts the evidence cannot split are named as one part, and the report
says so. While the training grid runs, each of the N worker lanes accounts for 1/N of the wall clock, so the
parts' wall seconds add up to the wall time; lane seconds are the plain sums over lanes.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import _common
from training_speed import LOG_LINE

# Every part, in the order the tables list them, with what it holds (the report's legend).
PARTS = {
    "start-up": "interpreter start, imports, option checks: before the first log line (known only with --run)",
    "server start": "Prefect's temporary server start, and the flow run's creation",
    "data stage": "verify or download the IDX files, Parquet splits, dataset facts, first-images figure",
    "grid start": "the training grid's plan (run keys, capacity) and the start of its subflow",
    "worker start + TF import": "a new worker process: interpreter, TensorFlow import and its first lineage's "
                                "setup (data, model, first gradient probe), one part",
    "run setup": "a reused worker's setup of its next lineage (data, model, first gradient probe)",
    "tracing (est.)": "a job's first epoch over the median later epoch of the same model: tracing, first-call warm-up",
    "training": "Keras fit's training steps",
    "validation": "each epoch's validation pass on the test split (the last one's probabilities are kept)",
    "epoch records": "TensorBoard histograms, gradient-norm probe, kernel histogram, model save, checkpoint",
    "test prediction": "writing the last validation pass's test predictions (predicted anew only for a run that "
                       "trained no epoch in the process) and the run folder's hashes",
    "after training, unsplit": "a job's last epoch records, test prediction and hand-over, where no run folder "
                               "says where one ends and the next begins",
    "hand-over": "Prefect task start and end, manifest, result back to the flow",
    "idle worker": "a worker with no lineage left to train while the grid goes on",
    "waiting for grid": "the main process waiting on the training grid (its wall time is the workers')",
    "between stages": "worker shut-down after the grid, each stage's cache key, Prefect between stages",
    "evaluation": "scoring each run's kept predictions (or predicting them again)",
    "tables": "the study's tables", "figures": "the study's figures", "champions": "the nightly gate",
    "report": "the HTML and Markdown report",
    "publishing": "the cache_decisions table and the Prefect artifacts",
    "exit": "flow completion, server stop, log drain, summary, interpreter exit",
}
COLOURS = {
    "start-up": "#7f7f7f", "server start": "#8c564b", "data stage": "#bcbd22", "grid start": "#dbdb8d",
    "worker start + TF import": "#d62728", "run setup": "#ff9896", "tracing (est.)": "#9467bd",
    "training": "#1f77b4", "validation": "#17becf", "epoch records": "#aec7e8", "test prediction": "#ff7f0e",
    "after training, unsplit": "#ffd8a8", "hand-over": "#c49c94", "idle worker": "#f0f0f0",
    "waiting for grid": "#f7f7f7", "between stages": "#c7c7c7", "evaluation": "#2ca02c", "tables": "#98df8a",
    "figures": "#e377c2", "champions": "#f7b6d2", "report": "#ffbb78", "publishing": "#9edae5", "exit": "#525252",
}
MAIN = "main process"
MESSAGE = re.compile(r"^(?:(Flow run|Task run) '([^']+)'|(\S+)) - (.*)$", re.DOTALL)
DECISION = re.compile(r"^(data|train|evaluate|tables|figures|champions|report) \S+: (?:reused|recomputed) \(")
TRAIN_START = re.compile(r"^(\S+): training (\S+) at learning rate (\S+) to epoch\(s\) \S+ on .* in process (\d+)$")
EPOCH_LINE = re.compile(r"^(\S+): epoch (\d+)/\d+ .*\(([\d.]+) s\)$")
PARALLEL = re.compile(r"^(\d+) run\(s\) at once")
AHEAD = re.compile(r"started \d+ training process\(es\) ahead, in process\(es\) ([\d, ]+\d)")
MARKER = "timeline"  # the logger name of the lines --run writes around the study's output
CLOCK_STEP = 900  # time zones differ from UTC by whole quarter hours: the log's clock is unix time + k * 900 s


@dataclass(frozen=True)
class Event:
    """One timestamped log line: seconds on the log's clock (past midnight, unwrapped), source and message."""

    clock: float
    kind: str  # "Flow run", "Task run" or a logger name ("prefect", "timeline")
    name: str
    message: str


@dataclass(frozen=True)
class EpochLine:
    """A training task's `<run id>: epoch k/N ... (s)` line, logged as the epoch's fit returned."""

    epoch: int
    run_id: str
    clock: float
    seconds: float  # as logged, to 0.1 s; the manifest has them to the millisecond


@dataclass
class Job:
    """One training task: a lineage trained in one worker process."""

    task: str
    started: float
    pid: int
    run_id: str
    model: str
    epochs: list[EpochLine] = field(default_factory=list)
    ended: float | None = None

    def fit_seconds(self, line: EpochLine, folder: RunFolder | None) -> float:
        """An epoch's fit seconds: the manifest's, else the log line's."""
        return folder.manifest["epoch_seconds"][line.epoch - 1] if folder else line.seconds


@dataclass(frozen=True)
class Segment:
    """One part on one lane, in seconds since the wall clock's start; `label` names the training job it belongs to."""

    lane: str
    part: str
    start: float  # seconds since the wall clock's start
    end: float
    label: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


# ---------------------------------------------------------------------------------------------- evidence


def read_events(log_path: Path) -> list[Event]:
    """Every timestamped line of a log; lines without a timestamp (tracebacks, TF warnings, the summary) are skipped."""
    if not log_path.is_file():
        raise FileNotFoundError(f"no log at {log_path}; expected the captured output of flows/full_study.py")
    events, day, last = [], 0.0, None
    for line in log_path.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match or not (parsed := MESSAGE.match(match.group(6))):
            continue
        hours, minutes, seconds, millis = (int(part) for part in match.groups()[:4])
        clock = hours * 3600 + minutes * 60 + seconds + millis / 1000 + day
        if last is not None and clock < last - 43200:  # past midnight
            day, clock = day + 86400, clock + 86400
        last = clock
        kind, name, logger, message = parsed.groups()
        events.append(Event(clock, kind or logger, name or "", message))
    if not events:
        raise ValueError(f"{log_path} holds no 'HH:MM:SS.mmm | LEVEL | source - message' line; "
                         "expected the console output of a Prefect flow run")
    return events


def _varint(data: bytes, index: int) -> tuple[int, int]:
    """A protocol buffer varint at `index`: (value, index after it)."""
    value = shift = 0
    while True:
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, index


def _fields(data: bytes):
    """(field number, value) of a protocol buffer message's varint, 64-bit and length-delimited fields."""
    index = 0
    while index < len(data):
        key, index = _varint(data, index)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, index = _varint(data, index)
        elif wire == 1:
            value, index = struct.unpack("<d", data[index:index + 8])[0], index + 8
        elif wire == 2:
            length, index = _varint(data, index)
            value, index = data[index:index + length], index + length
        elif wire == 5:
            value, index = data[index:index + 4], index + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, value


def _event_records(path: Path):
    """The Event messages of a TensorBoard event file (TFRecord framing: length, CRC, data, CRC)."""
    data, index = path.read_bytes(), 0
    while index + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[index:index + 8])
        yield data[index + 12:index + 12 + length]
        index += 16 + length


def validation_times(run_folder: Path) -> dict[int, tuple[float, float]]:
    """Epoch (1-based) -> (the whole second validation began, the unix time it ended), from the validation
    event files Keras's TensorBoard callback opens at validation's start and writes `evaluation_*` to at its end."""
    found = {}
    for path in sorted((run_folder / "tensorboard" / "validation").glob("events.out.tfevents.*")):
        opened = ended = epoch = None
        try:
            for record in _event_records(path):
                fields = list(_fields(record))
                wall = next((value for number, value in fields if number == 1), None)
                step = next((value for number, value in fields if number == 2), 0)
                tags = [tag.decode() for number, value in fields if number == 5
                        for value_field, entry in _fields(value) if value_field == 1
                        for tag_field, tag in _fields(entry) if tag_field == 1]
                if any(number == 3 for number, _ in fields):  # file_version: the file's first event
                    opened = wall
                elif any(tag.startswith("evaluation_") for tag in tags):
                    ended = wall if ended is None else min(ended, wall)
                elif any(tag.startswith("epoch_") for tag in tags):
                    epoch = step + 1
        except (ValueError, IndexError, struct.error, UnicodeDecodeError):
            continue  # a truncated or foreign file: no evidence from it
        if None not in (opened, ended, epoch):
            found[epoch] = (opened, ended)
    return found


@dataclass(frozen=True)
class RunFolder:
    """What a run folder records about when things happened."""

    manifest: dict
    predictions_written: float | None
    validation: dict[int, tuple[float, float]]

    @classmethod
    def read(cls, artifacts: Path, run_id: str) -> RunFolder | None:
        folder = artifacts / "runs" / run_id
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        predictions = folder / "predictions.parquet"
        return cls(manifest, predictions.stat().st_mtime if predictions.exists() else None, validation_times(folder))


# ---------------------------------------------------------------------------------------------- the jobs


def training_jobs(events: list[Event]) -> list[Job]:
    """The training tasks of the log, each from its `in process N` line to its `Finished in state` line."""
    jobs, open_jobs = [], {}
    for event in events:
        if event.kind != "Task run":
            continue
        if start := TRAIN_START.match(event.message):
            if event.name in open_jobs:  # a retry: the earlier attempt ended here
                open_jobs[event.name].ended = event.clock
            job = Job(event.name, event.clock, int(start.group(4)), start.group(1), start.group(2))
            jobs.append(job)
            open_jobs[event.name] = job
        elif (epoch := EPOCH_LINE.match(event.message)) and event.name in open_jobs:
            open_jobs[event.name].epochs.append(EpochLine(int(epoch.group(2)), epoch.group(1), event.clock,
                                                          float(epoch.group(3))))
        elif event.message.startswith("Finished in state") and event.name in open_jobs:
            open_jobs.pop(event.name).ended = event.clock
    return jobs


def clock_offset(jobs: list[Job], folders: dict[str, RunFolder], log_path: Path) -> tuple[float, str]:
    """Unix time minus the log's clock, and how it was found: from a lineage's `started_unix` against its first
    epoch's line less the epoch's seconds, else from this machine's time zone and the log file's date."""
    candidates = []
    for job in jobs:
        folder = folders.get(job.run_id)
        if folder and job.epochs and "started_unix" in folder.manifest:
            first = job.epochs[0]
            candidates.append(folder.manifest["started_unix"] - (first.clock - job.fit_seconds(first, folder)))
    if candidates:
        measured = statistics.median(candidates)
        rounded = round(measured / CLOCK_STEP) * CLOCK_STEP
        if abs(measured - rounded) < 60:
            return rounded, "the manifests' started_unix against the epoch lines (whole quarter hours)"
        return measured, f"the manifests against the epoch lines, {measured - rounded:+.1f} s off a time zone"
    started = datetime.fromtimestamp(log_path.stat().st_mtime)
    return (datetime.combine(started.date(), datetime.min.time()).timestamp(),
            "this machine's time zone and the log file's date (no trained run to align with)")


def _validation_span(folder: RunFolder, epoch: int, fit_end: float, seconds: float) -> tuple[float, float]:
    """(validation start, validation end) of an epoch inside its fit; the start is known to the whole second: its
    middle."""
    opened, ended = folder.validation[epoch]
    ended = min(max(ended, fit_end - seconds), fit_end)
    return min(max(opened + 0.5, fit_end - seconds), ended), ended


def later_epochs(jobs: list[Job], folders: dict[str, RunFolder], offset: float) -> dict[str, dict[str, list[float]]]:
    """Per model, the seconds of the epochs that were not their job's first: whole fit, training and validation."""
    later: dict[str, dict[str, list[float]]] = {}
    for job in jobs:
        folder = folders.get(job.run_id)
        for line in job.epochs[1:]:
            seconds = job.fit_seconds(line, folder)
            samples = later.setdefault(job.model, {"epoch": [], "training": [], "validation": []})
            samples["epoch"].append(seconds)
            if folder and line.epoch in folder.validation:
                validation, ended = _validation_span(folder, line.epoch, line.clock + offset, seconds)
                samples["training"].append(validation - (line.clock + offset - seconds))
                samples["validation"].append(ended - validation)
    return later


def job_marks(job: Job, folder: RunFolder | None, runs: list[RunFolder], setup: str, offset: float,
              later: dict) -> list[tuple[float, str]]:
    """(unix time, part that begins) along one job, in the order training does them."""
    marks = [(job.started + offset, setup)]
    by_epoch: dict[int, list[RunFolder]] = {}  # the runs written after each trained epoch (before the first: 0)
    trained = [line.epoch for line in job.epochs]
    for run in sorted(runs, key=lambda run: run.manifest.get("finished_unix", 0)):
        written_after = max([epoch for epoch in trained if epoch <= run.manifest["parameters"]["epochs"]], default=0)
        by_epoch.setdefault(written_after, []).append(run)
    marks += _materialized(by_epoch.get(0, []))
    for index, line in enumerate(job.epochs):
        epoch, seconds, fit_end = line.epoch, job.fit_seconds(line, folder), line.clock + offset
        fit_start, model = fit_end - seconds, later.get(job.model)
        tracing = max(0.0, seconds - statistics.median(model["epoch"])) if index == 0 and model else 0.0
        if folder and epoch in folder.validation:
            validation, ended = _validation_span(folder, epoch, fit_end, seconds)
            in_training = tracing if not model or not model["training"] else min(
                max(0.0, validation - fit_start - statistics.median(model["training"])), tracing)
            in_training = min(in_training, validation - fit_start)
            marks += _traced(fit_start, in_training, "training")
            marks += _traced(validation, min(tracing - in_training, ended - validation), "validation")
            marks.append((ended, "epoch records"))
        else:
            marks += _traced(fit_start, tracing, "training") + [(fit_end, "epoch records")]
        marks += _materialized(by_epoch.get(epoch, []))
    if not runs and job.epochs:  # no run folder says where the records end and the prediction begins
        marks.append((job.epochs[-1].clock + offset, "after training, unsplit"))
    return marks


def _traced(start: float, tracing: float, part: str) -> list[tuple[float, str]]:
    """Marks for `part` from `start`, its first `tracing` seconds as tracing."""
    return [(start, "tracing (est.)"), (start + tracing, part)] if tracing > 0 else [(start, part)]


def _materialized(runs: list[RunFolder]) -> list[tuple[float, str]]:
    """Marks for each run folder written: its manifest's time taken, then its predictions written."""
    marks = []
    for run in runs:
        marks.append((run.manifest["finished_unix"], "test prediction"))
        if run.predictions_written is not None:
            marks.append((run.predictions_written, "hand-over"))
    return marks


def contiguous(lane: str, marks: list[tuple[float, str]], end: float, origin: float, label: str = "") -> list[Segment]:
    """Segments from each mark to the next (clamped to be in order and to end at `end`): they tile the span."""
    segments, previous = [], marks[0][0]
    for (time_point, part), following in zip(marks, [*marks[1:], (end, "")]):
        start = min(max(time_point, previous), end)
        stop = min(max(following[0], start), end)
        if stop > start:
            segments.append(Segment(lane, part, start - origin, stop - origin, label))
        previous = stop
    return segments


# ---------------------------------------------------------------------------------------------- the timeline


@dataclass
class Timeline:
    """A run's wall seconds, every lane's segments, the training jobs (one row each) and what could not be split."""

    wall: float
    segments: list[Segment]
    lanes: list[str]
    workers: int
    jobs: list[dict]
    notes: list[str]
    clock: str


def _first(events: list[Event], test) -> Event | None:
    """The first event that passes `test`, or None."""
    return next((event for event in events if test(event)), None)


def main_marks(events: list[Event], main_flow: str | None, grid: tuple[float, float] | None
               ) -> list[tuple[float, str]]:
    """(clock, part that begins) of the main process, from the server start, the flows and the stage decisions."""
    starts: list[tuple[float, str, bool]] = []  # (clock, part, ends at its last event rather than the next part)

    def add(event: Event | None, part: str, to_last_event: bool = False) -> None:
        if event is not None:
            starts.append((event.clock, part, to_last_event))

    add(_first(events, lambda event: "Starting temporary server" in event.message), "server start")
    main_events = [event for event in events if event.kind == "Flow run" and event.name == main_flow]
    add(main_events[0] if main_events else None, "data stage", True)
    first_decisions: dict[str, Event] = {}
    for event in main_events:
        if match := DECISION.match(event.message):
            first_decisions.setdefault(match.group(1), event)
    for stage, part in (("train", "grid start"), ("evaluate", "evaluation"), ("tables", "tables"),
                        ("figures", "figures"), ("champions", "champions"), ("report", "report")):
        add(first_decisions.get(stage), part, part != "grid start")
    add(_first(main_events, lambda event: event.message.startswith("cache: ")), "publishing", True)
    if grid:
        starts += [(grid[0], "waiting for grid", False), (grid[1], "between stages", False)]
    add(_first(main_events, lambda event: event.message.startswith("Finished in state")), "exit")
    starts.sort(key=lambda item: item[0])
    marks = []
    for (clock, part, to_last), following in zip(starts, [*starts[1:], None]):
        marks.append((clock, part))
        if to_last and following is not None:
            last = max(event.clock for event in events if clock <= event.clock < following[0])
            marks.append((last, "between stages"))
    return marks


def assign_lanes(jobs: list[Job], workers: int) -> list[tuple[Job, int, bool]]:
    """(job, lane index, whether its process was new) in start order. A worker thread keeps its process from lineage
    to lineage: a job runs on the lane of its process, else (a new process) on a lane of its own while there are
    fewer lanes than workers, else on the lane that fell free last before it started (a process restarted)."""
    lanes: list[tuple[int, float]] = []  # (process, clock its last job ended)
    assigned = []
    for job in sorted(jobs, key=lambda job: job.started):
        same = [index for index, (pid, _) in enumerate(lanes) if pid == job.pid]
        free = [index for index, (_, ended) in enumerate(lanes) if ended <= job.started]
        if same:
            index = same[0]
        elif len(lanes) < workers or not free:
            index = len(lanes)
            lanes.append((job.pid, job.started))
        else:
            index = max(free, key=lambda index: lanes[index][1])
        assigned.append((job, index, not same))
        lanes[index] = (job.pid, job.ended if job.ended is not None else float("inf"))
    return assigned


def worker_segments(jobs: list[Job], folders: dict[str, RunFolder], workers: int, grid: tuple[float, float],
                    offset: float, origin: float) -> tuple[list[Segment], list[dict]]:
    """The worker lanes' segments from the grid's start to its end, and one row per training job."""
    later = later_epochs(jobs, folders, offset)
    segments, rows, free = [], [], {}
    grid_start, grid_end = grid[0] + offset, grid[1] + offset
    for job, index, new_process in assign_lanes(jobs, workers):
        lane = f"worker {index + 1}"
        started = max(job.started + offset, free.get(lane, grid_start))
        ended = max(started, (job.ended if job.ended is not None else grid[1]) + offset)
        segments += contiguous(lane, [(free.get(lane, grid_start), "hand-over")], started, origin)
        folder = folders.get(job.run_id)
        runs = [folders[run] for run in {job.run_id} | {line.run_id for line in job.epochs} if run in folders]
        setup = "worker start + TF import" if new_process else "run setup"
        own = contiguous(lane, job_marks(job, folder, runs, setup, offset, later), ended, origin,
                         job.task.removeprefix("train "))
        segments += own
        free[lane] = ended
        seconds: dict[str, float] = {}
        for segment in own:
            seconds[segment.part] = round(seconds.get(segment.part, 0.0) + segment.seconds, 3)
        rows.append({"task": job.task, "model": job.model, "lane": lane, "process": job.pid, "run_id": job.run_id,
                     "started_s": round(started - origin, 3), "ended_s": round(ended - origin, 3),
                     "epochs": [line.epoch for line in job.epochs], "manifest": folder is not None,
                     "seconds": seconds})
    for lane, ended in free.items():
        segments += contiguous(lane, [(ended, "idle worker")], grid_end, origin)
    return segments, rows


def build_timeline(log_path: Path, artifacts: Path) -> Timeline:
    """The lanes and their parts, the training jobs and the notes on what could not be separated."""
    if not (artifacts / "runs").is_dir():
        raise FileNotFoundError(f"no runs/ folder under {artifacts}; expected the study's artifacts directory")
    events = read_events(log_path)
    jobs = training_jobs(events)
    run_ids = {job.run_id for job in jobs} | {line.run_id for job in jobs for line in job.epochs}
    folders = {run_id: folder for run_id in run_ids if (folder := RunFolder.read(artifacts, run_id)) is not None}
    offset, clock = clock_offset(jobs, folders, log_path)
    began = _first(events, lambda event: event.kind == MARKER and event.message.startswith("process started"))
    exited = _first(events, lambda event: event.kind == MARKER and event.message.startswith("process exited"))
    if (began and began.clock > min(event.clock for event in events)) or (
            exited and exited.clock < max(event.clock for event in events)):
        raise ValueError(f"{log_path}: the '{MARKER} - process started/exited' lines do not enclose the study's "
                         "lines; expected a log written by --run")
    origin = (began.clock if began else events[0].clock) + offset
    end = (exited.clock if exited else events[-1].clock) + offset
    main_flow = _first(events, lambda event: event.kind == "Flow run" and event.message.startswith("Beginning flow run"))
    subflow = _first(events, lambda event: event.kind == "Flow run" and "Beginning subflow run" in event.message
                     and "'train-grid'" in event.message)
    grid_end = subflow and _first(events, lambda event: event.kind == "Flow run" and event.name == subflow.name
                                  and event.message.startswith("Finished in state"))
    grid = (subflow.clock, grid_end.clock) if subflow and grid_end else None
    if grid is None and jobs:  # a log cut short: the grid as far as its jobs go
        grid = (min(job.started for job in jobs), max(job.ended or job.started for job in jobs))
    marks = [(clock_time + offset, part) for clock_time, part in
             main_marks(events, main_flow.name if main_flow else None, grid)]
    segments = contiguous(MAIN, [*([(origin, "start-up")] if began else []), *marks] or [(origin, "between stages")],
                          end, origin)
    parallel = _first(events, lambda event: bool(PARALLEL.match(event.message)))
    workers = int(PARALLEL.match(parallel.message).group(1)) if parallel else 0
    rows: list[dict] = []
    if jobs:
        worker_parts, rows = worker_segments(jobs, folders, workers, grid, offset, origin)
        segments += worker_parts
    lanes = sorted({segment.lane for segment in segments if segment.lane != MAIN},
                   key=lambda lane: int(lane.split()[1]))
    notes = _notes(began is not None, jobs, folders, later_epochs(jobs, folders, offset), events, rows)
    return Timeline(end - origin, segments, [MAIN, *lanes], len(lanes), rows, notes, clock)


def _notes(marked: bool, jobs, folders, later, events, job_rows) -> list[str]:
    """What the evidence could not separate in this run, said in the run's own terms."""
    notes = []
    if not marked:
        notes.append("The log has no start and exit lines of this script's: the interpreter's start, imports and "
                     "option checks before the first log line and the exit after the last are not counted (run "
                     "with --run to measure them); the wall time here is the first to the last log line.")
    notes.append("Server start includes the flow run's creation: nothing is logged between them.")
    ahead = _first(events, lambda event: bool(AHEAD.search(event.message)))
    if ahead:
        pids = AHEAD.search(ahead.message).group(1)
        notes.append(f"The training process(es) {pids} were started ahead, before the server: their interpreter start "
                     "and TensorFlow import ran beside the start-up, server start and data stage, on the cores those "
                     "left idle, and are no part of their own. Worker start + TF import holds what was left of them "
                     "when the grid began, and the first lineage's setup.")
    setups = {}
    for row in job_rows:
        for part in ("worker start + TF import", "run setup"):
            if part in row["seconds"]:
                setups.setdefault((part, row["model"]), []).append(row["seconds"][part])
    for (part, model), seconds in sorted(setups.items()):
        reused = setups.get(("run setup", model))
        if part == "worker start + TF import" and reused:
            left = statistics.median(seconds) - statistics.median(reused)
            estimate = (f"what was left of the process start and the TensorFlow import when the grid began was about "
                        f"{max(left, 0.0):.1f} s{' (none, within the setups spread)' if left <= 0 else ''}" if ahead
                        else f"process start and the TensorFlow import were about {left:.1f} s")
            notes.append(f"Worker start + TF import for {model}: {statistics.median(seconds):.1f} s; a reused "
                         f"worker's setup of the same model took {statistics.median(reused):.1f} s, so {estimate} "
                         "(an estimate: the worker's 'ready' message is not logged).")
    if any(part == "worker start + TF import" for part, _ in setups) and not any(
            part == "run setup" for part, _ in setups):
        notes.append("Worker start + TF import also holds the first lineage's setup: no worker was reused, so "
                     "nothing to compare with; the worker's 'ready' message (TensorFlow imported) is not logged.")
    untraced = sorted({job.model for job in jobs if job.model not in later and job.epochs})
    if untraced:
        notes.append(f"Tracing is left inside the first epoch's training for {', '.join(untraced)}: no later epoch of "
                     "the same model in this run to compare with (the estimate needs a job of 2 or more epochs).")
    if later:
        notes.append("Tracing (est.) is a job's first epoch less the median later epoch of the same model in this run "
                     "(" + ", ".join(f"{model} {statistics.median(values['epoch']):.1f} s" for model, values in
                                     sorted(later.items())) + "): it also holds first-call warm-up, and the "
                     "TensorBoard writers' and the recorder's first use. The recorder's own tracing (its first gradient"
                     " probe) is in the setup, the prediction's in test prediction.")
    epochs = sum(len(job.epochs) for job in jobs)
    missing = sum(1 for job in jobs for line in job.epochs
                  if job.run_id not in folders or line.epoch not in folders[job.run_id].validation)
    if epochs > missing:
        notes.append(f"Validation starts are known to the whole second (the event file's first record): each of the "
                     f"{epochs - missing} epochs' training/validation split is +-0.5 s.")
    if missing:
        notes.append(f"{missing} of {epochs} epochs have no validation event file: their validation stays in training.")
    if epochs:
        notes.append("Epoch records are not split further: no time is recorded between the gradient-norm probe, "
                     "the kernel histogram, the model save and the checkpoint copy.")
    if sum("predicted from model.keras" in event.message for event in events):
        notes.append("Some evaluations predicted again in a fresh TensorFlow process: their prediction is inside "
                     "evaluation, not test prediction.")
    if any(not row["manifest"] for row in job_rows):
        notes.append(f"{sum(not row['manifest'] for row in job_rows)} training job(s) have no readable run folder "
                     "(failed, removed, or another artifacts folder given): their fits come from the log's epoch "
                     "lines (0.1 s), validation stays in training, and what follows the last epoch is one part.")
    notes.append("Between stages right after the grid holds the workers' shut-down and the evaluation keys: not "
                 "separable from the log.")
    return notes


def part_table(timeline: Timeline) -> list[dict]:
    """Per part: wall seconds (workers' parts weighted 1/N during the grid), share of wall, lane seconds."""
    rows = []
    for part in PARTS:
        segments = [segment for segment in timeline.segments if segment.part == part]
        if not segments:
            continue
        lane_seconds = sum(segment.seconds for segment in segments)
        if part == "waiting for grid" and timeline.workers:
            wall = 0.0
        else:
            wall = sum(segment.seconds / (1 if segment.lane == MAIN else timeline.workers) for segment in segments)
        rows.append({"part": part, "wall_s": round(wall, 3), "share": round(wall / timeline.wall, 4),
                     "lane_s": round(lane_seconds, 3), "lanes": len({segment.lane for segment in segments}),
                     "holds": PARTS[part]})
    return rows


# ---------------------------------------------------------------------------------------------- outputs


def plot_timeline(timeline: Timeline, title: str):
    """A horizontal bar per lane (main process on top), coloured by part, each training job named above it."""
    from mnist_models.plots.canvas import new_figure

    figure = new_figure((13, 1.6 + 0.75 * len(timeline.lanes)))
    axes = figure.add_subplot()
    for row, lane in enumerate(timeline.lanes):
        y = len(timeline.lanes) - 1 - row
        for segment in (segment for segment in timeline.segments if segment.lane == lane):
            axes.broken_barh([(segment.start, segment.seconds)], (y - 0.3, 0.6), facecolors=COLOURS[segment.part],
                             edgecolor="white", linewidth=0.3)
        for order, job in enumerate(job for job in timeline.jobs if job["lane"] == lane):
            axes.text(job["started_s"], y + 0.31 + 0.14 * (order % 2), job["task"].removeprefix("train "),
                      fontsize=6, va="bottom", clip_on=True)  # staggered: short jobs' names do not overlap
    processes = {lane: sorted({job["process"] for job in timeline.jobs if job["lane"] == lane}) for lane in timeline.lanes}
    names = [lane + ("\n(process " + ", ".join(map(str, processes[lane])) + ")" if processes[lane] else "")
             for lane in timeline.lanes]
    axes.set_yticks(range(len(timeline.lanes)), list(reversed(names)))
    axes.set_xlim(0, timeline.wall)
    axes.set_xlabel("seconds since the study's process started" if any(
        segment.part == "start-up" for segment in timeline.segments) else "seconds since the first log line")
    axes.set_title(title, fontsize=10)
    shown = [part for part in PARTS if any(segment.part == part for segment in timeline.segments)]
    from matplotlib.patches import Patch

    axes.legend(handles=[Patch(facecolor=COLOURS[part], edgecolor="#999999", label=part) for part in shown],
                loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.05 / len(timeline.lanes)), ncol=6, fontsize=7,
                frameon=False)
    return figure


def write_outputs(timeline: Timeline, output: Path, sources: dict, machine: dict, baseline: dict | None = None) -> dict:
    """OUTPUT.json, OUTPUT.png and OUTPUT.md (with `baseline`, an earlier timeline's JSON, beside each part);
    returns the JSON payload."""
    from mnist_models.plots.saving import save_figure

    rows = part_table(timeline)
    payload = {"machine": machine, **sources, "wall_s": round(timeline.wall, 3), "workers": timeline.workers,
               "clock_alignment": timeline.clock, "parts": rows, "jobs": timeline.jobs, "notes": timeline.notes,
               "lanes": {lane: [asdict(segment) for segment in timeline.segments if segment.lane == lane]
                         for lane in timeline.lanes}}
    if baseline is not None:
        payload["baseline"] = {"from": sources["baseline"], "commit": baseline.get("commit"),
                               "wall_s": baseline["wall_s"],
                               "parts": {row["part"]: row["wall_s"] for row in baseline["parts"]}}
    _common.write_json(output.with_suffix(".json"), payload)
    save_figure(plot_timeline(timeline, f"Where {timeline.wall:.1f} s of one study run go "
                                        f"({timeline.workers} training worker(s))"), output.with_suffix(".png"))
    before = payload.get("baseline", {}).get("parts")
    compared = ([] if before is None else [{"part": part, "wall_s": 0.0, "share": 0.0, "lane_s": 0.0, "lanes": 0,
                                            "holds": PARTS.get(part, "")}
                                           for part in before if part not in {row["part"] for row in rows}])

    def baseline_cells(part: str | None, seconds: float) -> list[str]:
        if before is None:
            return []
        earlier = sum(before.values()) if part is None else before.get(part, 0.0)
        return [f"{earlier:.1f}", f"{seconds - earlier:+.1f}"]

    table = _common.markdown_table(
        ["part", "wall s", *([] if before is None else ["baseline wall s", "change s"]), "share of wall", "lane s",
         "lanes", "holds"],
        [[row["part"], f"{row['wall_s']:.1f}", *baseline_cells(row["part"], row["wall_s"]),
          f"{100 * row['share']:.1f}%", f"{row['lane_s']:.1f}", row["lanes"], row["holds"]] for row in rows + compared]
        + [["total", f"{sum(row['wall_s'] for row in rows):.1f}",
            *baseline_cells(None, sum(row["wall_s"] for row in rows)),
            f"{100 * sum(row['share'] for row in rows):.1f}%", f"{sum(row['lane_s'] for row in rows):.1f}",
            len(timeline.lanes), ""]])
    shown = [part for part in PARTS if any(part in job["seconds"] for job in timeline.jobs)]
    jobs = _common.markdown_table(
        ["job", "lane", "process", "start s", *shown, "total s"],
        [[job["task"].removeprefix("train "), job["lane"], job["process"], f"{job['started_s']:.1f}",
          *(f"{job['seconds'].get(part, 0):.1f}" for part in shown), f"{job['ended_s'] - job['started_s']:.1f}"]
         for job in timeline.jobs]) if timeline.jobs else "(no training job in this log)"
    command = " ".join(sources["command"]) if sources.get("command") else "not recorded (an existing log analysed)"
    lines = [
        "# Where one study run's wall time goes", "",
        (f"Machine: {machine['cpu_model']}, {machine['nproc']} cores, {machine['memory_gib']} GiB; Python "
         f"{machine['python']}; " + ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
         + f"; {machine['date']}; load average when this script started {machine['load_average_at_start']}."), "",
        (f"Study command: `{command}`" + (f" (measured end to end: {sources['measured_wall_s']:.1f} s; load average "
                                          f"before {sources['load_average_before']}, after "
                                          f"{sources['load_average_after']})" if "measured_wall_s" in sources else "")),
        f"Log: `{sources['log']}`; artifacts: `{sources['artifacts']}`"
        + (" (a temporary folder, removed after the analysis)." if sources.get("artifacts_removed") else "."),
        f"Produced by: `{' '.join(sources['benchmark_command'])}`.", "",
        f"**Wall time: {timeline.wall:.1f} s**, {timeline.workers} training worker lane(s). Log clock aligned by "
        f"{timeline.clock}." + (f" Code: commit {sources['commit']}." if sources.get("commit") else ""), "",
        *([] if before is None else [
            (f"Baseline: `{sources['baseline']}`, commit {payload['baseline']['commit'] or 'not recorded'}, "
             f"{payload['baseline']['wall_s']:.1f} s on the same kind of run: this run took "
             f"{timeline.wall - payload['baseline']['wall_s']:+.1f} s "
             f"({100 * (timeline.wall / payload['baseline']['wall_s'] - 1):+.1f}%)."), ""]),
        f"![timeline]({output.with_suffix('.png').name})", "",
        "## Seconds per part", "",
        ("*wall s*: the part's share of the wall clock; while the training grid runs, each of the N worker lanes "
         "accounts for 1/N of it (the main process only waits then), so the column adds up to the wall time. "
         "*lane s*: the seconds summed over the lanes the part occurs in."), "",
        table, "",
        "## Per training job (seconds)", "", jobs, "",
        "## What the evidence can and cannot separate", "",
        *(f"- {note}" for note in timeline.notes), "",
    ]
    output.with_suffix(".md").write_text("\n".join(lines))
    return payload


# ---------------------------------------------------------------------------------------------- --run


def _mark(log, text: str) -> None:
    """A line in the log's own format (local time, as Prefect stamps its console lines) from this script."""
    log.write(f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]} | INFO    | {MARKER} - {text}\n")
    log.flush()


def run_quick_study(log_path: Path, artifacts: Path, prefect_home: Path) -> tuple[list[str], float]:
    """Run the quick profile into `artifacts` with its output captured in `log_path`; (command, wall seconds)."""
    environment = _common.subprocess_environment(prefect_home)
    warm_up = [sys.executable, str(_common.REPO_ROOT / "benchmarks" / "trivial_flow.py")]
    print("creating the fresh PREFECT_HOME's database (benchmarks/trivial_flow.py, untimed) ...", flush=True)
    completed = subprocess.run(warm_up, cwd=_common.REPO_ROOT, env=environment, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"the trivial flow failed (exit status {completed.returncode}):\n{completed.stderr[-3000:]}")
    command = [sys.executable, "flows/full_study.py", "--profile", "quick", "--artifacts-dir", str(artifacts)]
    print(f"running {' '.join(command)} ...", flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        _mark(log, f"process started: {' '.join(command)}")
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=_common.REPO_ROOT, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
        status = process.wait()
        wall = time.perf_counter() - started
        _mark(log, f"process exited (status {status})")
    if status != 0:
        raise SystemExit(f"the study failed (exit status {status}); its output is in {log_path}")
    return command, wall


def main(argv: list[str] | None = None) -> None:
    """Command line: --run or --log/--artifacts, then the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, help="the captured output of one flows/full_study.py run")
    parser.add_argument("--artifacts", type=Path, help="that run's artifacts directory")
    parser.add_argument("--run", action="store_true", help="run `flows/full_study.py --profile quick` first, into "
                        "a fresh temporary artifacts folder and PREFECT_HOME, and analyse that")
    parser.add_argument("--output", type=Path, default=_common.RESULTS_DIR / "timeline",
                        help="path without suffix of the .md, .json and .png (default: benchmarks/results/timeline)")
    parser.add_argument("--keep-temp", action="store_true", help="with --run: keep the temporary folders")
    parser.add_argument("--baseline", type=Path, help="an earlier timeline's .json (of another commit, say): its "
                        "seconds per part beside this run's")
    options = parser.parse_args(argv)
    try:
        baseline = json.loads(options.baseline.read_text()) if options.baseline else None
    except (OSError, ValueError) as error:
        parser.error(f"--baseline {options.baseline}: {error}; expected a timeline .json written by this script")
    if (options.run and (options.log or options.artifacts)) or (not options.run and not (options.log and
                                                                                       options.artifacts)):
        parser.error("give either --run, or both --log and --artifacts")
    output = options.output.with_suffix("") if options.output.suffix in (".md", ".json", ".png") else options.output
    output.parent.mkdir(parents=True, exist_ok=True)
    benchmark_command = ["python", "benchmarks/timeline.py", *(argv if argv is not None else sys.argv[1:])]
    machine, temporary = _common.machine_facts(), None
    try:
        if options.run:
            temporary = Path(tempfile.mkdtemp(prefix="timeline-"))
            (temporary / "prefect-home").mkdir()
            log_path, artifacts = output.with_suffix(".log"), temporary / "artifacts"
            load_before = _common.load_average()
            command, wall = run_quick_study(log_path, artifacts, temporary / "prefect-home")
            sources = {"command": command, "measured_wall_s": round(wall, 3), "artifacts_removed": not options.keep_temp,
                       "load_average_before": load_before, "load_average_after": _common.load_average()}
        else:
            log_path, artifacts, sources = options.log, options.artifacts, {"command": None}
        shown = log_path.resolve().relative_to(_common.REPO_ROOT) if log_path.resolve().is_relative_to(
            _common.REPO_ROOT) else log_path
        sources.update(log=str(shown), artifacts=str(artifacts), benchmark_command=benchmark_command,
                       commit=_common.git_commit(), **({"baseline": str(options.baseline)} if baseline else {}))
        try:
            timeline = build_timeline(log_path, artifacts)
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))
        payload = write_outputs(timeline, output, sources, machine, baseline)
    finally:
        if temporary is not None and not options.keep_temp:
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary is not None:
            print(f"kept {temporary}")
    print(output.with_suffix(".md").read_text())
    print(f"wrote {output}.md, .json, .png; parts add up to {sum(row['wall_s'] for row in payload['parts']):.1f} s "
          f"of {payload['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
