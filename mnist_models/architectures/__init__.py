"""The study's architectures, one module each, and the registry that says everything else about a model.

A model is one `ModelSpec`: its builder (module and function), the description the report gives it,
and its measured cost. Planning and the report read it; nothing else names a model's facts. The
registry names modules instead of importing them, so naming a model or hashing its code (for the
training cache) never imports Keras. A run's key holds its builder's module and, of this file, only
the builder fields of its own entry (planning.run_spec): adding a model, or rewording a description,
retrains nothing.
"""

from __future__ import annotations

import importlib
import re
from typing import NamedTuple


class ModelSpec(NamedTuple):
    """One model: where its builder is, how the report describes it, what an epoch costs on 2 cores."""

    module: str
    builder: str
    description: str
    # Seconds per training epoch on 60,000 images with validation, measured on the 2-core development machine:
    # orders the runs until this machine's own manifests say better (planning.epoch_costs).
    epoch_seconds: float


BUILDER_FIELDS = ("module", "builder")  # of an entry, what training runs (and a run's key holds)
# A dict literal of ModelSpec(...) calls with keywords, so that a run's key can keep its entry's builder fields alone.
ARCHITECTURES: dict[str, ModelSpec] = {
    "dnn": ModelSpec(module="mnist_models.architectures.dnn", builder="build_dnn",
                     description="a dense network on the flattened pixels (study figure 2.1)", epoch_seconds=4.3),
    "convnet": ModelSpec(module="mnist_models.architectures.convnet", builder="build_convnet",
                         description="a convolutional network alternating convolutions and max pooling "
                                     "(study figure 2.2)", epoch_seconds=13.3),
    "resnet": ModelSpec(module="mnist_models.architectures.resnet", builder="build_resnet",
                        description="a small residual network with a strided 1×1 convolution as its shortcut "
                                    "(study figure 2.6)", epoch_seconds=43.0),
    "resnet_plain": ModelSpec(module="mnist_models.architectures.resnet", builder="build_resnet_plain",
                              description="the same residual network without its shortcut, trained only for "
                                          "section 3", epoch_seconds=43.0),
    # Deeper pairs for the study's open question, named with their depth: resnet_deep8, resnet_plain_deep8. Their
    # cost is per block (measured: depth 4 on 2,000 images, two runs at once on 2 cores, 4.8 s per epoch).
    "resnet_deep": ModelSpec(module="mnist_models.architectures.deep", builder="build_deep_resnet",
                             description="a residual network of {depth} two-convolution blocks, each with an "
                                         "identity shortcut", epoch_seconds=18.0),
    "resnet_plain_deep": ModelSpec(module="mnist_models.architectures.deep", builder="build_deep_plain",
                                   description="the same {depth}-block network without its shortcuts",
                                   epoch_seconds=18.0),
}
DEPTH_MODELS = ("resnet_deep", "resnet_plain_deep")  # registered without their depth, which their name carries
MAX_DEPTH = 64
_WITH_DEPTH = re.compile(r"^(?P<base>[a-z_]+?)(?P<depth>[1-9][0-9]*)$")
MODEL_NAMES: tuple[str, ...] = tuple(name for name in ARCHITECTURES if name not in DEPTH_MODELS)


def model_entry(name: str) -> tuple[str, int | None]:
    """The registry entry a model name stands for, and its depth (`resnet_deep8` -> ("resnet_deep", 8))."""
    match = _WITH_DEPTH.match(name)
    if match and match["base"] in DEPTH_MODELS and int(match["depth"]) <= MAX_DEPTH:
        return match["base"], int(match["depth"])
    if name in ARCHITECTURES and name not in DEPTH_MODELS:
        return name, None
    deep = ", ".join(f"{base}N" for base in DEPTH_MODELS)
    raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(MODEL_NAMES)}, or {deep} "
                     f"with N blocks from 1 to {MAX_DEPTH}")


def check_model_name(name: str) -> str:
    """Return `name` if it is a known model, else raise ValueError listing the known names."""
    model_entry(name)
    return name


def describe_model(name: str) -> str:
    """How the report describes a model (with its depth, for a deep pair's)."""
    entry, depth = model_entry(name)
    return ARCHITECTURES[entry].description.format(depth=depth)


def build_model(name: str, input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10):
    """Build the uncompiled keras.Model registered under `name`."""
    entry, depth = model_entry(name)
    spec = ARCHITECTURES[entry]
    builder = getattr(importlib.import_module(spec.module), spec.builder)
    depth_argument = {} if depth is None else {"depth": depth}
    return builder(input_shape=input_shape, num_classes=num_classes, **depth_argument)


def describe_layers(model) -> list[dict]:
    """Per layer of a built model: name, type, output shape, parameters, and of a convolution its kernel size,
    filters and input channels (the study's parameter formula). Training keeps this in each run's manifest, so that
    the model_summary table is written from the runs, without importing Keras (about 6 s of the main process)."""
    rows = []
    for layer in model.layers:
        convolution = type(layer).__name__ == "Conv2D"
        rows.append({"layer": layer.name, "type": type(layer).__name__, "output_shape": str(tuple(layer.output.shape)),
                     "parameters": int(layer.count_params()),
                     "kernel_size": list(layer.kernel_size) if convolution else None,
                     "filters": int(layer.filters) if convolution else None,
                     "channels": int(layer.kernel.shape[2]) if convolution else None})
    return rows
