"""The validation pass that keeps its probabilities gives fit's own validation numbers and predict's probabilities,
to the last bit, on real MNIST, for each architecture."""

import numpy as np
import pytest

from mnist_models import data as data_lib
from mnist_models.feeding import Feeder

BATCH = 300  # 1,000 test images: three full batches and a short one


@pytest.fixture(scope="module")
def slices(small_splits):
    train, test = data_lib.load_split(small_splits["train"]), data_lib.load_split(small_splits["test"])
    return (train.images[:640], train.labels[:640]), (test.images, test.labels)


def _validation_scalars(log_dir) -> dict[tuple[str, int], float]:
    """(tag, step) -> value of every scalar TensorBoard wrote into the validation event files."""
    import tensorflow as tf

    scalars = {}
    for path in sorted((log_dir / "validation").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars[value.tag, event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def _train(model_name: str, slices, log_dir, keep: bool):
    """Two epochs from one seed, validated by fit's `validation_data` or by the ValidationCallback."""
    import keras

    from mnist_models.architectures import build_model
    from mnist_models.validation import ValidationCallback, Validator

    (images, labels), test = slices
    keras.backend.clear_session()
    keras.utils.set_random_seed(7)
    model = build_model(model_name)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"], steps_per_execution=16)
    validator = Validator(model, Feeder(*test).batches(BATCH)) if keep else None
    history, probabilities = [], None
    for epoch in range(2):
        tensorboard = keras.callbacks.TensorBoard(log_dir=str(log_dir))
        order = np.random.default_rng([7, epoch]).permutation(len(labels))
        if keep:
            validating = ValidationCallback(validator, tensorboard)
            fit = model.fit(Feeder(images, labels).batches(32, order), epochs=epoch + 1, initial_epoch=epoch,
                            shuffle=False, callbacks=[validating, tensorboard], verbose=0)
            probabilities = validating.probabilities
        else:
            fit = model.fit(Feeder(images, labels).batches(32, order), epochs=epoch + 1, initial_epoch=epoch,
                            shuffle=False, validation_data=Feeder(*test).batches(BATCH), callbacks=[tensorboard],
                            verbose=0)
        history.append(fit.history)
    return model, history, probabilities


@pytest.mark.parametrize("model_name", ["dnn", "convnet", "resnet"])
def test_the_pass_gives_fits_validation_numbers_and_predicts_probabilities_to_the_last_bit(model_name, slices,
                                                                                          tmp_path):
    reference, reference_history, _ = _train(model_name, slices, tmp_path / "fit", keep=False)
    model, history, probabilities = _train(model_name, slices, tmp_path / "kept", keep=True)

    assert history == reference_history  # loss, accuracy, val_loss, val_accuracy: every epoch, bit for bit
    assert set(history[-1]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    predicted = model.predict(Feeder(slices[1][0]).batches(BATCH), verbose=0)
    assert probabilities.shape == (1000, 10) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities, predicted)
    # TensorBoard's validation event files hold what evaluate leaves there: epoch_* and evaluation_*_vs_iterations.
    assert _validation_scalars(tmp_path / "kept") == _validation_scalars(tmp_path / "fit")
    assert {tag for tag, _ in _validation_scalars(tmp_path / "kept")} == {
        "epoch_loss", "epoch_accuracy", "evaluation_loss_vs_iterations", "evaluation_accuracy_vs_iterations"}


def test_each_pass_is_of_the_model_as_it_is_then(slices):
    import keras

    from mnist_models.architectures import build_model
    from mnist_models.validation import Validator

    keras.utils.set_random_seed(3)
    model = build_model("dnn")
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    validator = Validator(model, Feeder(*slices[1]).batches(BATCH))
    before, first = validator()
    model.fit(*slices[0], epochs=1, verbose=0)
    after, second = validator()
    assert after["accuracy"] > before["accuracy"] + 0.15 and after["loss"] < before["loss"]
    assert not np.array_equal(first, second)
    assert after["accuracy"] == pytest.approx(float(np.mean(second.argmax(axis=1) == slices[1][1])), abs=1e-7)


def test_validation_batches_are_predictions_batches():
    """Kept predictions (validation's batches) equal a later prediction's (predict's batches) only if the two agree."""
    from mnist_models.prediction import PREDICT_BATCH
    from mnist_models.training import VALIDATION_BATCH

    assert VALIDATION_BATCH == PREDICT_BATCH
