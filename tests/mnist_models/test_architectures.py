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


def test_the_deep_pair_has_depth_blocks_and_differs_only_by_its_shortcuts():
    from mnist_models.architectures import build_model

    deep, plain = build_model("resnet_deep3"), build_model("resnet_plain_deep3")
    assert deep.layers[1].name == plain.layers[1].name == "target_layer"
    assert sum(layer.name.endswith("_add") for layer in deep.layers) == 3
    assert not any(layer.name.endswith("_add") for layer in plain.layers)
    assert sum(layer.name.startswith("block_") and "conv" in layer.name for layer in deep.layers) == 6
    assert deep.count_params() == plain.count_params()  # identity shortcuts add no weights
    assert deep.output_shape == plain.output_shape == (None, 10)


@pytest.mark.parametrize("name", ["resnet_deep0", "resnet_deep65", "resnet_deep", "dnn3", "resnet_plain_deepx"])
def test_a_deep_model_name_needs_a_depth_from_1_to_64(name):
    from mnist_models.architectures import check_model_name

    with pytest.raises(ValueError, match="resnet_deepN, resnet_plain_deepN with N blocks from 1 to 64"):
        check_model_name(name)


def test_the_gradient_depth_trains_the_deep_pair_and_keys_only_its_entry():
    from mnist_models.config import StudyConfig
    from mnist_models.planning import plan_runs

    config = StudyConfig(models=["dnn"], learning_rates=[0.01], gradient_depth=8)
    assert config.gradient_pair == ("resnet_plain_deep8", "resnet_deep8")
    gradient = [run for run in plan_runs(config, "data") if run.serves("gradient")]
    assert [run.spec.model for run in gradient] == ["resnet_plain_deep8", "resnet_deep8"]
    assert "mnist_models/architectures/deep.py" in gradient[0].spec.code_files
    assert "mnist_models/architectures/resnet.py" not in gradient[0].spec.code_files
    study_pair = StudyConfig(models=["dnn"], learning_rates=[0.01], gradient_depth=1).gradient_pair
    assert study_pair == ("resnet_plain", "resnet")


def test_several_gradient_depths_train_one_pair_each_from_the_command_line():
    from flows._runtime import parse_config
    from mnist_models.config import StudyConfig

    config = parse_config(StudyConfig, "study", ["--gradient-depth", "16,1,4", "--models", "dnn"], check_machine=False)
    assert config.gradient_depth == (1, 4, 16)  # sorted: the report's table reads from shallow to deep
    assert config.gradient_pair == ("resnet_plain", "resnet", "resnet_plain_deep4", "resnet_deep4",
                                    "resnet_plain_deep16", "resnet_deep16")
    assert StudyConfig(gradient_depth=8).gradient_depth == (8,)  # one depth, as a stored form or older call gives it
    assert StudyConfig(gradient_depth=(8,), gradient_models=()).gradient_pair == ()  # no gradient experiment
    for depths, message in (((4, 4), "gradient depths are listed twice"), ((0,), "at least 1, got 0"),
                            ((), "expected at least one depth"), ((65,), "at most 64")):
        with pytest.raises(ValueError, match=message):
            StudyConfig(gradient_depth=depths)
