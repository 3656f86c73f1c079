"""The validated study configuration: profiles and clear messages for bad values."""

from pathlib import Path

import pytest

from mnist_models.config import StudyConfig


def test_full_profile_is_the_study():
    config = StudyConfig.for_profile("full")
    assert config.models == ("dnn", "convnet", "resnet")
    assert config.learning_rates == (0.1, 0.01, 0.001, 0.0001)
    assert (config.epochs, config.batch_size, config.train_subset) == (10, 32, None)
    assert (config.gradient_models, config.gradient_epochs, config.gradient_learning_rate) == (
        ("resnet_plain", "resnet"), 20, 0.001)


def test_quick_profile_shrinks_the_same_object():
    config = StudyConfig.for_profile("quick", artifacts_dir=Path("/tmp/x"))
    assert config.learning_rates == (0.01, 0.001) and config.epochs == 1
    assert config.train_subset == 2000 and config.gradient_epochs == 2
    assert config.artifacts_dir == Path("/tmp/x")


def test_overrides_apply_and_none_keeps_the_profile_value():
    config = StudyConfig.for_profile("quick", models=["dnn"], epochs=None, seed=7)
    assert config.models == ("dnn",) and config.epochs == 1 and config.seed == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": ["vgg"]}, "invalid models: unknown model 'vgg'"),
        ({"learning_rates": [0.0]}, "invalid learning_rates: learning rate 0.0 is invalid"),
        ({"learning_rates": [-0.1]}, "learning rate -0.1 is invalid; expected a positive number"),
        ({"learning_rates": ["fast"]}, "invalid learning_rates"),
        ({"learning_rates": [float("nan")]}, "learning rate nan is invalid"),
        ({"epochs": 0}, "invalid epochs: must be at least 1"),
        ({"workers": 0}, "invalid workers: must be at least 1"),
        ({"models": [], "gradient_models": []}, "the training grid is empty"),
        ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
        ({"regression_tolerance": 2}, "invalid regression_tolerance"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_parameter(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StudyConfig.for_profile("full", **overrides)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'huge'; expected one of: full, quick"):
        StudyConfig.for_profile("huge")
