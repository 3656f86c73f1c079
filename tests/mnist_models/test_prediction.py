"""Predictions kept by training: stamped with what made them, and used by evaluation only when the stamp matches."""

import numpy as np
import pandas as pd
import pytest

from mnist_models import data as data_lib
from mnist_models import evaluation
from mnist_models.hashing import file_sha256
from mnist_models.layout import RunFolder
from mnist_models.planning import run_spec
from mnist_models.prediction import KeepPredictions, read_stamp
from mnist_models.runs import read_manifest
from mnist_models.training import train_lineage

STAMP = {"test": "test-split-hash", "code": "prediction-code-digest", "versions": "library-versions-digest"}


@pytest.fixture(scope="module")
def trained_folder(small_splits, tmp_path_factory):
    """A convnet trained one epoch on 500 images, its predictions kept by training."""
    spec = run_spec("convnet", 0.001, 1, 32, 7, 500, "mnist", "test-data-hash")
    folder = RunFolder(tmp_path_factory.mktemp("runs") / spec.run_id)
    train_lineage([spec], small_splits["train"], small_splits["test"], {spec.run_id: folder},
                  after_run=KeepPredictions(STAMP), log=lambda _: None)
    return folder


def test_training_keeps_predictions_stamped_with_the_model_file_it_wrote(trained_folder):
    manifest = read_manifest(trained_folder)
    assert manifest is not None, "the predictions must not make the folder untrusted"
    assert "predictions.parquet" not in manifest["files"] and "predictions.parquet" not in manifest["file_hashes"]
    assert read_stamp(trained_folder.predictions) == {**STAMP, "model": manifest["file_hashes"]["model.keras"]}
    frame = pd.read_parquet(trained_folder.predictions)
    assert len(frame) == 1000 and list(frame.columns[:2]) == ["label", "predicted"]


def test_kept_predictions_score_exactly_as_predicting_again_from_the_model_file(trained_folder, small_splits,
                                                                                  tmp_path):
    stamp = read_stamp(trained_folder.predictions)
    kept = pd.read_parquet(trained_folder.predictions)
    from_kept = evaluation.stored_scores(trained_folder, stamp, seed=3)
    again = evaluation.evaluate_run(trained_folder, small_splits["test"], seed=3, stamp=stamp)
    assert from_kept == again
    pd.testing.assert_frame_equal(pd.read_parquet(trained_folder.predictions), kept)  # the same bits


@pytest.mark.parametrize("field", ["test", "code", "versions", "model"])
def test_predictions_made_from_anything_else_are_not_used(trained_folder, field):
    stamp = read_stamp(trained_folder.predictions)
    assert evaluation.stored_scores(trained_folder, stamp) is not None
    assert evaluation.stored_scores(trained_folder, {**stamp, field: "something else"}) is None
    assert evaluation.stored_scores(trained_folder, {key: value for key, value in stamp.items() if key != field}) is None


def test_unstamped_or_missing_predictions_are_not_used(trained_folder, tmp_path):
    copy = RunFolder(tmp_path / "copy")
    copy.path.mkdir()
    stamp = read_stamp(trained_folder.predictions)
    assert evaluation.stored_scores(copy, stamp) is None  # no file
    pd.read_parquet(trained_folder.predictions).to_parquet(copy.predictions)  # the same table, no stamp
    assert read_stamp(copy.predictions) is None and evaluation.stored_scores(copy, stamp) is None
    copy.predictions.write_bytes(b"not parquet")
    assert evaluation.stored_scores(copy, stamp) is None


def test_a_diverged_model_s_predictions_are_kept_at_chance_level(small_splits, tmp_path):
    """NaN weights give NaN outputs: each such row becomes uniform, so the run is scored at chance, not lost."""
    from mnist_models.architectures import build_model

    model = build_model("dnn")
    model.set_weights([np.full(weights.shape, np.nan, dtype=weights.dtype) for weights in model.get_weights()])
    folder = RunFolder(tmp_path / "diverged")
    folder.path.mkdir()
    model.save(folder.model)
    test = data_lib.load_split(small_splits["test"])
    lines = []
    KeepPredictions(STAMP)(folder, model, test, lines.append)
    assert lines == []
    kept = pd.read_parquet(folder.predictions)
    assert (kept[[f"prob_{digit}" for digit in range(10)]].to_numpy() == np.float32(0.1)).all()
    assert (kept["predicted"] == 0).all()  # argmax of a tie: the first class
    scores = evaluation.stored_scores(folder, {**STAMP, "model": file_sha256(folder.model)})
    assert scores.accuracy == pytest.approx((test.labels == 0).mean()) and scores.macro_auc == pytest.approx(0.5)


def test_finite_predictions_are_returned_bit_for_bit():
    from mnist_models.prediction import chance_where_undefined

    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), size=50).astype(np.float32)
    assert chance_where_undefined(probabilities) is probabilities
    probabilities[3, 2] = np.inf
    fixed = chance_where_undefined(probabilities)
    assert (fixed[3] == np.float32(0.1)).all() and (fixed[4] == probabilities[4]).all()
