"""The MNIST study as a plain Python library: data, models, training, metrics, plots, report.

Nothing here imports Prefect or reads the environment. Keras is imported on first use of a
model-related name, so data-only callers (and cached pipeline stages) stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_model": "mnist_models.models",
    "MODEL_BUILDERS": "mnist_models.models",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnist_models' has no attribute {name!r}")
