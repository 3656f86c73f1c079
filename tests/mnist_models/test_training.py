"""One training run per model on a slice of real MNIST: its folder, its manifest, its determinism."""

import json
import shutil

import pandas as pd
import pytest

from mnist_models.layout import RunFolder
from mnist_models.planning import run_spec
from mnist_models.records import RunSpec
from mnist_models.runs import read_manifest
from mnist_models.training import train_run


def spec_for(model: str, epochs: int = 1, seed: int = 3, learning_rate: float = 0.001) -> RunSpec:
    return run_spec(model, learning_rate, epochs, 32, seed, 500, "mnist", "test-data-hash")


@pytest.mark.parametrize("model", ["dnn", "convnet", "resnet", "resnet_plain"])
def test_one_run_writes_a_complete_trustworthy_folder(model, small_splits, tmp_path):
    spec = spec_for(model)
    lines = []
    folder = RunFolder(tmp_path / spec.run_id)
    trained = train_run(spec, small_splits["train"], small_splits["test"], folder, log=lines.append)
    run_dir = folder.path
    for path in folder.training_files:
        assert path.exists(), path
    assert any((run_dir / "tensorboard" / "train").iterdir())
    manifest = read_manifest(folder)
    assert manifest is not None and trained.spec == spec and trained.parameters == manifest["trainable_parameters"]
    assert set(manifest["file_hashes"]) >= {"model.keras", "history.parquet", "gradients.parquet"}
    assert manifest["code_files"]["mnist_models/training.py"] == spec.code_files["mnist_models/training.py"]
    assert manifest["parameters"]["model"] == model and manifest["seed"] == 3
    assert manifest["train_images"] == 500 and manifest["data_hash"] == "test-data-hash"
    assert {"tensorflow", "keras", "python"} <= set(manifest["versions"])
    assert 0.0 <= manifest["final_metrics"]["val_accuracy"] <= 1.0
    from mnist_models.architectures import build_model, describe_layers  # the model_summary table's rows

    assert manifest["layers"] == describe_layers(build_model(model))
    assert sum(layer["parameters"] for layer in manifest["layers"]) == manifest["trainable_parameters"]
    assert lines == [line for line in lines if line.startswith(spec.run_id)] and len(lines) == 1  # one per epoch

    history = pd.read_parquet(run_dir / "history.parquet")
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
    gradients = pd.read_parquet(run_dir / "gradients.parquet")
    assert sorted(gradients["epoch"].unique()) == [0, 1]
    assert (gradients["gradient_norm"] > 0).all()
    histograms = pd.read_parquet(run_dir / "kernel_histograms.parquet")
    if model.startswith("resnet"):
        assert set(histograms["layer"]) == {"target_layer"}
        assert histograms.groupby("epoch")["count"].sum().tolist() == [3 * 3 * 32, 3 * 3 * 32]


