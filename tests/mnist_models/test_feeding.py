"""The tf.data feeder gives Keras the same batches, and so the same trained weights, as NumPy arrays do."""

import numpy as np
import pytest

from mnist_models import data as data_lib
from mnist_models.feeding import Feeder


@pytest.fixture(scope="module")
def train_slice(small_splits):
    split = data_lib.load_split(small_splits["train"])
    return split.images[:300], split.labels[:300]


def test_batches_are_the_rows_in_order_cut_consecutively_with_a_short_last_batch(train_slice):
    images, labels = train_slice[0][:100], train_slice[1][:100]
    order = np.random.default_rng(5).permutation(100)
    batches = [(x.numpy(), y.numpy()) for x, y in Feeder(images, labels).batches(32, order)]
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images[order])
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels[order])
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.uint8


def test_without_labels_it_yields_images_in_stored_order(train_slice):
    images = train_slice[0][:50]
    batches = [x.numpy() for x in Feeder(images).batches(20)]
    assert [len(x) for x in batches] == [20, 20, 10]
    np.testing.assert_array_equal(np.concatenate(batches), images)


def test_a_label_count_unlike_the_image_count_is_refused(train_slice):
    with pytest.raises(ValueError, match="300 images but 299 labels"):
        Feeder(train_slice[0], train_slice[1][:299])


def test_training_on_feeder_batches_gives_the_weights_of_training_on_arrays(train_slice):
    import keras

    from mnist_models.architectures import build_model

    images, labels = train_slice
    order = np.random.default_rng(9).permutation(len(labels))
    validation = (images[:64], labels[:64])

    def train(feed: bool):
        keras.utils.set_random_seed(4)
        model = build_model("dnn")
        model.compile(optimizer=keras.optimizers.Adam(0.001), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], steps_per_execution=4)
        if feed:
            history = model.fit(Feeder(images, labels).batches(32, order), epochs=2, shuffle=False, verbose=0,
                                validation_data=Feeder(*validation).batches(16))
        else:
            history = model.fit(images[order], labels[order], batch_size=32, epochs=2, shuffle=False, verbose=0,
                                validation_data=validation, validation_batch_size=16)
        return model.get_weights(), history.history

    (array_weights, array_history), (feeder_weights, feeder_history) = train(False), train(True)
    assert len(array_weights) == len(feeder_weights)
    for expected, actual in zip(array_weights, feeder_weights):
        np.testing.assert_array_equal(actual, expected)
    assert feeder_history == array_history
