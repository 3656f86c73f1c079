"""The MNIST study as a plain Python library: data, models, training, metrics, plots, report.

Nothing here imports Prefect or reads the environment. Keras is imported only when a model is
built or trained, so data-only callers (and cached pipeline stages) stay fast.
"""

from mnist_models.architectures import MODEL_NAMES, build_model

__all__ = ["MODEL_NAMES", "build_model"]
