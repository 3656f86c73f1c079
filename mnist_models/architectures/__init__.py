"""The study's architectures, one module each, picked by name from a registry.

The registry names modules instead of importing them, so naming a model or hashing its code
(for the training cache) never imports Keras. A run's key holds its builder's module and, of this
file, only its own entry of ARCHITECTURES (planning.run_spec): adding a model retrains no other.
"""

from __future__ import annotations

import importlib

# model name -> (module, builder function); a dict literal, so that a run's key can keep its entry alone
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "dnn": ("mnist_models.architectures.dnn", "build_dnn"),
    "convnet": ("mnist_models.architectures.convnet", "build_convnet"),
    "resnet": ("mnist_models.architectures.resnet", "build_resnet"),
    "resnet_plain": ("mnist_models.architectures.resnet", "build_resnet_plain"),
}
MODEL_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)


def check_model_name(name: str) -> str:
    """Return `name` if it is a known model, else raise ValueError listing the known names."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(MODEL_NAMES)}")
    return name


def build_model(name: str, input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10):
    """Build the uncompiled keras.Model registered under `name`."""
    module_name, function_name = ARCHITECTURES[check_model_name(name)]
    builder = getattr(importlib.import_module(module_name), function_name)
    return builder(input_shape=input_shape, num_classes=num_classes)