@pytest.mark.parametrize("model", ["dnn", "resnet"])
def test_gradient_norms_are_the_probe_s_per_batch_norms_to_the_last_bit(model, small_splits, tmp_path):
    """gradients.parquet holds, per kernel, the mean and standard deviation over the probe's training-size batches
    of the kernel's gradient norm, each batch's computed on its own: the same numbers, to the last bit, as one
    traced call per batch (the recorder runs all batches in one call into TensorFlow)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from mnist_models import data as data_lib
    from mnist_models.training import GRADIENT_PROBE

    spec = spec_for(model, seed=5)
    folder = RunFolder(tmp_path / spec.run_id)
    train_run(spec, small_splits["train"], small_splits["test"], folder, log=lambda _: None)
    train = data_lib.stratified_subset(data_lib.load_split(small_splits["train"]), spec.train_subset, spec.seed)
    rows = np.random.default_rng(spec.seed).choice(len(train), min(GRADIENT_PROBE, len(train)), replace=False)
    trained = keras.saving.load_model(folder.model)
    kernels = [layer.kernel for layer in trained.layers if hasattr(layer, "kernel")]
    loss_function = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def batch_norms(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_function(labels, trained(images, training=False))
        return tf.stack([tf.norm(gradient) for gradient in tape.gradient(loss, kernels)])

    batches = len(rows) // spec.batch_size
    per_batch = np.stack([batch_norms(train.images[rows[start:start + spec.batch_size]],
                                      train.labels[rows[start:start + spec.batch_size]]).numpy()
                          for start in range(0, batches * spec.batch_size, spec.batch_size)])
    recorded = pd.read_parquet(folder.gradients).query("epoch == 1")
    assert recorded["layer"].tolist() == [layer.name for layer in trained.layers if hasattr(layer, "kernel")]
    assert (recorded["probe_batches"] == batches).all() and batches == 500 // 32
    np.testing.assert_array_equal(recorded["gradient_norm"].to_numpy(), per_batch.mean(axis=0))
    np.testing.assert_array_equal(recorded["gradient_norm_sd"].to_numpy(), per_batch.std(axis=0, ddof=1))


def test_same_seed_same_history_and_another_seed_differs(small_splits, tmp_path):
    runs = {}
    for label, seed in (("first", 11), ("again", 11), ("other", 12)):
        spec = spec_for("dnn", epochs=2, seed=seed)
        folder = RunFolder(tmp_path / label / spec.run_id)  # separate runs folders: nothing to continue from
        train_run(spec, small_splits["train"], small_splits["test"], folder, log=lambda _: None)
        runs[label] = pd.read_parquet(folder.history).drop(columns="seconds")
    pd.testing.assert_frame_equal(runs["first"], runs["again"])
    assert not runs["first"].equals(runs["other"])


def test_a_folder_missing_or_changing_a_listed_file_is_not_trusted(small_splits, tmp_path):
    spec = spec_for("dnn")
    folder = RunFolder(tmp_path / "run")
    train_run(spec, small_splits["train"], small_splits["test"], folder, log=lambda _: None)
    assert read_manifest(folder) is not None
    history = folder.history.read_bytes()
    folder.history.write_bytes(history[:-1] + bytes([history[-1] ^ 1]))  # one bit of one file
    assert read_manifest(folder) is None
    folder.history.write_bytes(history)
    assert read_manifest(folder) is not None
    folder.model.unlink()
    assert read_manifest(folder) is None
    assert read_manifest(RunFolder(tmp_path / "absent")) is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    assert read_manifest(RunFolder(tmp_path / "broken")) is None


def test_a_failed_run_leaves_no_folder(small_splits, tmp_path):
    spec = spec_for("dnn")
    with pytest.raises(FileNotFoundError, match="run the data stage"):
        train_run(spec, tmp_path / "missing.parquet", small_splits["test"], RunFolder(tmp_path / "run"),
                  log=lambda _: None)
    assert not (tmp_path / "run").exists()
    assert list(tmp_path.iterdir()) == []


def test_run_id_and_cache_key_change_with_every_input():
    base = spec_for("dnn")
    variants = [spec_for("dnn", epochs=2), spec_for("dnn", seed=4), spec_for("dnn", learning_rate=0.01),
                spec_for("convnet"), run_spec("dnn", 0.001, 1, 32, 3, 500, "mnist", "other-data"),
                base.model_copy(update={"versions": {**base.versions, "tensorflow": "2.99"}})]
    keys = {base.cache_key, *(variant.cache_key for variant in variants)}
    assert len(keys) == 1 + len(variants)
    assert base.run_id.startswith("dnn-lr0.001-e1-s3-n500-")
    assert RunSpec.from_json(base.to_json()) == base and RunSpec.from_json(base.to_json()).run_id == base.run_id
    assert json.loads(base.to_json())["code_files"]["mnist_models/architectures/dnn.py"]


# --------------------------------------------------------------------------- lineages and continuation


def _history(folder: RunFolder) -> pd.DataFrame:
    return pd.read_parquet(folder.history).drop(columns="seconds")


def _weights(folder: RunFolder) -> list:
    import keras

    return keras.saving.load_model(folder.model).get_weights()


def test_continuing_a_shorter_run_is_the_same_as_training_straight_through(small_splits, tmp_path):
    import numpy as np

    from mnist_models.training import train_lineage

    short, long = spec_for("dnn", epochs=1), spec_for("dnn", epochs=3)
    straight = {spec.run_id: RunFolder(tmp_path / "straight" / spec.run_id) for spec in (short, long)}
    records = train_lineage([long, short], small_splits["train"], small_splits["test"], straight,
                            log=lambda _: None)
    assert [record.spec.epochs for record in records] == [1, 3]  # one training wrote both, the shorter on the way
    lines = []
    continued = {spec.run_id: RunFolder(tmp_path / "continued" / spec.run_id) for spec in (short, long)}
    train_run(short, small_splits["train"], small_splits["test"], continued[short.run_id], log=print)
    train_run(long, small_splits["train"], small_splits["test"], continued[long.run_id], log=lines.append)
    assert lines[0] == f"{long.run_id}: continuing from epoch 1 of {short.run_id}" and len(lines) == 3

    # Exactly equal: the data order of an epoch depends on (seed, epoch) alone, and the optimizer state is saved.
    pd.testing.assert_frame_equal(_history(straight[long.run_id]), _history(continued[long.run_id]))
    for straight_weights, continued_weights in zip(_weights(straight[long.run_id]), _weights(continued[long.run_id])):
        np.testing.assert_array_equal(straight_weights, continued_weights)
    for name in ("gradients", "kernel_histograms"):
        pd.testing.assert_frame_equal(pd.read_parquet(getattr(straight[long.run_id], name)),
                                      pd.read_parquet(getattr(continued[long.run_id], name)))
    manifest = read_manifest(continued[long.run_id])
    assert manifest["continued_from"] == {"epoch": 1, "source": short.run_id}
    assert manifest["lineage"] == short.lineage == long.lineage and short.run_id != long.run_id
    assert read_manifest(straight[long.run_id])["continued_from"] is None
    assert sorted(pd.read_parquet(continued[long.run_id].gradients)["epoch"].unique()) == [0, 1, 2, 3]
    assert not any((tmp_path / "continued" / ".checkpoints").rglob("*"))  # pruned once the lineage is done


def test_a_killed_training_resumes_at_its_last_checkpoint(small_splits, tmp_path):
    import signal
    import subprocess
    import sys

    spec = spec_for("dnn", epochs=4)
    folder = RunFolder(tmp_path / "runs" / spec.run_id)
    # The child pauses after logging epoch 3 (before its checkpoint), so the kill lands between
    # the epoch-2 checkpoint and the next one, as an OOM kill in the middle of an epoch would.
    script = ("import sys, time; from mnist_models.records import RunSpec; from mnist_models.layout import RunFolder\n"
              "from mnist_models.training import train_run\n"
              "def log(line):\n    print(line, flush=True)\n    time.sleep(60 if 'epoch 3/' in line else 0)\n"
              "spec = RunSpec.from_json(sys.argv[1])\n"
              "from pathlib import Path\n"
              "train_run(spec, sys.argv[2], sys.argv[3], RunFolder(Path(sys.argv[4])), log=log)\n")
    process = subprocess.Popen([sys.executable, "-c", script, spec.to_json(), str(small_splits["train"]),
                                str(small_splits["test"]), str(folder.path)], stdout=subprocess.PIPE, text=True)
    checkpoint = None
    for line in process.stdout:
        if "epoch 3/4" in line:
            checkpoint = next((tmp_path / "runs" / ".checkpoints").glob("*/epoch-0002/state.json"), None)
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=120)
    assert checkpoint is not None and not folder.path.exists()

    lines = []
    train_run(spec, small_splits["train"], small_splits["test"], folder, log=lines.append)
    assert lines[0] == f"{spec.run_id}: continuing from epoch 2 of checkpoint"
    assert [line.split(": ")[1].split(" loss")[0] for line in lines[1:]] == ["epoch 3/4", "epoch 4/4"]
    straight = RunFolder(tmp_path / "straight" / spec.run_id)
    train_run(spec, small_splits["train"], small_splits["test"], straight, log=lambda _: None)
    pd.testing.assert_frame_equal(_history(straight), _history(folder))
    assert read_manifest(folder)["continued_from"] == {"epoch": 2, "source": "checkpoint"}


def test_lineages_trained_one_after_another_in_a_worker_equal_lineages_trained_in_fresh_processes(small_splits,
                                                                                                   tmp_path):
    import keras
    import numpy as np

    from mnist_models.isolation import Worker, run_isolated

    convnet, dnn = spec_for("convnet", seed=21), spec_for("dnn", epochs=2, seed=21)

    def train(call, spec, place):
        folder = RunFolder(tmp_path / place / spec.run_id)
        call(train_run, spec, small_splits["train"], small_splits["test"], folder, log=lambda _: None)
        weights = keras.saving.load_model(folder.model).get_weights()
        return pd.read_parquet(folder.history).drop(columns="seconds"), weights

    worker = Worker()
    try:
        kept = [train(worker.call, convnet, "kept-1"), train(worker.call, dnn, "kept-2"),
                train(worker.call, convnet, "kept-3")]
    finally:
        worker.close()
    fresh = [train(run_isolated, convnet, "fresh-1"), train(run_isolated, dnn, "fresh-2")]
    for (kept_history, kept_weights), (fresh_history, fresh_weights) in zip(kept, [*fresh, fresh[0]]):
        pd.testing.assert_frame_equal(kept_history, fresh_history)
        assert len(kept_weights) == len(fresh_weights)
        for kept_array, fresh_array in zip(kept_weights, fresh_weights):
            np.testing.assert_array_equal(kept_array, fresh_array)


def test_a_lineage_keeps_its_finished_runs_and_trains_only_the_rest(small_splits, tmp_path):
    """The longer run's folder lost (a crash before it was written): the lineage continues from the finished
    shorter run, which is neither retrained nor rewritten."""
    from mnist_models.training import train_lineage

    short, long = spec_for("dnn", epochs=1), spec_for("dnn", epochs=3)
    folders = {spec.run_id: RunFolder(tmp_path / spec.run_id) for spec in (short, long)}
    train_lineage([short, long], small_splits["train"], small_splits["test"], folders, log=lambda _: None)
    written = folders[short.run_id].manifest.stat().st_mtime_ns
    shutil.rmtree(folders[long.run_id].path)
    lines = []
    records = train_lineage([short, long], small_splits["train"], small_splits["test"], folders,
                            log=lines.append)
    assert [record.spec.epochs for record in records] == [1, 3]
    assert folders[short.run_id].manifest.stat().st_mtime_ns == written
    assert lines[0] == f"{long.run_id}: continuing from epoch 1 of {short.run_id}"
    assert not any("epoch 1/3" in line for line in lines)


def test_training_afresh_clears_the_lineage_s_checkpoints(small_splits, tmp_path):
    """--refresh train: a checkpoint beyond this run's epochs (an earlier, longer run killed) must not survive to
    be continued by a later run."""
    from mnist_models.runs import checkpoints_of
    from mnist_models.training import train_lineage

    spec = spec_for("dnn", epochs=2)
    folder = RunFolder(tmp_path / spec.run_id)
    planted = checkpoints_of(tmp_path, spec) / "epoch-0007"
    planted.mkdir(parents=True)
    (planted / "state.json").write_text('{"epoch": 7}')
    train_lineage([spec], small_splits["train"], small_splits["test"], {spec.run_id: folder},
                  resume=False, log=lambda _: None)
    assert not planted.exists() and read_manifest(folder)["continued_from"] is None


def test_every_run_declares_its_hyperparameters_to_tensorboard_s_hparams_dashboard(small_splits, tmp_path):
    """Read back with TensorBoard's own readers; a continued run declares its own settings, once."""
    from mnist_models.hparams import read_final_metrics, read_hparams
    from mnist_models.training import train_lineage

    short, long = spec_for("dnn", epochs=1), spec_for("dnn", epochs=2)
    folders = {spec.run_id: RunFolder(tmp_path / spec.run_id) for spec in (short, long)}
    train_run(short, small_splits["train"], small_splits["test"], folders[short.run_id],
              log=lambda _: None)
    train_lineage([long], small_splits["train"], small_splits["test"], {long.run_id: folders[long.run_id]},
                  log=lambda _: None)  # continues the 1-epoch run
    for spec in (short, long):
        declared = read_hparams(folders[spec.run_id].tensorboard)
        assert declared == {"model": "dnn", "learning_rate": spec.learning_rate, "epochs": spec.epochs,
                            "seed": spec.seed, "batch_size": spec.batch_size, "train_subset": spec.train_subset or 0,
                            "dataset": spec.dataset}
        final = read_manifest(folders[spec.run_id])["final_metrics"]
        assert read_final_metrics(folders[spec.run_id].tensorboard) == pytest.approx(final)
    root_files = [path for path in folders[long.run_id].tensorboard.iterdir() if path.is_file()]
    assert len(root_files) == 1  # its own HParams record, not the shorter run's as well
