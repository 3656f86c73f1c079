"""The study's architectures: exact parameter counts, layer names, registry errors."""

import pytest

from mnist_models import MODEL_NAMES, build_model

EXPECTED_PARAMETERS = {"dnn": 15_866, "convnet": 93_322, "resnet": 348_362, "resnet_plain": 344_138}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMETERS))
def test_parameter_counts_match_the_study(name):
    model = build_model(name)
    assert model.count_params() == EXPECTED_PARAMETERS[name]
    assert model.output_shape == (None, 10)
    assert model.input_shape == (None, 28, 28, 1)


def test_target_layer_follows_the_study_formula():
    target = build_model("resnet").get_layer("target_layer")
    assert target.count_params() == 3 * 3 * 32 * 1 + 32 == 320


def test_resnet_has_the_stride_4_shortcut_and_plain_does_not():
    resnet, plain = build_model("resnet"), build_model("resnet_plain")
    shortcut = resnet.get_layer("shortcut")
    assert shortcut.strides == (4, 4) and shortcut.kernel_size == (1, 1)
    assert any(type(layer).__name__ == "Add" for layer in resnet.layers)
    assert not any(type(layer).__name__ == "Add" for layer in plain.layers)
    assert plain.get_layer("target_layer").count_params() == 320


def test_models_are_uncompiled():
    assert not build_model("dnn").compiled


def test_unknown_model_lists_the_known_names():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*dnn, convnet, resnet, resnet_plain"):
        build_model("vgg")


def test_every_registered_model_has_its_parameter_count_checked():
    assert set(MODEL_NAMES) == set(EXPECTED_PARAMETERS)
