"""Where training processes run: on a machine with NVIDIA GPUs several per GPU, each pinned to one; on a Dask
cluster, on the cores its workers lend.

The study's models are small: one training leaves a large GPU mostly idle, so several training
processes share each GPU, each seeing only its own (`CUDA_VISIBLE_DEVICES`) and growing its memory
as needed (`TF_FORCE_GPU_ALLOW_GROWTH`). Pure functions over what `nvidia-smi` reports, so that the
placement is tested on machines without a GPU.

A Dask worker lends its cores to the study's training as a Dask resource (`dask worker --nthreads 4 --resources
cores=4`): the planner shares them among the lineages (`capacity.thread_shares`) and each training task asks for
as many as its process has threads (`dask_resources`), so the scheduler starts it only where they are free.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

GPU_RUN_MB = 2048  # a training process's share of GPU memory, with memory growth on (the study's ResNet needs less)
MAX_RUNS_PER_GPU = 8  # beyond this, small models contend for the GPU's streaming multiprocessors


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi lists it."""

    index: int
    name: str
    memory_mb: int


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise ValueError(f"unexpected nvidia-smi line {line!r}; expected 'index, name, memory in MiB'")
        gpus.append(Gpu(int(parts[0]), parts[1], int(parts[2])))
    return gpus


def visible_gpus() -> list[Gpu]:
    """The machine's NVIDIA GPUs, or none when nvidia-smi is missing or fails (a CPU machine)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        completed = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total",
                                    "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(completed.stdout) if completed.returncode == 0 else []


def runs_per_gpu(gpu: Gpu, run_mb: float = GPU_RUN_MB, limit: int = MAX_RUNS_PER_GPU) -> int:
    """How many training processes share `gpu`: as many as its memory holds, at most `limit`, at least one."""
    return max(1, min(limit, int(gpu.memory_mb // run_mb)))


def gpu_slots(gpus: list[Gpu], runs: int, run_mb: float = GPU_RUN_MB, limit: int = MAX_RUNS_PER_GPU) -> list[int]:
    """The GPU index of each parallel training slot, spread round-robin so the GPUs fill evenly."""
    capacity = {gpu.index: runs_per_gpu(gpu, run_mb, limit) for gpu in gpus}
    slots: list[int] = []
    while len(slots) < runs and any(capacity.values()):
        for gpu in gpus:
            if capacity[gpu.index] and len(slots) < runs:
                slots.append(gpu.index)
                capacity[gpu.index] -= 1
    return slots


def slot_environment(gpu_index: int | None) -> dict[str, str]:
    """Environment of a training process: pinned to one GPU with memory growth, or to none (CPU)."""
    if gpu_index is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": str(gpu_index), "TF_FORCE_GPU_ALLOW_GROWTH": "true"}


DASK_CORES = "cores"  # the Dask worker resource that lends a worker's cores to training tasks


class DaskUnreachableError(RuntimeError):
    """No Dask scheduler answered at the address the study was given."""


def dask_worker_cores(address: str, timeout: float = 10.0) -> tuple[int, ...]:
    """The cores each worker of the Dask cluster at `address` lends to training (its `cores` resource), 0 for a
    worker that lends none; empty while no worker is connected."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout, set_as_default=False) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
    except (OSError, TimeoutError) as error:
        raise DaskUnreachableError(f"no Dask scheduler answered at {address} within {timeout:g} s ({error}); "
                                   "expected a running `dask scheduler` there") from None
    return tuple(int((worker.get("resources") or {}).get(DASK_CORES, 0)) for worker in workers)


def lends_cores(dask_cores: Sequence[int]) -> bool:
    """Whether the training tasks can ask for cores: some worker is connected, and every one lends some (a task
    asking for cores would never start on a worker that lends none)."""
    return bool(dask_cores) and all(count > 0 for count in dask_cores)


def dask_resources(threads: int) -> dict[str, dict[str, int]]:
    """The Dask annotation of a training task whose process runs `threads` TensorFlow threads."""
    return {"resources": {DASK_CORES: threads}}
