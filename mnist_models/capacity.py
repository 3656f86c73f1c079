"""What this machine offers the training runs (cores, memory, a run's measured peak) and how they share it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mnist_models.config import StudyConfig
from mnist_models.layout import ArtifactsLayout
from mnist_models.placement import lends_cores
from mnist_models.runs import recorded_manifests

DEFAULT_RUN_MEMORY_MB = 1536.0  # a run's peak before any manifest has measured one (ResNet: about 1 GiB)


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


def threads_per_worker(config: StudyConfig, lineages: int, cores: int, gpu_slots: int = 0) -> int:
    """TensorFlow threads per training process when every process gets the same: the `threads` option, else 1 on a
    Dask cluster, else the cores shared among the study's lineages that could train at once (a lineage is one
    process, however many of its runs it writes). Memory, which changes from minute to minute, bounds how many
    train at once, never their thread count."""
    if config.threads:
        return config.threads
    if config.dask_address:
        return 1
    return max(1, cores // max(1, min(config.workers or gpu_slots or cores, lineages)))


def thread_shares(config: StudyConfig, lineage_costs: Sequence[float], cores: int, gpu_slots: int = 0,
                  dask_cores: Sequence[int] = ()) -> list[int]:
    """TensorFlow threads of each lineage's training process, decided before any decision on reuse (the count is in
    every run's key). `lineage_costs` are their expected seconds on one thread.

    Where every lineage trains at once and cores are left over (a 16-core machine and the study's 13 lineages), the
    spare cores go one at a time to the lineage that would finish last (the critical path: the ResNet 10 + 20-epoch
    lineage first), not evenly, so that the last lineage ends sooner. Otherwise every process gets the same count
    (`threads_per_worker`): lineages that queue for a process cannot be told apart before they start.

    On a Dask cluster `dask_cores` are the cores each worker lends to training (`dask worker --nthreads N
    --resources cores=N`, `placement.dask_worker_cores`): the same rule shares their sum, and only as long as every
    lineage still fits on a worker beside the others at once (a task runs on one worker, which runs it when its
    cores are free). A cluster where some worker lends none keeps one thread per task.
    """
    lending = bool(config.dask_address) and lends_cores(dask_cores)
    machines = list(dask_cores) if lending else [cores]
    cores = sum(machines)
    even = threads_per_worker(config, len(lineage_costs), cores, gpu_slots)
    all_at_once = len(lineage_costs) <= (cores if lending else config.workers or cores)
    if (config.threads or (config.dask_address and not lending) or gpu_slots or not all_at_once
            or len(lineage_costs) >= cores):
        return [even] * len(lineage_costs)
    shares = [1] * len(lineage_costs)
    while True:  # a core to the lineage that would end last; to the next one where it can have no more
        for index in sorted(range(len(shares)), key=lambda index: (-lineage_costs[index] / shares[index], index)):
            shares[index] += 1
            if fits(shares, machines):
                break
            shares[index] -= 1
        else:
            return shares


def fits(shares: Sequence[int], machines: Sequence[int]) -> bool:
    """Whether processes of `shares` threads all run at once on `machines` (their cores), first fit by size."""
    free = sorted(machines, reverse=True)
    for share in sorted(shares, reverse=True):
        machine = next((index for index, room in enumerate(free) if room >= share), None)
        if machine is None:
            return False
        free[machine] -= share
    return True
