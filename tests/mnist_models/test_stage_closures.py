"""What each stage's key holds: its code files (a snapshot: widening one is a visible diff), code counted by
what runs, the content of the data it reads, and the settings measured not to change its numbers.

The edits are real source edits in a copy of the project, read by `python -c` with the copy on PYTHONPATH
(provenance finds the files through importlib, as the pipeline does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_models.architectures import MODEL_NAMES
from mnist_models.planning import run_spec
from mnist_models.provenance import code_closure, digest

REPOSITORY = Path(__file__).resolve().parents[2]
TRAINING = ["mnist_models/__init__.py", "mnist_models/architectures/__init__.py", "mnist_models/atomic_files.py",
            "mnist_models/data.py", "mnist_models/feeding.py", "mnist_models/hashing.py", "mnist_models/hparams.py",
            "mnist_models/layout.py", "mnist_models/memory.py", "mnist_models/parquet_pages.py",
            "mnist_models/records.py", "mnist_models/runs.py", "mnist_models/training.py",
            "mnist_models/validation.py"]
FINDINGS = [f"mnist_models/findings/{name}.py" for name in (
    "__init__", "accuracy", "across_seeds", "conclusion", "data", "gradients", "method", "models", "nightly", "numbers",
    "performance", "problems", "selection")]
# What the study's tables, figures and report import (they share the outputs registry and the figure families it
# draws with); the report adds its findings and templates.
OUTPUTS = sorted(["mnist_models/__init__.py", "mnist_models/architectures/__init__.py", "mnist_models/atomic_files.py",
                  "mnist_models/champions.py", "mnist_models/data.py", "mnist_models/evaluation.py",
                  "mnist_models/feeding.py", "mnist_models/hashing.py", "mnist_models/layout.py",
                  "mnist_models/metrics.py", "mnist_models/outputs.py", "mnist_models/parquet_pages.py",
                  *(f"mnist_models/plots/{name}.py" for name in ("__init__", "accuracy_curves", "canvas", "checks",
                                                                 "gradients", "lr_sweep", "per_class")),
                  "mnist_models/prediction.py", "mnist_models/quiet.py", "mnist_models/records.py",
                  "mnist_models/replicates.py", "mnist_models/runs.py", "mnist_models/study_reference.py",
                  "mnist_models/table_builders.py", "mnist_models/tables.py", "tasks/__init__.py",
                  "tasks/study_tables.py"])
EXPECTED = {
    "train dnn": sorted([*TRAINING, "mnist_models/architectures/dnn.py"]),
    "train convnet": sorted([*TRAINING, "mnist_models/architectures/convnet.py"]),
    "train resnet": sorted([*TRAINING, "mnist_models/architectures/resnet.py"]),
    "train resnet_plain": sorted([*TRAINING, "mnist_models/architectures/resnet.py"]),
    # Evaluation reads a run's manifest (runs.py), not the training loop.
    "evaluate": sorted([*(set(TRAINING) - {"mnist_models/hparams.py", "mnist_models/training.py",
                                           "mnist_models/validation.py"}),
                        "mnist_models/evaluation.py", "mnist_models/isolation.py", "mnist_models/metrics.py",
                        "mnist_models/placement.py", "mnist_models/prediction.py", "mnist_models/provenance.py",
                        "mnist_models/quiet.py", "tasks/__init__.py", "tasks/evaluation.py"]),
    "predictions": ["mnist_models/__init__.py", "mnist_models/architectures/__init__.py",
                    "mnist_models/atomic_files.py", "mnist_models/data.py", "mnist_models/feeding.py",
                    "mnist_models/hashing.py", "mnist_models/layout.py", "mnist_models/parquet_pages.py",
                    "mnist_models/prediction.py", "mnist_models/validation.py"],
    "tables": OUTPUTS,
    "figures": sorted([*OUTPUTS, "mnist_models/plots/images.py", "mnist_models/plots/saving.py", "tasks/figures.py"]),
    "report": sorted([*OUTPUTS, *FINDINGS, "mnist_models/report.py", "tasks/report.py"]),
    "data": ["mnist_models/__init__.py", "mnist_models/architectures/__init__.py", "mnist_models/atomic_files.py",
             "mnist_models/data.py", "mnist_models/download.py", "mnist_models/idx.py", "mnist_models/layout.py",
             "mnist_models/parquet_pages.py", "mnist_models/tables.py", "tasks/__init__.py", "tasks/data.py"],
}
# Each stage's code key, as the pipeline computes it; printed as JSON by `python -c` in a copy of the project.
KEYS_SCRIPT = """
import json
import mnist_models
from mnist_models.architectures import MODEL_NAMES
from mnist_models.planning import run_spec
from mnist_models.provenance import code_closure
keys = {f"train {model}": run_spec(model, 0.001, 1, 32, 42, None, "mnist", "data").code_files for model in MODEL_NAMES}
keys["run ids"] = {model: run_spec(model, 0.001, 1, 32, 42, None, "mnist", "data").run_id for model in MODEL_NAMES}
for stage, modules in {"evaluate": ("tasks.evaluation",),
                       "predictions": ("mnist_models.prediction", "mnist_models.validation"),
                       "tables": ("tasks.study_tables",), "figures": ("tasks.figures",), "report": ("tasks.report",),
                       "data": ("tasks.data",)}.items():
    keys[stage] = code_closure(*modules)
keys["origin"] = mnist_models.__file__
print(json.dumps(keys))
"""


def stage_code_files() -> dict[str, list[str]]:
    """Each stage's code files, as its key holds them."""
    files = {f"train {model}": sorted(run_spec(model, 0.001, 1, 32, 42, None, "mnist", "data").code_files)
             for model in MODEL_NAMES}
    for stage, modules in {"evaluate": ("tasks.evaluation",),
                           "predictions": ("mnist_models.prediction", "mnist_models.validation"),
                           "tables": ("tasks.study_tables",), "figures": ("tasks.figures",),
                           "report": ("tasks.report",), "data": ("tasks.data",)}.items():
        files[stage] = sorted(code_closure(*modules))
    return files


def test_each_stage_keys_exactly_these_code_files():
    """Training holds what can change its numbers: no table writer, no worker plumbing, no other model."""
    assert stage_code_files() == EXPECTED


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project's source, to edit."""
    copy = tmp_path / "project"
    shutil.copytree(REPOSITORY, copy, ignore=shutil.ignore_patterns(
        ".venv", ".git", "artifacts*", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    return copy


def keys_of(copy: Path) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run([sys.executable, "-c", KEYS_SCRIPT], cwd=copy, env=environment, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    keys = json.loads(done.stdout)
    assert Path(keys.pop("origin")).is_relative_to(copy)  # the copy's source, not the installed project's
    return keys


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in {path}"
    path.write_text(text.replace(old, new))


def training_keys(keys: dict) -> dict:
    return {stage: files for stage, files in keys.items() if stage.startswith("train ")}


def test_a_comment_retrains_nothing_and_a_statement_reruns_the_stages_that_run_it(project):
    before = keys_of(project)
    tables, training = project / "mnist_models" / "tables.py", project / "mnist_models" / "training.py"
    with tables.open("a") as source:
        source.write("# Markdown tables are GitHub-flavoured.\n")
    edit(training, '"""Set TensorFlow\'s thread pools;', '"""Set the thread pools of TensorFlow;')
    edit(training, "HISTOGRAM_BINS = 40\n", "HISTOGRAM_BINS = (\n    40\n)  # bins of the kernel histograms\n")
    assert keys_of(project) == before

    edit(tables, 'float_format: str = "{:.4g}"', 'float_format: str = "{:.5g}"')  # a table format: no retraining
    after_tables = keys_of(project)
    assert training_keys(after_tables) == training_keys(before) and after_tables["run ids"] == before["run ids"]
    for stage in ("tables", "figures", "report", "data"):
        assert after_tables[stage]["mnist_models/tables.py"] != before[stage]["mnist_models/tables.py"], stage

    edit(training, "HISTOGRAM_BINS = (\n    40\n)", "HISTOGRAM_BINS = 41")
    after_training = keys_of(project)
    for stage, files in training_keys(after_training).items():
        assert files["mnist_models/training.py"] != before[stage]["mnist_models/training.py"], stage
    assert all(after_training["run ids"][model] != before["run ids"][model] for model in MODEL_NAMES)


def test_adding_a_model_or_rewording_one_retrains_no_other_model(project):
    registry = project / "mnist_models" / "architectures" / "__init__.py"
    before = keys_of(project)
    edit(registry, '    "convnet": ModelSpec(', '    "dnn_again": ModelSpec(module="mnist_models.architectures.dnn", builder="build_dnn",\n'
         '                           description="the dense network again", epoch_seconds=4.3),\n'
         '    "convnet": ModelSpec(')
    added = keys_of(project)
    assert {model: added["run ids"][model] for model in MODEL_NAMES} == before["run ids"]
    assert "dnn_again" in added["run ids"]

    # The report's description and the planner's measured cost are not what trains: no run id changes.
    edit(registry, 'description="a dense network on the flattened pixels (study figure 2.1)", epoch_seconds=4.3',
         'description="a multilayer perceptron on the flattened pixels", epoch_seconds=5.0')
    assert keys_of(project)["run ids"] == added["run ids"]

    edit(registry, 'ModelSpec(module="mnist_models.architectures.dnn", builder="build_dnn",\n                     description',
         'ModelSpec(module="mnist_models.architectures.convnet", builder="build_convnet",\n                     description'
         )  # what dnn is: dnn's runs retrain
    changed = keys_of(project)["run ids"]
    assert changed["dnn"] != before["run ids"]["dnn"]
    assert {model: changed[model] for model in MODEL_NAMES if model != "dnn"} == \
        {model: run_id for model, run_id in before["run ids"].items() if model != "dnn"}


def test_the_data_key_is_the_parquet_content(prefect_harness, mnist_dir, project, tmp_path):
    """Changing how the IDX pixels are parsed rebuilds the Parquet, and every run downstream gets a new key."""
    from prefect.settings import PREFECT_API_URL

    script = "\n".join([
        "import json, sys", "from flows.prepare_data import prepare_data", "from mnist_models.config import DataConfig",
        "from mnist_models.planning import run_spec",
        "data = prepare_data(DataConfig(artifacts_dir=sys.argv[1], mirrors=[sys.argv[2]]))",
        "run_id = run_spec('dnn', 0.001, 1, 32, 42, None, 'mnist', data.content_hash).run_id",
        "print(json.dumps({**data.model_dump(mode='json'), 'run_id': run_id}))"])
    artifacts = tmp_path / "artifacts"
    environment = {key: value for key, value in os.environ.items() if key not in ("MNIST_MIRROR", "PREFECT_PROFILE")}
    environment.update(PYTHONPATH=str(project), PREFECT_HOME=str(tmp_path / "prefect"),
                       PREFECT_API_URL=PREFECT_API_URL.value())  # the harness's server, not a temporary one

    def prepare() -> dict:
        done = subprocess.run([sys.executable, "-c", script, str(artifacts), str(mnist_dir)], cwd=project,
                              env=environment, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def sha256(split: str) -> str:
        return hashlib.sha256((artifacts / "data" / "mnist" / f"{split}.parquet").read_bytes()).hexdigest()

    first = prepare()
    assert first["test_hash"] == sha256("test")
    assert first["content_hash"] == digest({"train": sha256("train"), "test": sha256("test")})

    edit(project / "mnist_models" / "idx.py",
         "    return np.frombuffer(data, dtype=dtype, offset=header_length).reshape(shape)\n",
         "    array = np.frombuffer(data, dtype=dtype, offset=header_length).reshape(shape)\n"
         "    return np.ascontiguousarray(array[:, :, ::-1]) if array.ndim == 3 else array  # mirrored\n")
    second = prepare()
    assert second["test_hash"] == sha256("test") != first["test_hash"]  # what evaluation keys on
    assert second["content_hash"] != first["content_hash"] and second["run_id"] != first["run_id"]


# Trains each model for one epoch in a fresh process (TensorFlow's thread count is fixed once it starts), and
# saves its weights.
THREADS_SCRIPT = """
import sys
from pathlib import Path
import keras
import numpy as np
from mnist_models.layout import RunFolder
from mnist_models.planning import run_spec
from mnist_models.training import train_run
train, test, threads, out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
for model in ("dnn", "convnet"):
    spec = run_spec(model, 0.001, 1, 32, 42, None, "mnist", "data", threads)
    folder = RunFolder(out / model / spec.run_id)  # a runs folder per model and thread count: nothing to continue
    train_run(spec, train, test, folder, log=lambda line: None)
    np.savez(out / f"{model}.npz", *keras.saving.load_model(folder.model).get_weights())
"""


@pytest.fixture(scope="module")
def weights_by_threads(small_splits, tmp_path_factory) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """threads -> model -> the weights after one epoch on 2,000 images (dnn and convnet, seed 42)."""
    weights = {}
    for threads in (1, 2):
        out = tmp_path_factory.mktemp(f"threads-{threads}")
        done = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(small_splits["train"]),
                               str(small_splits["test"]), str(threads), str(out)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        weights[threads] = {model: dict(np.load(out / f"{model}.npz")) for model in ("dnn", "convnet")}
    return weights


def _differing(weights_by_threads, model: str) -> list[str]:
    one, two = weights_by_threads[1][model], weights_by_threads[2][model]
    assert one.keys() == two.keys() and len(one) > 2
    return [name for name in one if one[name].tobytes() != two[name].tobytes()]


def test_the_dense_network_trains_bit_identical_weights_on_one_or_two_threads(weights_by_threads):
    assert _differing(weights_by_threads, "dnn") == []


def test_the_thread_count_is_in_the_key_because_convolutions_round_differently_on_it(weights_by_threads):
    """Measured: with op determinism on, oneDNN on or off, convnet weights after one epoch on 2,000 images differ
    on 1 and 2 threads (by up to 3e-3). So a run on another count is another run, and never continues one."""
    assert _differing(weights_by_threads, "convnet"), "equal on 1 and 2 threads now: the count could leave the key"
    one, two = (run_spec("convnet", 0.001, 1, 32, 42, None, "mnist", "data", threads) for threads in (1, 2))
    assert one.run_id != two.run_id and one.lineage != two.lineage


def test_the_data_stage_does_not_key_on_the_model_registry(project):
    """Rewording a model's description or adding a model changes no data key (the Parquet is not made again)."""
    script = ("import json, sys; sys.path.insert(0, '.'); from flows.prepare_data import _split_keys; "
              "print(json.dumps({name: key.model_dump() for name, key in _split_keys('mnist', "
              "{'train-images-idx3-ubyte.gz': 'a', 'train-labels-idx1-ubyte.gz': 'b', "
              "'t10k-images-idx3-ubyte.gz': 'c', 't10k-labels-idx1-ubyte.gz': 'd'}).items()}))")

    def data_keys() -> dict:
        done = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(project)}, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    before = data_keys()
    registry = project / "mnist_models" / "architectures" / "__init__.py"
    edit(registry, 'description="a dense network on the flattened pixels (study figure 2.1)"',
         'description="a multilayer perceptron"')
    assert data_keys() == before
