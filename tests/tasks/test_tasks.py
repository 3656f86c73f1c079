"""Task bodies called through `.fn()` on real data slices: what each writes and returns, without a flow."""

from pathlib import Path

import pandas as pd
import pytest
from prefect.logging import disable_run_logger

from mnist_models import outputs
from mnist_models.config import StudyConfig
from mnist_models.evaluation import StudyRuns
from mnist_models.layout import ArtifactsLayout
from mnist_models.planning import plan_runs
from mnist_models.provenance import StageKey
from mnist_models.records import EvaluatedRun, PreparedData
from mnist_models.engine import Produced
from tasks.caching import study_engine, write_decisions
from tasks.data import normalize_split, verify_idx
from tasks.evaluation import evaluate_model
from tasks.figures import render_figures
from tasks.report import render_report
from tasks.study_tables import write_study_tables
from tasks.training import train_model

CORRECT_MD5 = "27ae3e4e09519cfbb04c329615203637"  # t10k-labels-idx1-ubyte.gz, uncompressed


@pytest.fixture(autouse=True)
def _no_run_logger():
    with disable_run_logger():
        yield


def test_verify_idx_accepts_the_genuine_file_and_refuses_others(mnist_dir, tmp_path):
    labels = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    assert len(verify_idx.fn(labels, CORRECT_MD5)) == 64
    assert verify_idx.fn(tmp_path / "absent.gz", CORRECT_MD5) is None
    assert verify_idx.fn(mnist_dir / "train-labels-idx1-ubyte.gz", CORRECT_MD5) is None


def test_normalize_split_writes_parquet(mnist_dir, tmp_path):
    output = normalize_split.fn(mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz",
                                tmp_path / "test.parquet")
    frame = pd.read_parquet(output, columns=["label"])
    assert len(frame) == 10_000 and frame["label"].between(0, 9).all()


@pytest.fixture(scope="module")
def one_study(small_splits, tmp_path_factory):
    """Two trained and evaluated runs on the small splits, with their layout and records."""
    layout = ArtifactsLayout.at(tmp_path_factory.mktemp("artifacts"))
    for split in ("train", "test"):
        target = layout.data("mnist").split(split)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(small_splits[split]).read_bytes())
    data = PreparedData(dataset="mnist", content_hash="h", train=Path("data/mnist/train.parquet"),
                        test=Path("data/mnist/test.parquet"), test_hash="t")
    config = StudyConfig(models=["dnn", "convnet"], learning_rates=[0.001], epochs=1, gradient_models=[],
                         train_subset=300).resolved(__import__("datetime").date(2026, 11, 28))
    runs = []
    with disable_run_logger():
        for planned in plan_runs(config, "h"):
            (trained,) = train_model.fn([planned.spec], data, layout)
            runs.append(EvaluatedRun(trained=trained, scores=evaluate_model.fn(trained, data, layout),
                                     roles=planned.roles))
    return StudyRuns(tuple(runs), layout, ("dnn", "convnet"))


def test_train_and_evaluate_fill_the_run_folder(one_study):
    for run in one_study.runs:
        folder = one_study.folder(run)
        assert folder.manifest.exists() and folder.predictions.exists()
        assert 0.1 < run.scores.accuracy <= 1 and len(run.scores.per_class) == 10


def test_tables_figures_and_report_from_the_registry(one_study):
    layout = one_study.layout
    tables = write_study_tables.fn(one_study)
    assert list(tables) == [spec.name for spec in outputs.study_tables()]
    for name, path in tables.items():
        assert set(outputs.TABLES[name].columns) <= set(pd.read_parquet(path).columns), name
    figures = render_figures.fn(one_study)
    assert set(figures) == {"accuracy_curves", "lr_sweep_heatmap", "roc_dnn", "f1_dnn", "confusion_dnn", "roc_convnet",
                            "f1_convnet", "confusion_convnet"}
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in figures.values())
    written = render_report.fn(layout, list(tables), figures, {"profile": "quick"})
    assert written["markdown"] == layout.report_markdown and "convnet" in layout.report_markdown.read_text()
    assert layout.report_html.read_text().startswith("<!DOCTYPE html>")


def test_a_stage_step_is_reused_until_its_output_changes(tmp_path):
    ledger = study_engine(ArtifactsLayout.at(tmp_path), log=lambda line: None)
    target = tmp_path / "out.txt"
    calls = []

    def compute():
        calls.append(1)
        target.write_text("result")
        return Produced({"out": Path("out.txt")}, [target])

    key = StageKey(parameters={"a": 1})
    for _ in range(2):
        assert ledger.stage("figures", "study", key, compute, lambda stored: stored) == {"out": "out.txt"}
    assert len(calls) == 1
    target.write_text("edited")
    ledger.stage("figures", "study", key, compute, lambda stored: stored)
    assert len(calls) == 2 and target.read_text() == "result"
    table = write_decisions(ledger, tmp_path / "tables")
    assert table["action"].tolist() == ["recomputed", "reused", "recomputed"]
    assert table["reason"].tolist()[2] == "outputs modified (out.txt)"
