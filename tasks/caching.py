"""This run's cache decisions as the cache_decisions table: stage, item, reused or recomputed, and why.

The decisions are the stage engine's (mnist_models.engine); each is also logged as one line,
`<stage> <item>: reused|recomputed (<reason>)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from mnist_models import outputs, tables
from mnist_models.engine import Engine
from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import StageStore
from mnist_models.run_records import RunRecords

def study_engine(layout: ArtifactsLayout, refresh: Iterable[str] = (), log: Callable[[str], None] = print) -> Engine:
    """The stage engine of one artifacts root: records under `.cache/stages/`, a run's in its folder's manifest."""
    return Engine({"cache": StageStore(layout), "runs": RunRecords(layout)}, frozenset(refresh), log)


DECISION_COLUMNS = list(outputs.TABLES["cache_decisions"].columns)


def decisions_table(engine: Engine) -> pd.DataFrame:
    """This run's decisions so far, one row each: stage, item, action, reason."""
    return pd.DataFrame([decision.model_dump() for decision in engine.decisions], columns=DECISION_COLUMNS)


def write_decisions(engine: Engine, tables_dir: Path) -> pd.DataFrame:
    """This run's decisions as the cache_decisions table (Parquet, CSV, Markdown); returned too."""
    decisions = decisions_table(engine)
    tables.write_table(decisions, tables_dir, "cache_decisions")
    return decisions
