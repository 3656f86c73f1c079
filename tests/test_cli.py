"""The command lines answer --help, listing an option for every configuration field; each script is asked once."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_models.config import DataConfig, StudyConfig

REPOSITORY = Path(__file__).resolve().parents[1]
FLAGS = {"mirrors": "--mirror"}  # given once per mirror, so the flag is singular


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], cwd=REPOSITORY, capture_output=True, text=True, timeout=120)


@functools.cache
def help_of(*arguments: str) -> str:
    completed = run(*arguments, "--help")
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def lists(flag: str, text: str) -> bool:
    """Whether `text` shows `flag` itself (`--seed`, not only `--seeds`)."""
    return re.search(re.escape(flag) + r"(?![\w-])", text) is not None


@pytest.mark.parametrize(("script", "config"), [("flows/full_study.py", StudyConfig),
                                                ("flows/prepare_data.py", DataConfig)])
def test_a_flow_s_help_has_a_flag_for_every_configuration_field(script, config):
    shown = help_of(script)
    missing = [name for name in config.model_fields if not lists(FLAGS.get(name, "--" + name.replace("_", "-")), shown)]
    assert missing == [], f"{script} --help lists no flag for {missing}"


def test_the_study_s_help_states_each_profile_s_default():
    shown = " ".join(help_of("flows/full_study.py").split())
    assert "--epochs EPOCHS epochs per sweep run (1 to 1000) (default: 10; quick: 1)" in shown
    assert "(default: 0.1,0.01,0.001,0.0001; quick: 0.01,0.001)" in shown
    assert ("--train-subset TRAIN_SUBSET train on a stratified subset of this many images "
            "(default: all; quick: 2000)") in shown
    assert "(default: 20; quick: 2)" in shown and "(default: none; replicated: 3)" in shown
    assert "--batch-size BATCH_SIZE training batch size (1 to 60000) (default: 32)" in shown


def test_the_data_flow_offers_no_training_options():
    shown = help_of("flows/prepare_data.py")
    assert not any(lists(flag, shown) for flag in ("--epochs", "--models", "--learning-rates", "--profile"))


def test_champions_help_lists_both_commands_and_their_options():
    assert all(command in help_of("flows/champions.py") for command in ("list", "rollback"))
    assert all(lists(flag, help_of("flows/champions.py", "list")) for flag in ("--artifacts-dir", "--model"))
    rollback = help_of("flows/champions.py", "rollback")
    assert all(lists(flag, rollback) for flag in ("--artifacts-dir", "--model", "--to-version"))


def test_champions_without_a_command_says_which_it_expects():
    completed = run("flows/champions.py")
    assert completed.returncode == 2
    assert "{list,rollback}" in completed.stderr and "required" in completed.stderr
