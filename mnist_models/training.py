"""Train one run of the study and write its folder: model, history, gradients, histograms, manifest.

A run is fully described by a `RunSpec` (mnist_models.records); its id and cache key are derived
from the spec, which includes the data's content hash and the hash of the code that builds and
trains the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_models import data as data_lib
from mnist_models.io import atomic_directory, sha256_file, write_json
from mnist_models.isolation import peak_memory_mb
from mnist_models.layout import RunFolder
from mnist_models.records import RunSpec, TrainedRun

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
HISTOGRAM_BINS = 40
GRADIENT_BATCH = 256


def read_manifest(folder: RunFolder) -> dict | None:
    """The run's manifest if the folder is complete (manifest readable, every listed file present)."""
    try:
        manifest = json.loads(folder.manifest.read_text())
    except (OSError, ValueError):
        return None
    files = manifest.get("files", [])
    if not files or not all((folder.path / name).exists() for name in files):
        return None
    return manifest if manifest.get("file_hashes") == folder_hashes(folder) else None


def folder_hashes(folder: RunFolder) -> dict[str, str]:
    """SHA-256 of every file of a run folder that training wrote (tensorboard's files one by one)."""
    names = [path for path in sorted(folder.path.rglob("*"))
             if path.is_file() and path != folder.manifest and path != folder.predictions]
    return {path.relative_to(folder.path).as_posix(): sha256_file(path) for path in names}


def trained_run(spec: RunSpec, manifest: dict) -> TrainedRun:
    """The record of a finished run, from its manifest."""
    return TrainedRun(spec=spec, parameters=manifest["trainable_parameters"], train_seconds=manifest["wall_seconds"])


def configure_threads(threads: int | None) -> None:
    """Limit TensorFlow's thread pools; a no-op once TensorFlow has started executing ops."""
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # already initialised in this process: the first run's setting stays


def _seed_initial_weights(model, seed: int) -> None:
    """Re-draw every seeded initializer from `seed` alone.

    Keras draws a default initializer seed from Python's global `random` module, which other
    threads of a worker process (Prefect's, Dask's) may also draw from; re-initializing from a
    private generator makes the starting weights depend on the run's seed and nothing else.
    """
    generator = random.Random(seed)
    for layer in model.layers:
        for initializer_name, variable_name in (("kernel_initializer", "kernel"), ("bias_initializer", "bias")):
            initializer = getattr(layer, initializer_name, None)
            variable = getattr(layer, variable_name, None)
            if initializer is None or variable is None:
                continue
            config = initializer.get_config()
            if "seed" in config:
                config["seed"] = generator.randint(1, 10**9)
            variable.assign(type(initializer).from_config(config)(variable.shape, variable.dtype))


def _first_kernel_layer(model):
    try:
        return model.get_layer("target_layer")
    except ValueError:
        return next(layer for layer in model.layers if hasattr(layer, "kernel"))


def _make_callbacks(model, spec: RunSpec, run_id: str, probe: tuple[np.ndarray, np.ndarray],
                    log: Callable[[str], None]):
    import keras
    import tensorflow as tf

    kernel_layer = _first_kernel_layer(model)
    kernel_layers = [layer for layer in model.layers if hasattr(layer, "kernel")]
    loss_function = keras.losses.SparseCategoricalCrossentropy()
    probe_images = tf.constant(probe[0])
    probe_labels = tf.constant(probe[1])

    class Recorder(keras.callbacks.Callback):
        """Per epoch: one progress line, the tracked kernel's histogram, each kernel's gradient norm."""

        def __init__(self) -> None:
            super().__init__()
            self.histograms: list[dict] = []
            self.gradients: list[dict] = []
            self.seconds: list[float] = []
            self._epoch_start = 0.0

        def _record(self, epoch: int) -> None:
            kernel = np.asarray(kernel_layer.kernel).ravel()
            counts, edges = np.histogram(kernel, bins=HISTOGRAM_BINS)
            self.histograms += [
                {"epoch": epoch, "layer": kernel_layer.name, "bin_left": float(left),
                 "bin_right": float(right), "count": int(count)}
                for left, right, count in zip(edges[:-1], edges[1:], counts)
            ]
            with tf.GradientTape() as tape:
                loss = loss_function(probe_labels, model(probe_images, training=False))
            grads = tape.gradient(loss, [layer.kernel for layer in kernel_layers])
            self.gradients += [
                {"epoch": epoch, "layer": layer.name, "gradient_norm": float(tf.norm(grad))}
                for layer, grad in zip(kernel_layers, grads)
            ]

        def on_train_begin(self, logs=None) -> None:
            self._record(0)

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self._epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.seconds.append(time.perf_counter() - self._epoch_start)
            self._record(epoch + 1)
            logs = logs or {}
            log(
                f"{run_id}: epoch {epoch + 1}/{spec.epochs} loss {logs.get('loss', float('nan')):.4f} "
                f"accuracy {logs.get('accuracy', float('nan')):.4f} val_accuracy "
                f"{logs.get('val_accuracy', float('nan')):.4f} ({self.seconds[-1]:.1f} s)"
            )

    return Recorder()


