"""One training run per model on a slice of real MNIST: its folder, its manifest, its determinism."""

import json

import pandas as pd
import pytest

from mnist_models.layout import RunFolder
from mnist_models.planning import run_spec
from mnist_models.records import RunSpec
from mnist_models.training import read_manifest, train_run


def spec_for(model: str, epochs: int = 1, seed: int = 3, learning_rate: float = 0.001) -> RunSpec:
    return run_spec(model, learning_rate, epochs, 32, seed, 500, "mnist", "test-data-hash")


@pytest.mark.parametrize("model", ["dnn", "convnet", "resnet", "resnet_plain"])
def test_one_run_writes_a_complete_trustworthy_folder(model, small_splits, tmp_path):
    spec = spec_for(model)
    lines = []
    folder = RunFolder(tmp_path / spec.run_id)
    trained = train_run(spec, small_splits["train"], small_splits["test"], folder, threads=2, log=lines.append)
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


def test_same_seed_same_history_and_another_seed_differs(small_splits, tmp_path):
    runs = {}
    for label, seed in (("first", 11), ("again", 11), ("other", 12)):
        spec = spec_for("dnn", epochs=2, seed=seed)
        train_run(spec, small_splits["train"], small_splits["test"], RunFolder(tmp_path / label), threads=1,
                  log=lambda _: None)
        runs[label] = pd.read_parquet(tmp_path / label / "history.parquet").drop(columns="seconds")
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
