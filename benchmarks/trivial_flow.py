"""Baseline for the cached-rerun benchmark: the smallest Prefect flow, one task, nothing else.

Run:   python benchmarks/trivial_flow.py
Time:  about 8-9 s on 2 cores, nearly all of it Prefect starting its temporary local server
       (no PREFECT_API_URL set); benchmarks/training_speed.py times it as a subprocess.
"""

from prefect import flow, task


@task
def add_one(number: int) -> int:
    """The one task: trivial work, so only Prefect's own cost is measured."""
    return number + 1


@flow(name="trivial-flow")
def trivial_flow(number: int = 1) -> int:
    """Run the one task and return its result."""
    return add_one(number)


if __name__ == "__main__":
    print(trivial_flow())