def train_run(
    spec: RunSpec,
    train_path: str | os.PathLike[str],
    test_path: str | os.PathLike[str],
    folder: RunFolder,
    *,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainedRun:
    """Train `spec` and write its complete run folder atomically; return its record."""
    configure_threads(threads)
    import keras
    import tensorflow as tf

    from mnist_models.architectures import build_model

    started = time.perf_counter()
    keras.utils.set_random_seed(spec.seed)
    tf.config.experimental.enable_op_determinism()
    train = data_lib.stratified_subset(data_lib.load_split(train_path), spec.train_subset, spec.seed)
    test = data_lib.load_split(test_path)
    probe_rows = np.random.default_rng(spec.seed).choice(len(train), min(GRADIENT_BATCH, len(train)), replace=False)

    model = build_model(spec.model)
    _seed_initial_weights(model, spec.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=spec.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    with atomic_directory(folder.path) as work_dir:
        work = folder.within(work_dir)
        recorder = _make_callbacks(model, spec, folder.run_id, (train.images[probe_rows], train.labels[probe_rows]), log)
        tensorboard = keras.callbacks.TensorBoard(log_dir=str(work.tensorboard), histogram_freq=1)
        fit = model.fit(
            train.images, train.labels,
            batch_size=spec.batch_size, epochs=spec.epochs,
            validation_data=(test.images, test.labels),
            callbacks=[recorder, tensorboard], verbose=0,
        )
        history = pd.DataFrame({key: fit.history[key] for key in HISTORY_COLUMNS[1:5]})
        history.insert(0, "epoch", np.arange(1, len(history) + 1))
        history["seconds"] = recorder.seconds
        model.save(work.model)
        history.to_parquet(work.history, index=False)
        pd.DataFrame(recorder.gradients).to_parquet(work.gradients, index=False)
        pd.DataFrame(recorder.histograms).to_parquet(work.kernel_histograms, index=False)
        final = history.iloc[-1]
        manifest = {
            "run_id": folder.run_id,
            "cache_key": spec.cache_key,
            "parameters": spec.model_dump(mode="json"),
            "seed": spec.seed,
            "data_hash": spec.data_hash,
            "code_hash": spec.code_hash,
            "code_files": dict(spec.code_files),
            "train_images": len(train),
            "test_images": len(test),
            "trainable_parameters": int(model.count_params()),
            "threads": threads,
            "versions": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
            },
            "wall_seconds": round(time.perf_counter() - started, 3),
            "peak_memory_mb": peak_memory_mb(),
            "final_metrics": {
                "loss": float(final["loss"]), "accuracy": float(final["accuracy"]),
                "val_loss": float(final["val_loss"]), "val_accuracy": float(final["val_accuracy"]),
            },
            "files": [path.name for path in folder.training_files],
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        manifest["file_hashes"] = folder_hashes(work)
        write_json(work.manifest, manifest)  # last: a folder without it is never trusted
    return trained_run(spec, manifest)
