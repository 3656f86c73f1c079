"""How the report was made: the rendering run's cache decisions, summarised."""

from __future__ import annotations

import pandas as pd

from mnist_models.findings import compute_findings


def test_the_cache_decisions_of_the_rendering_run_are_summarised():
    decisions = pd.DataFrame({"stage": ["train", "train", "report"], "item": ["a", "b", "study"],
                              "action": ["reused", "recomputed", "recomputed"],
                              "reason": ["unchanged", "code changed (mnist_models/architectures/dnn.py)", "new"]})
    cache = compute_findings({"cache_decisions": decisions}).cache
    assert cache.reused == 1
    assert [(entry.stage, entry.item, entry.reason) for entry in cache.recomputed] == [
        ("train", "b", "code changed (mnist_models/architectures/dnn.py)"), ("report", "study", "new")]
    assert compute_findings({}).cache is None
