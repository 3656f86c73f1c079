"""Capacity: how many runs train at once on this machine's cores and memory, on how many threads each."""

import pytest

from mnist_models.atomic_files import write_json
from mnist_models.capacity import (DEFAULT_RUN_MEMORY_MB, Capacity, check_workers, fits, machine_capacity,
                                   parallel_runs, thread_shares, threads_per_worker)
from mnist_models.layout import ArtifactsLayout
from tests.mnist_models.test_planning import config


@pytest.mark.parametrize(("workers", "runs", "cores", "memory_mb", "parallel", "threads"), [
    (None, 14, 2, 24_000, 2, 1), (None, 1, 2, 24_000, 1, 2), (1, 14, 2, 24_000, 1, 2), (4, 3, 8, 24_000, 3, 2),
    (None, 0, 2, 24_000, 1, 2), (None, 14, 8, 3_000, 2, 1), (None, 14, 8, 500, 1, 1), (None, 2, 8, 500, 1, 4)])
def test_cores_and_memory_bound_the_runs_that_train_at_once(workers, runs, cores, memory_mb, parallel, threads):
    """Memory bounds how many train at once, never their threads: the count is in each run's key, and free memory
    changes from minute to minute."""
    capacity = Capacity(cores=cores, available_mb=memory_mb, run_mb=1500)
    study = config(workers=workers)
    assert parallel_runs(study, runs, capacity) == parallel
    assert threads_per_worker(study, runs, cores) == threads
    assert threads_per_worker(config(dask_address="tcp://x:8786"), runs, cores) == 1
    assert threads_per_worker(config(threads=3, dask_address="tcp://x:8786"), runs, cores) == 3


def test_more_workers_than_memory_holds_is_refused_with_the_numbers():
    capacity = Capacity(cores=2, available_mb=3_000, run_mb=1_000)
    check_workers(config(workers=3), capacity)
    with pytest.raises(ValueError, match=r"invalid workers: 4 parallel runs do not fit this machine \(2 core\(s\), "
                                         r"2.9 GiB available at about 1000 MiB per run \(room for 3\)\); expected at most 3"):
        check_workers(config(workers=4), capacity)


def test_a_run_s_memory_comes_from_earlier_manifests(tmp_path):
    layout = ArtifactsLayout.at(tmp_path)
    assert machine_capacity(layout).run_mb == DEFAULT_RUN_MEMORY_MB
    for name, peak in (("a", 800.0), ("b", 1200.0)):
        write_json(layout.run(name).manifest, {"peak_memory_mb": peak})
    capacity = machine_capacity(layout)
    assert capacity.run_mb == 1500.0 and capacity.cores >= 1 and capacity.available_mb > 0


def test_threads_follow_the_lineages_that_train_not_the_runs():
    """The ResNet 10/20 lineage alone: two runs, one process, both cores."""
    assert threads_per_worker(config(), 1, 2) == 2
    assert threads_per_worker(config(), 2, 2) == 1




@pytest.mark.parametrize(("costs", "cores", "shares"), [
    ([450, 420, 225, 225, 100], 8, [3, 2, 1, 1, 1]),  # 3 spare cores: 450 -> 225, 420 -> 210, then 225 -> 150
    ([450, 100], 8, [6, 2]),  # 450/6 = 75 < 100/1, then 100/2 = 50 < 450/7: the last finishes as early as it can
    ([100, 100, 100], 8, [3, 3, 2]),  # equal lineages: every core used, the first in line first
    ([100, 100], 4, [2, 2]), ([100], 2, [2]),  # as the even rule
    ([100, 100, 100], 2, [1, 1, 1]),  # more lineages than cores: nothing spare
])
def test_spare_cores_go_one_at_a_time_to_the_lineage_that_would_end_last(costs, cores, shares):
    assert thread_shares(config(), costs, cores) == shares


DASK = config(dask_address="tcp://scheduler:8786")


@pytest.mark.parametrize(("costs", "lent", "shares"), [
    ([450, 420, 225, 100], [4, 4], [3, 2, 2, 1]),  # the 8 lent cores shared as on one 8-core machine: 3+1 | 2+2
    ([450, 440, 430], [4, 4], [4, 2, 2]),  # 3, 3, 2 would leave one lineage waiting: every lineage fits at once
    ([450, 100], [2] * 8, [2, 2]),  # no lineage gets more cores than one worker lends; the rest stay free
    ([450, 100], [4, 0], [1, 1]),  # a worker that lends none: one thread per task, as before
    ([450, 100], [], [1, 1]),  # no worker connected when planned
    ([450, 420, 225], [1, 1], [1, 1, 1]),  # more lineages than lent cores: they queue, one thread each
])
def test_a_dask_cluster_shares_the_cores_its_workers_lend(costs, lent, shares):
    assert thread_shares(DASK, costs, cores=2, dask_cores=lent) == shares
    assert fits(shares, lent or [1] * len(shares)) or len(costs) > sum(lent)


def test_lent_cores_count_only_on_dask_and_threads_still_win():
    assert thread_shares(config(), [450, 100], cores=2, dask_cores=[8, 8]) == [1, 1]  # this machine's 2 cores
    assert thread_shares(config(threads=3, dask_address="tcp://scheduler:8786"), [450, 100], cores=2,
                         dask_cores=[8]) == [3, 3]


def test_processes_fit_machines_first_fit_by_size():
    assert fits([3, 1, 2, 2], [4, 4]) and not fits([3, 3, 2], [4, 4]) and not fits([5], [4, 4])
    assert fits([], [1]) and fits([2, 2], [4]) and not fits([1, 1], [1])
