"""A run's hyperparameters and final metrics in TensorBoard's HParams format, so that
`tensorboard --logdir artifacts/runs` shows the whole sweep side by side in its HParams dashboard.

Written with TensorBoard's own hparams plugin API, into the run's `tensorboard/` folder (beside the
per-epoch logs Keras writes); read back with TensorBoard's own event readers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mnist_models.records import RunSpec

METRIC_PREFIX = "hparams/"  # final metrics as scalars under this tag prefix: the dashboard's metric columns


def hyperparameters(spec: RunSpec) -> dict[str, object]:
    """What the dashboard compares runs by: model, learning rate, epochs, seed, batch size, training images."""
    return {"model": spec.model, "learning_rate": spec.learning_rate, "epochs": spec.epochs, "seed": spec.seed,
            "batch_size": spec.batch_size, "train_subset": spec.train_subset or 0, "dataset": spec.dataset}


def write_hparams(logdir: str | os.PathLike[str], run_id: str, spec: RunSpec,
                  final_metrics: Mapping[str, float | None]) -> None:
    """Write the run's hyperparameters (trial `run_id`) and its final metrics (non-finite ones left out)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(Path(logdir)))
    with writer.as_default():
        hp.hparams(hyperparameters(spec), trial_id=run_id)
        for name, value in final_metrics.items():
            if value is not None:
                tf.summary.scalar(METRIC_PREFIX + name, float(value), step=spec.epochs)
    writer.close()


def read_hparams(logdir: str | os.PathLike[str]) -> dict[str, object]:
    """The hyperparameters a run's TensorBoard folder declares, read with TensorBoard's own readers."""
    from tensorboard.backend.event_processing import event_multiplexer
    from tensorboard.plugins.hparams import metadata

    multiplexer = event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    found: dict[str, object] = {}
    for tags in multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME).values():
        content = tags.get(metadata.SESSION_START_INFO_TAG)
        if content is not None:
            info = metadata.parse_session_start_info_plugin_data(content)
            found.update({name: _value(value) for name, value in info.hparams.items()})
    return found


def read_final_metrics(logdir: str | os.PathLike[str]) -> dict[str, float]:
    """The final metrics written beside the hyperparameters (tag without its prefix -> value)."""
    from tensorboard.backend.event_processing import event_multiplexer

    multiplexer = event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    metrics = {}
    for run, tags in multiplexer.Runs().items():
        for tag in tags.get("tensors", []):
            if tag.startswith(METRIC_PREFIX):
                import tensorflow as tf

                event = multiplexer.Tensors(run, tag)[-1]
                metrics[tag.removeprefix(METRIC_PREFIX)] = float(tf.make_ndarray(event.tensor_proto))
    return metrics


def _value(value) -> object:
    kind = value.WhichOneof("kind")
    return {"number_value": value.number_value, "string_value": value.string_value,
            "bool_value": value.bool_value}.get(kind)
