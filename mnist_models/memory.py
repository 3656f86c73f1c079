"""This process's peak resident memory: what a training run's manifest records and what sizes the pool.

Apart from the worker processes (mnist_models.isolation), so that training imports only this.
"""

from __future__ import annotations

import resource


def peak_memory_mb() -> float:
    """This process's peak resident memory, in MiB, since it started or since the last `reset_peak_memory`."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def reset_peak_memory() -> None:
    """Start measuring the peak resident memory afresh (Linux: /proc/self/clear_refs); elsewhere a no-op."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass
