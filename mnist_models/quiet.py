"""Quiet TensorFlow start-up in worker processes.

Found by experiment with TensorFlow 2.21 (tensorflow-cpu, x86-64): `TF_CPP_MIN_LOG_LEVEL` silences
the C++ log lines written once TensorFlow's logging is set up (the cpu_feature_guard banner, and
anything at first op or during training), but not the `oneDNN custom operations are on` banner.
That one is logged by a static initializer of libtensorflow_framework.so (threadpool_device.cc
calls IsMklEnabled), and again by the profiler plugin's own copy, before the initializer that reads
TF_CPP_MIN_LOG_LEVEL has run; absl prints it, after "WARNING: All log messages before
absl::InitializeLog() ...", straight to file descriptor 2. No environment variable reaches it
(tried: TF_CPP_MIN_LOG_LEVEL from 1 to 1000, TF_CPP_MAX_VLOG_LEVEL=-1, TF_CPP_VMODULE,
TF_CPP_VLOG_FILENAME, ABSL_MIN_LOG_LEVEL, GLOG_minloglevel, GLOG_stderrthreshold, GRPC_VERBOSITY);
only TF_ENABLE_ONEDNN_OPTS=0 does, by turning oneDNN off, which changes numerics and speed.

So a worker sets `quiet_environment()` before TensorFlow is imported, and imports it (or Keras)
under `banners_filtered()`, which holds back exactly those banner lines and passes the rest on.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# Start-up lines of TensorFlow builds (CPU and CUDA) that say nothing about the user's run.
BANNER_PATTERNS = tuple(re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"\] oneDNN custom operations are on\. ",
    r"\] This TensorFlow binary is optimized to use available CPU instructions",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    r"\] Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory for plugin",
    r"computation_placer\.cc:\d+\] computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
))


def quiet_environment() -> dict[str, str]:
    """Environment variables that keep TensorFlow's C++ logs off stderr.

    Level 3: TensorFlow 2.21's tf.data logs a harmless version-skew "error" (NodeDef mentions attribute
    use_unbounded_threadpool) on every fit; real failures still arrive as Python exceptions. Set them
    before TensorFlow is imported; `banners_filtered` covers the start-up lines logged before that.
    """
    return {"TF_CPP_MIN_LOG_LEVEL": "3"}


def is_banner(line: str) -> bool:
    """Whether a line of stderr is one of TensorFlow's start-up banners."""
    return any(pattern.search(line.rstrip("\n")) for pattern in BANNER_PATTERNS)


@contextlib.contextmanager
def banners_filtered() -> Iterator[None]:
    """Capture file descriptor 2 during the block, then pass on what was written there except banners.

    Meant for `import tensorflow` at a worker's start: it redirects the whole process's stderr
    for the block, so other threads' messages of that moment arrive after it, in order.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not is_banner(line))
            if kept:
                os.write(2, kept.encode("utf-8"))
