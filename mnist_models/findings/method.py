"""Section "How this report was made": how the run that rendered the report reused earlier work."""

from __future__ import annotations

import pandas as pd

from mnist_models.records import Record


class CacheEntry(Record):
    """One stage item that the run recomputed, and why."""

    stage: str
    item: str
    reason: str


class CacheSummary(Record):
    """How the run that rendered the report reused earlier work."""

    reused: int
    recomputed: tuple[CacheEntry, ...]


def cache_summary(decisions: pd.DataFrame) -> CacheSummary:
    """How many stage items the run reused, and each one it recomputed with its reason."""
    recomputed = decisions[decisions["action"] == "recomputed"]
    return CacheSummary(reused=int((decisions["action"] == "reused").sum()),
                        recomputed=tuple(CacheEntry(stage=stage, item=item, reason=reason)
                                         for stage, item, reason in recomputed[["stage", "item", "reason"]].values))
