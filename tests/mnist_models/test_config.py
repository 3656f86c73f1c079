"""The validated study configuration: profiles and clear messages for bad values; the preflight checks
(flows/_runtime.py) that a configuration from a deployment gets as well as one from the command line."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows._runtime import checked_config, config_parser, preflight
from mnist_models import planning
from mnist_models.config import (MAX_BATCH_SIZE, MAX_EPOCHS, MAX_KEEP_NIGHTS, MAX_SEEDS, MAX_WORKERS, PROFILE_FIELDS,
                                 StudyConfig, profile_defaults)

REPOSITORY = Path(__file__).resolve().parents[2]


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


def _form_values(**given: object) -> dict:
    """What the Prefect UI's run form submits for the configuration: the given values, every other field at its
    schema default."""
    fields = StudyConfig.model_json_schema()["properties"]
    return {**{name: field.get("default") for name, field in fields.items()}, **given}


def test_the_schema_leaves_every_field_a_profile_sets_to_the_profile():
    fields = StudyConfig.model_json_schema()["properties"]
    assert PROFILE_FIELDS >= {"learning_rates", "epochs", "gradient_epochs", "train_subset", "replicates"}
    for name in PROFILE_FIELDS:
        assert fields[name]["default"] is None, name
        assert {"type": "null"} in fields[name]["anyOf"], name  # the form can send "unset"
    assert fields["epochs"]["description"].endswith("(1 to 1000) (default: 10; quick: 1)")
    assert "(default: 0.1,0.01,0.001,0.0001; quick: 0.01,0.001)" in fields["learning_rates"]["description"]
    assert "(default: none; replicated: 3)" in fields["replicates"]["description"]
    assert "(default: all; quick: 2000)" in fields["train_subset"]["description"]
    assert profile_defaults("gradient_epochs") == {"full": 20, "quick": 2, "replicated": 20}


@pytest.mark.parametrize("profile", ["full", "quick", "replicated"])
def test_a_form_submitted_untouched_or_with_only_the_profile_changed_runs_that_profile(profile):
    submitted = StudyConfig.validated(**_form_values(profile=profile, artifacts_dir="artifacts-quick"))

    assert submitted == StudyConfig.for_profile(profile, artifacts_dir="artifacts-quick")
    planned = planning.plan_runs(submitted, data_hash="0" * 64)
    assert [run.run_id for run in planned] == [
        run.run_id for run in planning.plan_runs(StudyConfig.for_profile(profile), data_hash="0" * 64)]


def test_the_quick_form_plans_the_quick_grid():
    planned = planning.plan_runs(StudyConfig.validated(**_form_values(profile="quick")), data_hash="0" * 64)

    assert len(planned) == 3 * 2 + 2  # 3 models x 2 learning rates, and the gradient pair
    assert {run.spec.epochs for run in planned} == {1, 2} and {run.spec.train_subset for run in planned} == {2000}


def test_a_configuration_built_without_validation_is_validated_by_the_flow(tmp_path, mnist_mirror):
    # What a flow receives as its signature's default or from a caller: checked_config validates it again.
    unchecked = StudyConfig.model_construct(profile="quick", artifacts_dir=tmp_path / "artifacts", workers=1)

    config = checked_config(unchecked)

    assert config == StudyConfig.for_profile("quick", artifacts_dir=tmp_path / "artifacts", workers=1)


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
        ({"epochs": 1_000_000_000}, "invalid epochs: must be at most 1,000, got 1,000,000,000"),
        ({"gradient_epochs": MAX_EPOCHS + 1}, "invalid gradient_epochs: must be at most 1,000, got 1,001"),
        ({"batch_size": MAX_BATCH_SIZE + 1}, "invalid batch_size: must be at most 60,000, got 60,001"),
        ({"replicates": MAX_SEEDS + 1}, "invalid replicates: must be at most 100, got 101"),
        ({"seeds": list(range(MAX_SEEDS + 1))}, "invalid seeds: got 101 seeds; expected at most 100"),
        ({"workers": MAX_WORKERS + 1}, "invalid workers: must be at most 256, got 257"),
        ({"keep_nights": MAX_KEEP_NIGHTS + 1}, "invalid keep_nights: must be at most 3,650, got 3,651"),
        ({"seed": 4294967295, "replicates": 3},
         "--seed 4294967295 with --replicates 3 trains with seeds up to 4294967297; expected every seed in "
         "[0, 2**32): a --seed of at most 4294967293, or fewer replicates"),
        ({"learning_rates": [0.001, 0.0010000001]},
         "invalid learning_rates: learning rates 0.001 and 0.0010000001 are both printed as 0.001 in run ids and "
         "tables; expected rates that differ in their first 6 significant digits"),
        ({"learning_rates": [0.01, 0.001], "gradient_learning_rate": 0.0010000001},
         "gradient_learning_rate 0.0010000001 and learning rate 0.001 are both printed as 0.001"),
        ({"dask_address": "scheduler:8786"}, "invalid dask_address: expected a tcp:// or tls:// address with a host "
                                             "and a port, such as tcp://10.0.0.5:8786, got 'scheduler:8786'"),
        ({"dask_address": "tcp://scheduler"}, "invalid dask_address: expected a tcp:// or tls://"),
        ({"dask_address": "tcp://:8786"}, "invalid dask_address: expected a tcp:// or tls://"),
        ({"dask_address": "tcp://scheduler:99999"}, "invalid dask_address: expected a tcp:// or tls://"),
        ({"dask_address": "http://scheduler:8786"}, "invalid dask_address: expected a tcp:// or tls://"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_parameter(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        StudyConfig.for_profile("full", **overrides)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'huge'; expected one of: full, quick"):
        StudyConfig.for_profile("huge")


@pytest.mark.parametrize(
    "overrides",
    [{"epochs": MAX_EPOCHS, "gradient_epochs": MAX_EPOCHS, "batch_size": MAX_BATCH_SIZE, "workers": MAX_WORKERS,
      "keep_nights": MAX_KEEP_NIGHTS, "replicates": MAX_SEEDS},
     {"seed": 2**32 - 3, "replicates": 3},  # the last seed is 2**32 - 1
     {"learning_rates": [0.001, 0.0011], "gradient_learning_rate": 0.001},  # the same rate is fine
     {"learning_rates": [0.001], "gradient_learning_rate": 0.0010000001, "gradient_models": []},
     {"dask_address": "tcp://10.0.0.5:8786"}, {"dask_address": "tls://[::1]:8786"}],
)
def test_values_at_the_limits_are_accepted(overrides):
    StudyConfig.for_profile("full", **overrides)


def test_the_limits_are_stated_in_the_help():
    options = {action.dest: action.help for action in config_parser(StudyConfig, "")._actions}
    assert "(1 to 1000)" in options["epochs"] and "(1 to 1000)" in options["gradient_epochs"]
    assert "(1 to 60000)" in options["batch_size"]
    assert "1 to 100" in options["replicates"] and "at most 100 seeds" in options["seeds"]
    assert "1 to 256" in options["workers"] and "1 to 3650" in options["keep_nights"]
    assert "tcp:// or tls:// address with host and port" in options["dask_address"]


# --------------------------------------------------------------------------- preflight (flows/_runtime.py)


def test_preflight_passes_a_usable_configuration_and_creates_the_artifacts_root(tmp_path, mnist_mirror):
    config = StudyConfig(artifacts_dir=tmp_path / "artifacts", workers=1)  # as a deployment builds it

    assert preflight(config) is None
    assert (tmp_path / "artifacts").is_dir()


@pytest.mark.parametrize(("mirror", "message"), [
    ("http:/x", "mirror 'http:/x' names no host; expected an http(s) URL with a host"),
    ("ftp://reader:s3cret@mirror.example/", "mirror 'ftp://mirror.example/' has unsupported scheme 'ftp'"),
])
def test_preflight_refuses_a_bad_mirror_of_a_deployment(tmp_path, mirror, message):
    config = StudyConfig(mirrors=(mirror,), artifacts_dir=tmp_path / "artifacts")  # no command line involved

    with pytest.raises(ValueError) as caught:
        preflight(config)
    assert str(caught.value).startswith(message)
    assert "s3cret" not in str(caught.value)


def test_preflight_refuses_a_bad_mirror_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_MIRROR", str(tmp_path / "no-such-folder"))

    with pytest.raises(ValueError, match="no-such-folder' is not an existing directory nor a URL"):
        preflight(StudyConfig(artifacts_dir=tmp_path / "artifacts"))


def test_preflight_refuses_an_artifacts_root_that_cannot_be_written(tmp_path, mnist_mirror):
    (tmp_path / "a-file").write_text("not a folder")

    with pytest.raises(ValueError, match="artifacts directory .*a-file/artifacts' cannot be written .*expected a "
                                         "directory this user can create files in"):
        preflight(StudyConfig(artifacts_dir=tmp_path / "a-file" / "artifacts"))


def test_preflight_refuses_more_workers_than_memory_holds(tmp_path, mnist_mirror):
    manifest = tmp_path / "artifacts" / "runs" / "run-a" / "manifest.json"  # an earlier run that needed 100 TB
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"peak_memory_mb": 1e8}))

    with pytest.raises(ValueError, match=r"invalid workers: 2 parallel runs do not fit this machine .*expected at "
                                         r"most 1"):
        preflight(StudyConfig(artifacts_dir=tmp_path / "artifacts", workers=2))


def test_the_command_line_refuses_seeds_beyond_32_bits_before_any_work(tmp_path):
    artifacts = tmp_path / "artifacts"
    child = subprocess.run([sys.executable, "flows/full_study.py", "--seed", "4294967295", "--replicates", "3",
                            "--artifacts-dir", str(artifacts)],
                           cwd=REPOSITORY, capture_output=True, text=True, timeout=300)

    assert child.returncode == 1
    assert child.stderr.splitlines() == [
        "error: invalid parameters: --seed 4294967295 with --replicates 3 trains with seeds up to 4294967297; "
        "expected every seed in [0, 2**32): a --seed of at most 4294967293, or fewer replicates"]
    assert not artifacts.exists() or list(artifacts.iterdir()) == []
