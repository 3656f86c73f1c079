"""How the training grid of a finished study used its workers, and how the old ordering would have.

Run:   python benchmarks/schedule.py ARTIFACTS_DIR [--workers 2]
Makes: benchmarks/results/schedule.md (and prints it)

Measured: each training job's start and end come from its runs' manifests (`started_unix`,
`finished_unix`); jobs are put back on the worker slots in start order, and the idle time at the
end is, summed over slots, the time between a slot's last job ending and the grid's end.
Simulated: the same jobs' measured seconds replayed on the same number of workers under (a) the
old plan (one job per run, the 14 runs ordered by the fixed EPOCH_COST constants, the 10-epoch
ResNet sweep run trained separately from the 20-epoch gradient run) and (b) this plan (lineages,
longest first by this machine's measured epoch times).
"""

from __future__ import annotations

import argparse
import heapq
from pathlib import Path

import _common

from mnist_models.planning import EPOCH_COST


def measured_idle(manifests: list[dict], workers: int) -> tuple[float, float]:
    """(grid wall seconds, worker idle seconds at the end), from the jobs' recorded start and end."""
    jobs: dict[tuple, tuple[float, float]] = {}
    for manifest in manifests:
        key = (manifest["lineage"], manifest["started_unix"])
        start, end = jobs.get(key, (manifest["started_unix"], manifest["finished_unix"]))
        jobs[key] = (start, max(end, manifest["finished_unix"]))
    slots = [0.0] * workers
    for start, end in sorted(jobs.values()):
        slot = min(range(workers), key=lambda index: slots[index])
        slots[slot] = end
    began = min(start for start, _ in jobs.values())
    finished = max(slots)
    return finished - began, sum(finished - last for last in slots)


def simulate(durations: list[float], workers: int) -> tuple[float, float]:
    """(makespan, idle at the end) of jobs started in the given order on `workers` free-as-they-go slots."""
    slots = [0.0] * workers
    heapq.heapify(slots)
    for duration in durations:
        heapq.heappush(slots, heapq.heappop(slots) + duration)
    makespan = max(slots)
    return makespan, sum(makespan - end for end in slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    manifests = [manifest for manifest in _common.run_manifests(options.artifacts) if "started_unix" in manifest]
    wall, idle = measured_idle(manifests, options.workers)
    seconds = {manifest["run_id"]: sum(manifest["epoch_seconds"]) for manifest in manifests}
    per_epoch = {manifest["run_id"]: manifest["epoch_seconds"] for manifest in manifests}
    # (a) the old plan: every run trained from scratch, ordered by EPOCH_COST x epochs.
    old_runs = []
    for manifest in manifests:
        epochs = manifest["parameters"]["epochs"]
        run_seconds = sum(per_epoch[manifest["run_id"]][:epochs])
        old_runs.append((EPOCH_COST.get(manifest["parameters"]["model"], 1.0) * epochs, run_seconds))
    old = simulate([duration for _, duration in sorted(old_runs, key=lambda item: -item[0])], options.workers)
    # (b) this plan: one job per lineage (its longest run), longest measured first.
    lineages: dict[str, float] = {}
    for manifest in manifests:
        lineages[manifest["lineage"]] = max(lineages.get(manifest["lineage"], 0.0), seconds[manifest["run_id"]])
    new = simulate(sorted(lineages.values(), reverse=True), options.workers)
    machine = _common.machine_facts()
    lines = [
        f"# The training grid's schedule on {options.workers} workers ({options.artifacts.name})", "",
        f"Machine: {machine['cpu_model']}, {machine['nproc']} cores. Training seconds from the runs' manifests.", "",
        "| plan | grid seconds | idle seconds at the end (all workers) |", "|---|---|---|",
        f"| measured, this run (lineages, calibrated order) | {wall:.0f} | {idle:.0f} |",
        f"| simulated: old plan (14 separate runs, fixed EPOCH_COST order) | {old[0]:.0f} | {old[1]:.0f} |",
        f"| simulated: this plan (lineages, measured order) | {new[0]:.0f} | {new[1]:.0f} |",
        "", f"{len(manifests)} runs in {len(lineages)} training jobs; training seconds summed over runs' own epochs: "
        f"old {sum(duration for _, duration in old_runs):.0f}, lineages {sum(lineages.values()):.0f}.",
    ]
    text = "\n".join(lines) + "\n"
    (_common.RESULTS_DIR / "schedule.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
