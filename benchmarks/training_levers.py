"""Measure each per-step training lever per model, against a baseline measured in the same run.

Run:   python benchmarks/training_levers.py [--train-images 12000] [--models dnn,convnet,resnet]
Time:  about 15 minutes on 2 cores.
Makes: benchmarks/results/training_levers.{json,md}

Each variant trains the same model for two epochs on the same images with validation on the 10,000
test images after each, in a fresh process on one TensorFlow thread (as each of two parallel runs
does on 2 cores); the second epoch is timed, so tracing and start-up are left out. A ratio below 1
means the lever saves time. Levers that change no trained weight (validation batch size,
steps_per_execution, the recorder, TensorBoard histograms) are safe to keep; op determinism is kept
regardless, because the study's reproducibility depends on it.

Then two runs side by side: per model, the second epoch's seconds of one process alone and of each of
two processes started together, fed by Keras from NumPy arrays and by the project's tf.data pipeline
(mnist_models/feeding.py). The pair's throughput against one alone (2 x alone / pair) says whether
the second core helps: 2.0 is perfect, 1.0 is no better than one run after the other.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _common

VARIANTS = {
    "baseline (before: validation batch 32, TensorBoard histograms, recorder)": {},
    "validation batch 1000": {"validation_batch": 1000},
    "steps_per_execution 16": {"steps_per_execution": 16},
    "no TensorBoard histograms": {"histograms": False},
    "no per-epoch gradient/histogram recorder": {"recorder": False},
    "op determinism off": {"determinism": False},
    "2 threads (one run alone)": {"threads": 2},
    "tf.data input, autotuner off (feeding.Feeder)": {"feeder": True},
    "as shipped (validation 1000, steps_per_execution 16, tf.data input, histograms, recorder)":
        {"validation_batch": 1000, "steps_per_execution": 16, "feeder": True},
}
# Side by side: the shipped settings, fed by Keras from NumPy arrays, then by feeding.Feeder.
PAIRED = {
    "Keras from NumPy arrays": {"validation_batch": 1000, "steps_per_execution": 16},
    "feeding.Feeder": {"validation_batch": 1000, "steps_per_execution": 16, "feeder": True},
}
ALL_VARIANTS = {**VARIANTS, **PAIRED}


def measure(model_name: str, options: dict, train_images: int, data_dir: str, epochs: int = 2) -> float:
    """Mean seconds of epochs 2 to `epochs` (the first traces), under `options` (run in this process)."""
    import numpy as np

    from mnist_models.training import configure_threads

    configure_threads(options.get("threads", 1))
    import keras
    import tensorflow as tf

    from mnist_models import data as data_lib
    from mnist_models.architectures import build_model

    keras.utils.set_random_seed(1)
    if options.get("determinism", True):
        tf.config.experimental.enable_op_determinism()
    train = data_lib.load_split(Path(data_dir) / "train.parquet")
    test = data_lib.load_split(Path(data_dir) / "test.parquet")
    images, labels = train.images[:train_images], train.labels[:train_images]
    model = build_model(model_name)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=options.get("steps_per_execution", 1))
    callbacks = []
    if options.get("histograms", True):
        callbacks.append(keras.callbacks.TensorBoard(log_dir=tempfile.mkdtemp(prefix="levers-tensorboard-"),
                                                     histogram_freq=1))
    if options.get("recorder", True):
        probe = (tf.constant(images[:256]), tf.constant(labels[:256]))
        kernels = [layer for layer in model.layers if hasattr(layer, "kernel")]

        class Recorder(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                with tf.GradientTape() as tape:
                    loss = keras.losses.sparse_categorical_crossentropy(probe[1], model(probe[0]))
                [float(tf.norm(grad)) for grad in tape.gradient(loss, [layer.kernel for layer in kernels])]
                np.histogram(np.asarray(kernels[0].kernel).ravel(), bins=40)
        callbacks.append(Recorder())

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.began)

    timer = Timer()
    timer.seconds = []
    validation_batch = options.get("validation_batch", 32)
    if options.get("feeder"):
        from mnist_models.feeding import Feeder

        model.fit(Feeder(images, labels).batches(32), epochs=epochs, shuffle=False,
                  validation_data=Feeder(test.images, test.labels).batches(validation_batch),
                  callbacks=[*callbacks, timer], verbose=0)
    else:
        model.fit(images, labels, batch_size=32, epochs=epochs, validation_data=(test.images, test.labels),
                  validation_batch_size=validation_batch, callbacks=[*callbacks, timer], verbose=0)
    return sum(timer.seconds[1:]) / len(timer.seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="dnn,convnet,resnet")
    parser.add_argument("--train-images", type=int, default=12000)
    parser.add_argument("--data-dir", default=str(_common.REPO_ROOT / "artifacts" / "data" / "mnist"))
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        print(json.dumps(measure(options.one[0], ALL_VARIANTS[options.one[1]], options.train_images,
                                 options.data_dir)))
        return
    environment = _common.subprocess_environment()
    _common.ensure_parquet(Path(options.data_dir).parents[1], environment)

    def run(model: str, variant: str, copies: int = 1) -> list[float]:
        """Second-epoch seconds of `copies` processes started together."""
        command = [sys.executable, __file__, "--train-images", str(options.train_images),
                   "--data-dir", options.data_dir, "--one", model, variant]
        return _common.measure_together(command, copies, environment, f"{model} {variant}")

    results, paired = {}, {}
    for model in options.models.split(","):
        for variant in VARIANTS:
            (results.setdefault(model, {})[variant],) = run(model, variant)
            print(f"{model:8s} {variant:70s} {results[model][variant]:7.2f} s", flush=True)
        for variant in PAIRED:
            (alone,), pair = run(model, variant), run(model, variant, copies=2)
            paired.setdefault(model, {})[variant] = {"alone": alone, "pair": pair}
            print(f"{model:8s} {variant:30s} alone {alone:6.2f} s, side by side {pair} s", flush=True)
    write_results(results, paired, options)


def write_results(results: dict, paired: dict, options) -> None:
    machine = _common.machine_facts()
    lines = [f"# Training levers, one epoch of {options.train_images:,} images + validation on 10,000",
             "", f"Machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} cores. "
             "Seconds of the second epoch; ratio = variant / baseline measured in the same run.", "",
             "| model | variant | seconds | ratio |", "|---|---|---|---|"]
    for model, variants in results.items():
        baseline = next(iter(variants.values()))
        lines += [f"| {model} | {variant} | {seconds:.2f} | {seconds / baseline:.2f} |"
                  for variant, seconds in variants.items()]
    lines += ["", "## Two runs side by side", "",
              "Seconds of the second epoch, one process alone and each of two started together; throughput of",
              "the pair against one alone = 2 x alone / mean of the pair (2.0: the second core doubles the work done).",
              "", "| model | input | alone s | side by side s | pair throughput vs one alone |", "|---|---|---|---|---|"]
    for model, variants in paired.items():
        lines += [f"| {model} | {variant} | {times['alone']:.2f} | {' and '.join(f'{t:.2f}' for t in times['pair'])} "
                  f"| {2 * times['alone'] / (sum(times['pair']) / len(times['pair'])):.2f} |"
                  for variant, times in variants.items()]
    _common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (_common.RESULTS_DIR / "training_levers.md").write_text("\n".join(lines) + "\n")
    (_common.RESULTS_DIR / "training_levers.json").write_text(json.dumps({"machine": machine, "results": results,
                                                                         "side_by_side": paired},
                                                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
