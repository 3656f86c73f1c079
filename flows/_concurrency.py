"""One flow run at a time per artifacts folder, across every deployment of a Prefect server.

Each deployment has its own concurrency limit (prefect.yaml), so two runs of one deployment queue;
but `full-study`, `nightly-retrain`, `quick-check` and custom runs can name the same folder, and the
second would fail at once on the folder's lock (mnist_models.locking). `artifacts_slot` makes it wait
its turn instead, on a global concurrency limit of 1 named after the folder. The flock stays inside
it: it still guards the folder against runs the server does not know (the command line).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

# The slot is leased, and Prefect renews the lease every 3/4 of this for as long as the run lasts (an
# hour-long study included). A run killed without a chance to release (SIGKILL, a lost machine) frees
# the folder when the lease runs out, so this is also how long the next run waits for a dead one.
LEASE_SECONDS = 120.0


def slot_name(artifacts_dir: str | Path) -> str:
    """The global concurrency limit for a folder: `artifacts-` and 12 hex digits of its resolved path."""
    digest = hashlib.sha256(str(Path(artifacts_dir).resolve()).encode()).hexdigest()
    return f"artifacts-{digest[:12]}"


def _limit(name: str) -> GlobalConcurrencyLimitResponse:
    """The limit (1 slot), created unless it exists; another run creating it at the same moment is fine."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            return client.read_global_concurrency_limit_by_name(name)


@contextlib.contextmanager
def artifacts_slot(root: Path) -> Iterator[None]:
    """Hold the artifacts folder's slot on the server for the block, waiting while another run holds it.

    Only a flow run of a deployment takes a slot; anywhere else (the command line, tests) this does
    nothing, and the folder's lock alone applies.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.deployment_id is None:
        yield
        return
    name = slot_name(root)
    logger = get_run_logger()
    started = time.monotonic()
    limit = _limit(name)
    held_elsewhere = limit.active and limit.active_slots >= limit.limit  # for the log: the server decides below
    if held_elsewhere:
        logger.info(f"waiting for the artifacts folder {root} (held by another flow run; "
                    f"global concurrency limit {name})")
    # Prefect retries until the slot is free (the server says when to ask again, at most every 30 s).
    # A lease renewal that fails (the server restarting) must not kill an hour of training: the run
    # goes on, and the folder's lock inside still keeps a second run out.
    with concurrency(name, lease_duration=LEASE_SECONDS, strict=True, raise_on_lease_renewal_failure=False,
                     holder=ConcurrencyLeaseHolder(type="flow_run", id=context.flow_run.id)):
        waited = time.monotonic() - started
        logger.info(f"holding the artifacts folder {root} (global concurrency limit {name})"
                    + (f" after waiting {waited:.0f} s" if held_elsewhere else ""))
        yield
