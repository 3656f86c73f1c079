"""Tests for mnist_models.quiet: a real child Python imports TensorFlow and runs an op, with and without it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mnist_models.quiet import banners_filtered, is_banner, quiet_environment

IMPORT_AND_RUN_ONE_OP = """
    import contextlib, os, sys
    from mnist_models.quiet import banners_filtered
    with (banners_filtered() if sys.argv[1] == "filtered" else contextlib.nullcontext()):
        import tensorflow as tf
        os.write(2, b"a genuine message written during the import\\n")
    print(float(tf.reduce_sum(tf.ones((3, 3)))))
"""

BANNER = ("I0000 00:00:1795882836.104109    5029 port.cc:153] oneDNN custom operations are on. You may see slightly "
          "different numerical results due to floating-point round-off errors from different computation orders. "
          "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n")


def _start_tensorflow(mode: str) -> subprocess.CompletedProcess:
    """A child Python with quiet_environment() (and no TF_CPP_* of ours) that imports TensorFlow, runs one op."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TF_")}
    environment.update(quiet_environment())
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(IMPORT_AND_RUN_ONE_OP), mode], env=environment,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "9.0"
    return child


def test_a_worker_starts_tensorflow_without_banners_but_with_its_own_messages():
    child = _start_tensorflow("filtered")

    assert child.stderr == "a genuine message written during the import\n"


def test_the_environment_alone_does_not_silence_the_onednn_banner():
    # Why banners_filtered exists: if TensorFlow ever honours TF_CPP_MIN_LOG_LEVEL for this banner, this
    # fails, and the file-descriptor redirect can go.
    child = _start_tensorflow("plain")

    banners = [line for line in child.stderr.splitlines() if is_banner(line)]
    if not any("oneDNN" in line for line in banners) and "avx512" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("TensorFlow enables its oneDNN custom operations (and prints their banner) only on CPUs with "
                    "AVX-512; this one has none")
    assert any("oneDNN custom operations are on" in line for line in banners), child.stderr
    assert "a genuine message written during the import" in child.stderr


def test_only_banner_lines_are_held_back_in_order(capfd):
    with banners_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, BANNER.encode())
        print("first, from Python", file=sys.stderr)
        os.write(2, b"E0000 00:00:1795882836.1 5029 some_op.cc:12] a real error\n")

    assert capfd.readouterr().err == "first, from Python\nE0000 00:00:1795882836.1 5029 some_op.cc:12] a real error\n"

