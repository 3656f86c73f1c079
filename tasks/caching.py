"""Reuse or recompute a stage, say which and why, and remember the answer.

The decisions are the pipeline's own (mnist_models.provenance): a stage's JSON record under
`<artifacts>/.cache/stages/` holds its key and the hash of every file it wrote, so Prefect keeps no
result of its own (no pickle under the artifacts directory). Each decision is logged as one line,
`<stage> <item>: reused|recomputed (<reason>)`, and collected for the cache_decisions table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from pydantic_core import to_jsonable_python

from mnist_models import outputs, tables
from mnist_models.provenance import Decision, StageKey, StageStore, decide

T = TypeVar("T")
STAGES = ("data", "train", "evaluate", "tables", "figures", "report")


@dataclass
class Ledger:
    """The stage store of one artifacts root, the stages to refresh, and the decisions made so far."""

    store: StageStore
    refresh: frozenset[str] = frozenset()
    log: Callable[[str], None] = print
    decisions: list[Decision] = field(default_factory=list)

    def decide(self, stage: str, item: str, key: StageKey) -> tuple[Decision, Any]:
        """Decide for one stage item; return the decision and, when reused, the stored result."""
        previous = self.store.load(stage, item)
        decision = decide(stage, item, key, previous, self.store.root, stage in self.refresh)
        return decision, (previous.result if decision.action == "reused" else None)

    def record(self, decision: Decision) -> Decision:
        """Log a decision and keep it for the cache_decisions table."""
        self.decisions.append(decision)
        self.log(f"{decision.stage} {decision.item}: {decision.action} ({decision.reason})")
        return decision

    def save(self, stage: str, item: str, key: StageKey, outputs: Iterable[str | Path], result: Any = None) -> None:
        self.store.save(stage, item, key, outputs, result)

    def stage(self, stage: str, item: str, key: StageKey, compute: Callable[[], tuple[T, Iterable[Path]]],
              load: Callable[[Any], T]) -> T:
        """Reuse the stored result of `stage`, or call `compute` (result, files written) and store it.

        Either way the result comes back through `load`, from its JSON form (paths relative to the root).
        """
        decision, stored = self.decide(stage, item, key)
        self.record(decision)
        if decision.action == "reused":
            return load(stored)
        result, outputs = compute()
        stored = to_jsonable_python(result)  # records dumped, paths as text, containers walked
        self.save(stage, item, key, outputs, stored)
        return load(stored)

    def has_decided(self, stage: str, item: str) -> bool:
        """Whether this run already logged a decision for the stage item."""
        return any(decision.stage == stage and decision.item == item for decision in self.decisions)


DECISION_COLUMNS = list(outputs.TABLES["cache_decisions"].columns)


def decisions_table(ledger: Ledger) -> pd.DataFrame:
    """This run's decisions so far, one row each: stage, item, action, reason."""
    return pd.DataFrame([decision.model_dump() for decision in ledger.decisions], columns=DECISION_COLUMNS)


def write_decisions(ledger: Ledger, tables_dir: Path) -> pd.DataFrame:
    """This run's decisions as the cache_decisions table (Parquet, CSV, Markdown); returned too."""
    decisions = decisions_table(ledger)
    tables.write_table(decisions, tables_dir, "cache_decisions")
    return decisions
