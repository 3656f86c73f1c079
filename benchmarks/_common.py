"""What the benchmark scripts share: paths, the subprocess environment, the data stage, machine facts.

Imported by the scripts in this folder as `import _common` (a script's own folder is on sys.path).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_MIRROR = (REPO_ROOT / ".." / "shared" / "datasets" / "mnist").resolve()


def mirror() -> str:
    """MNIST_MIRROR if set, else the offline copy beside the repository (../shared/datasets/mnist)."""
    return os.environ.get("MNIST_MIRROR", "").strip() or str(DEFAULT_MIRROR)


def subprocess_environment(prefect_home: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The environment every benchmarked subprocess gets: local mirror, quiet TF, no Prefect telemetry."""
    environment = dict(os.environ)
    environment.update(
        MNIST_MIRROR=mirror(),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    if prefect_home is not None:
        environment["PREFECT_HOME"] = str(prefect_home)
        environment.pop("PREFECT_API_URL", None)  # every flow starts its own temporary server
        # A fresh PREFECT_HOME's first server creates its database: over Prefect's 20 s default on a slow CPU
        # (an AMD EPYC without AVX-512 took longer on 2026-12-02). The study's own server waits 120 s too.
        environment.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return environment


def ensure_parquet(artifacts_dir: Path, environment: dict[str, str]) -> Path:
    """Path of the MNIST training Parquet under artifacts_dir, running the data stage first if it is missing."""
    train_path = artifacts_dir / "data" / "mnist" / "train.parquet"
    if train_path.exists():
        return train_path
    print(f"{train_path} does not exist; running the data stage (flows/prepare_data.py) first ...", flush=True)
    command = [sys.executable, str(REPO_ROOT / "flows" / "prepare_data.py"), "--artifacts-dir", str(artifacts_dir)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
    if completed.returncode != 0 or not train_path.exists():
        raise SystemExit(
            f"the data stage failed (exit status {completed.returncode}); MNIST_MIRROR={environment['MNIST_MIRROR']}\n"
            f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
        )
    return train_path


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (other work on the machine shows up here)."""
    try:
        return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict:
    """Cores, CPU, memory, versions and date: enough to tell whether two results are comparable."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("tensorflow-cpu", "tensorflow", "keras", "prefect", "numpy", "pyarrow"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "versions": versions,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average_at_start": load_average(),
    }


def summarize(seconds: list[float]) -> dict:
    """Best, median and every timing of a repeated measurement."""
    return {"best_s": min(seconds), "median_s": statistics.median(seconds), "all_s": seconds}


def write_json(path: Path, payload: dict) -> Path:
    """Write payload as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A small Markdown table (also readable printed to a terminal)."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def measure_together(command: list[str], copies: int, environment: dict[str, str], label: str) -> list[float]:
    """Start `copies` processes of `command` together; each prints a number as its last stdout line.

    Returns those numbers (rounded to ms), one per process; a process that fails ends the benchmark with
    `label`, its exit status and the end of its error output.
    """
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
                 for _ in range(copies)]
    outputs = [process.communicate() for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        if process.returncode:
            raise SystemExit(f"{label}: a measuring process exited {process.returncode}\n{stderr[-2000:]}")
    return [round(json.loads(stdout.strip().splitlines()[-1]), 3) for stdout, _ in outputs]


def run_manifests(artifacts: Path) -> list[dict]:
    """Every run's manifest.json under ARTIFACTS/runs, in run-id order."""
    return [json.loads(path.read_text()) for path in sorted((artifacts / "runs").glob("*/manifest.json"))]


def run_study(arguments: list[str], log_name: str, what: str, append: bool = False) -> float:
    """Run `flows/full_study.py ARGUMENTS` in the repository with the benchmarks' environment, its output written (or
    appended) to benchmarks/results/logs/LOG_NAME; its wall time in seconds. A failure ends the benchmark naming
    `what` and the log."""
    command = [sys.executable, str(REPO_ROOT / "flows" / "full_study.py"), *arguments]
    log = RESULTS_DIR / "logs" / log_name
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(command), ">>" if append else ">", log, flush=True)
    started = time.perf_counter()
    with log.open("a" if append else "w") as output:
        completed = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_environment(), stdout=output,
                                   stderr=subprocess.STDOUT)
    if completed.returncode:
        raise SystemExit(f"{what} failed (exit status {completed.returncode}); see {log}")
    return time.perf_counter() - started


def timed(function, *arguments):
    """(seconds, result) of one call, measured with perf_counter."""
    started = time.perf_counter()
    result = function(*arguments)
    return time.perf_counter() - started, result


def git_commit() -> str | None:
    """The repository's commit (short), with "+changes" when tracked files outside benchmarks/results differ from it;
    None outside git."""
    def git(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True)

    try:
        commit = git("rev-parse", "--short", "HEAD")
        if commit.returncode != 0:
            return None
        # The benchmarks' own results (a log written during the run) are not the code measured.
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results").stdout.strip()
    except OSError:
        return None
    return commit.stdout.strip() + ("+changes" if changed else "")
