"""Feed arrays to Keras as tf.data batches that run side by side in several processes at full speed.

Keras turns NumPy arrays passed to `fit`, `evaluate` or `predict` into a tf.data pipeline with
tf.data's autotuner on. On the 2-vCPU development machine two training processes fed that way each
ran at half the speed of one alone: together no faster than one after the other, although each
process used one thread and the cores were free (benchmarks/results/training_levers.md). The same
batches from a pipeline with the autotuner off, a fixed prefetch and a one-thread private pool let
two processes each run at the speed of one alone.

The batches are the same as Keras's: rows in the given order (all rows in order by default), cut
into consecutive batches, the last one possibly short; so are the trained weights, to the last bit
(tests/mnist_models/test_feeding.py).
"""

from __future__ import annotations

import numpy as np

PREFETCH_BATCHES = 2  # one batch in use, one ready: the model, not the copy, is the bottleneck


def _options():
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return options


class Feeder:
    """Arrays held once as tensors; `batches` cuts them, in any row order, into a tf.data.Dataset."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        import tensorflow as tf

        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels; expected one label per image")
        self.rows = len(images)
        self.images = tf.constant(images)
        self.labels = None if labels is None else tf.constant(labels)

    def batches(self, batch_size: int, order: np.ndarray | None = None):
        """(images, labels) batches, or images alone when there are no labels, rows taken in `order`."""
        import tensorflow as tf

        rows = np.arange(self.rows, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
        images, labels = self.images, self.labels
        if labels is None:
            def take(indices):
                return tf.gather(images, indices)
        else:
            def take(indices):
                return tf.gather(images, indices), tf.gather(labels, indices)
        dataset = tf.data.Dataset.from_tensor_slices(rows).batch(batch_size).map(take)
        return dataset.prefetch(PREFETCH_BATCHES).with_options(_options())
