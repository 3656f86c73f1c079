"""Each epoch's validation pass on the test split, keeping its probabilities: the run's test predictions.

Keras's `fit` validates with `evaluate`, which returns metrics only, so a run's test predictions cost a
second pass over the same 10,000 images after training: 12% of the quick profile's wall time
(benchmarks/results/timeline.md). This pass runs what Keras's test step runs, the model's call and its
compiled loss in one traced function, on the same batches, and accumulates loss and accuracy in Keras's own
metrics: `val_loss` and `val_accuracy` equal those of `fit(validation_data=...)` to the last bit, and the
probabilities those of `model.predict` (tests/mnist_models/test_validation.py). The last epoch's pass is
therefore the run's test predictions. Keras is imported here: import this module where TensorFlow runs.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class Validator:
    """The test split's pass for one model: the loss and accuracy Keras's test step would log, and the
    probabilities (n, 10) in row order. Traced once, on the first pass."""

    def __init__(self, model, batches) -> None:
        self.batches = batches

        @tf.function(reduce_retracing=True)
        def step(images, labels):
            # As in Keras's test step: the loss sees the softmax's own graph, so it is computed from its logits.
            probabilities = model(images, training=False)
            return probabilities, model.compute_loss(x=images, y=labels, y_pred=probabilities, training=False)

        self._step = step

    def __call__(self) -> tuple[dict[str, float], np.ndarray]:
        loss, accuracy = keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy()
        parts = []
        for images, labels in self.batches:
            probabilities, batch_loss = self._step(images, labels)
            loss.update_state(batch_loss, sample_weight=tf.shape(images)[0])  # the test step's weighting
            accuracy.update_state(labels, probabilities)
            parts.append(probabilities.numpy())
        return {"loss": float(loss.result()), "accuracy": float(accuracy.result())}, np.concatenate(parts)


class ValidationCallback(keras.callbacks.Callback):
    """`fit`'s validation by a `Validator`: at each epoch's end, inside TensorBoard's test hooks (its validation
    event file, as `evaluate` leaves it), adding `val_loss` and `val_accuracy` to the epoch's logs before
    TensorBoard and the history read them. Put it before the TensorBoard callback. `probabilities` holds the
    last pass's."""

    def __init__(self, validator: Validator, tensorboard: keras.callbacks.TensorBoard) -> None:
        super().__init__()
        self.validator, self.tensorboard = validator, tensorboard
        self.probabilities: np.ndarray | None = None

    def on_epoch_end(self, epoch, logs=None):
        self.tensorboard.on_test_begin()
        metrics, self.probabilities = self.validator()
        self.tensorboard.on_test_end(metrics)
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in metrics.items()})
