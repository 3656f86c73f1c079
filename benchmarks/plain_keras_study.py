"""Baseline for the training benchmark: the study's training as one plain, sequential Keras script.

Run:   python benchmarks/plain_keras_study.py --data-dir artifacts/data/mnist
           [--models dnn,convnet,resnet] [--learning-rates 0.1,0.01,0.001,0.0001] [--epochs 10]
           [--gradient-epochs 20] [--train-subset N] [--seed 42]
Time:  the defaults (the full study: 12-run grid + the 20-epoch gradient pair on 60,000 images)
       take over an hour on 2 cores; benchmarks/training_speed.py runs it scaled down.
Prints: one JSON object on the last line of stdout: wall time and each run's final accuracies.

No Prefect, no worker processes, no callbacks, no evaluation beyond Keras's own validation on the
test split after every epoch, TensorFlow's default threading: what someone would write by hand.
It trains the same runs the flow plans (model x learning rate, then resnet_plain and resnet at
the gradient learning rate), on the same Parquet splits, subset and seed.
"""

from __future__ import annotations

import argparse
import json
import time

started = time.perf_counter()

import keras  # noqa: E402 - the import is part of the measured wall time

from mnist_models import build_model  # noqa: E402
from mnist_models import data as data_lib  # noqa: E402


def _csv(kind):
    def parse(text: str):
        return [kind(item.strip()) for item in text.split(",") if item.strip()]
    return parse


def planned_runs(options) -> list[tuple[str, str, float, int]]:
    """(role, model, learning rate, epochs) of every run, each distinct run once, as the flow plans them."""
    runs = [("sweep", model, rate, options.epochs) for model in options.models for rate in options.learning_rates]
    if options.gradient_epochs:
        runs += [("gradient", model, options.gradient_learning_rate, options.gradient_epochs)
                 for model in options.gradient_models]
    unique: dict[tuple[str, float, int], tuple[str, str, float, int]] = {}
    for role, model, rate, epochs in runs:
        unique.setdefault((model, rate, epochs), (role, model, rate, epochs))
    return list(unique.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding train.parquet and test.parquet")
    parser.add_argument("--models", type=_csv(str), default=["dnn", "convnet", "resnet"])
    parser.add_argument("--learning-rates", type=_csv(float), default=[0.1, 0.01, 0.001, 0.0001])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--gradient-models", type=_csv(str), default=["resnet_plain", "resnet"])
    parser.add_argument("--gradient-learning-rate", type=float, default=0.001)
    parser.add_argument("--gradient-epochs", type=int, default=20, help="0 = no gradient pair")
    parser.add_argument("--train-subset", type=int, help="stratified subset of this many training images")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    options = parser.parse_args()

    train = data_lib.load_split(f"{options.data_dir}/train.parquet")
    train = data_lib.stratified_subset(train, options.train_subset, options.seed)
    test = data_lib.load_split(f"{options.data_dir}/test.parquet")

    runs = []
    training_started = time.perf_counter()
    for role, model_name, learning_rate, epochs in planned_runs(options):
        run_started = time.perf_counter()
        keras.utils.set_random_seed(options.seed)
        model = build_model(model_name)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
        history = model.fit(train.images, train.labels, batch_size=options.batch_size, epochs=epochs,
                            validation_data=(test.images, test.labels), verbose=0).history
        runs.append({
            "role": role, "model": model_name, "learning_rate": learning_rate, "epochs": epochs,
            "accuracy": history["accuracy"][-1], "val_accuracy": history["val_accuracy"][-1],
            "seconds": round(time.perf_counter() - run_started, 3),
        })
    finished = time.perf_counter()
    print(json.dumps({
        "train_images": len(train), "test_images": len(test),
        "training_seconds": round(finished - training_started, 3),
        "wall_seconds": round(finished - started, 3),
        "runs": runs,
    }))


if __name__ == "__main__":
    main()
