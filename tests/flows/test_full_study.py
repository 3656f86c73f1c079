"""The full-study flow on tiny grids: caching behaviour, failure isolation, locking, bad input.

A run "trained" when its manifest was rewritten: that is what a user sees in artifacts/runs/.
"""

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import mnist_models.training as training_lib
from flows.full_study import full_study

pytestmark = pytest.mark.usefixtures("prefect_harness", "mnist_mirror")

TINY = {"models": ["dnn", "convnet"], "learning_rates": [0.01], "epochs": 1, "train_subset": 300,
        "gradient_models": [], "workers": 1, "profile": "quick"}


def manifests(artifacts: Path) -> dict[str, int]:
    """Run id -> manifest modification time (ns)."""
    return {path.parent.name: path.stat().st_mtime_ns for path in (artifacts / "runs").glob("*/manifest.json")}


def trained(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {run for run, mtime in after.items() if before.get(run) != mtime}


@pytest.fixture(scope="module")
def study(tmp_path_factory, prefect_harness, mnist_dir):
    """One artifacts directory shared by the caching tests, which run in order."""
    artifacts = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_MIRROR", str(mnist_dir))
        result = full_study(artifacts_dir=str(artifacts), **TINY)
    return artifacts, result


def test_first_run_trains_evaluates_and_reports(study):
    artifacts, result = study
    assert len(manifests(artifacts)) == 2
    summary = pd.read_parquet(artifacts / "tables" / "summary.parquet")
    assert sorted(summary["model"]) == ["convnet", "dnn"]
    assert summary["accuracy"].between(0.1, 1).all()
    assert (summary["accuracy_low"] <= summary["accuracy"]).all() and (summary["accuracy"] <= summary["accuracy_high"]).all()
    for name in ("accuracy_at_lr", "lr_sweep", "per_class_metrics", "confusion_matrices", "significance", "model_summary"):
        for suffix in ("parquet", "csv", "md"):
            assert (artifacts / "tables" / f"{name}.{suffix}").exists(), f"{name}.{suffix}"
    assert (artifacts / "report" / "report.html").exists()
    assert (artifacts / "figures" / "roc_dnn.png").exists()


def test_summary_accuracy_is_what_the_saved_model_scores(study):
    import keras

    from mnist_models.data import load_split

    artifacts, _ = study
    summary = pd.read_parquet(artifacts / "tables" / "summary.parquet").set_index("model")
    run_dir = artifacts / "runs" / summary.loc["dnn", "run_id"]
    test = load_split(artifacts / "data" / "mnist" / "test.parquet")
    predicted = keras.saving.load_model(run_dir / "model.keras").predict(test.images, verbose=0).argmax(axis=1)
    assert (predicted == test.labels).mean() == pytest.approx(summary.loc["dnn", "accuracy"], abs=1e-9)
    saved = pd.read_parquet(run_dir / "predictions.parquet")
    assert (saved["predicted"].to_numpy() == predicted).all()


def test_rerun_trains_nothing_and_rewrites_nothing(study):
    artifacts, _ = study
    before = manifests(artifacts)
    outputs = sorted(p for p in artifacts.rglob("*") if p.is_file() and ".cache" not in p.parts and p.name != ".lock")
    stamps = {path: path.stat().st_mtime_ns for path in outputs}
    state = full_study(artifacts_dir=str(artifacts), **TINY, return_state=True)
    assert state.is_completed()
    assert trained(before, manifests(artifacts)) == set()
    rewritten = [path for path in outputs if path.stat().st_mtime_ns != stamps[path]]
    assert rewritten == []


def test_adding_a_learning_rate_trains_only_the_new_runs(study):
    artifacts, _ = study
    before = manifests(artifacts)
    full_study(artifacts_dir=str(artifacts), **{**TINY, "learning_rates": [0.01, 0.001]})
    new = trained(before, manifests(artifacts))
    assert len(new) == 2 and all("-lr0.001-" in run for run in new)


def test_deleting_a_run_folder_retrains_only_that_run(study):
    import shutil

    artifacts, _ = study
    before = manifests(artifacts)
    victim = next(run for run in before if run.startswith("convnet-lr0.01-"))
    shutil.rmtree(artifacts / "runs" / victim)
    full_study(artifacts_dir=str(artifacts), **TINY)
    assert trained(before, manifests(artifacts)) == {victim}


def test_editing_one_builder_retrains_only_that_model(study, monkeypatch):
    artifacts, _ = study
    before = manifests(artifacts)
    original = training_lib.builder_code_hash
    monkeypatch.setattr(training_lib, "builder_code_hash",
                        lambda name: original(name) + ("-edited" if name == "convnet" else ""))
    full_study(artifacts_dir=str(artifacts), **TINY)
    new = trained(before, manifests(artifacts))
    assert len(new) == 1 and next(iter(new)).startswith("convnet-lr0.01-")


def test_refresh_retrains_everything(study):
    artifacts, _ = study
    before = manifests(artifacts)
    result = full_study(artifacts_dir=str(artifacts), **{**TINY, "refresh": True})
    planned = {run["run_id"] for run in result["runs"]}
    assert len(planned) == 2 and planned <= set(before)
    assert trained(before, manifests(artifacts)) == planned


def test_a_crashed_run_does_not_lose_the_others(tmp_path, monkeypatch):
    real_train_run = training_lib.train_run

    def crash_convnet(spec, *args, **kwargs):
        if spec.model == "convnet":
            raise RuntimeError("simulated out-of-memory in convnet")
        return real_train_run(spec, *args, **kwargs)

    monkeypatch.setattr(training_lib, "train_run", crash_convnet)
    state = full_study(artifacts_dir=str(tmp_path), **TINY, return_state=True)
    assert state.is_failed()
    assert "1 of 2 runs failed" in state.message and "simulated out-of-memory in convnet" in state.message
    assert [path.parent.name.split("-")[0] for path in (tmp_path / "runs").glob("*/manifest.json")] == ["dnn"]
    assert pd.read_parquet(tmp_path / "tables" / "summary.parquet")["model"].tolist() == ["dnn"]

    monkeypatch.setattr(training_lib, "train_run", real_train_run)
    before = manifests(tmp_path)
    assert full_study(artifacts_dir=str(tmp_path), **TINY, return_state=True).is_completed()
    new = trained(before, manifests(tmp_path))
    assert len(new) == 1 and next(iter(new)).startswith("convnet-")


def test_a_second_run_on_the_same_artifacts_directory_fails_clearly(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from mnist_models.locking import artifacts_lock\n"
         "with artifacts_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        state = full_study(artifacts_dir=str(tmp_path), **TINY, return_state=True)
        assert state.is_failed() and "is in use by pid" in state.message
        assert time.monotonic() - started < 30
        assert not (tmp_path / "runs").exists()
    finally:
        holder.kill()
        holder.wait()


def test_bad_parameters_fail_before_any_work(tmp_path):
    for bad, message in (({"models": ["vgg"]}, "unknown model 'vgg'"), ({"learning_rates": [-1.0]}, "learning rate -1.0"),
                         ({"epochs": 0}, "invalid epochs"), ({"workers": 0}, "invalid workers")):
        state = full_study(artifacts_dir=str(tmp_path / "out"), **{**TINY, **bad}, return_state=True)
        assert state.is_failed() and message in state.message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--models", "dnn,vgg"], "unknown model 'vgg'"),
        (["--learning-rates", "0.01,abc"], "comma-separated list of floats"),
        (["--learning-rates", "0"], "learning rate 0.0 is invalid"),
        (["--epochs", "0"], "invalid epochs"),
        (["--workers", "0"], "invalid workers"),
        (["--models", "", "--gradient-models", ""], "the training grid is empty"),
    ],
)
def test_cli_rejects_bad_input_with_one_message(arguments, message, tmp_path):
    completed = subprocess.run(
        [sys.executable, "flows/full_study.py", "--artifacts-dir", str(tmp_path / "out"), *arguments],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=120,
    )
    assert completed.returncode != 0
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_nightly_run_keeps_history_and_champions_and_gates_regressions(tmp_path):
    import json

    nightly = {**TINY, "models": ["dnn"], "nightly": True}
    result = full_study(artifacts_dir=str(tmp_path), **nightly)
    seed = int(time.strftime("%Y%m%d", time.gmtime()))
    assert result["runs"][0]["seed"] == seed
    history = pd.read_parquet(tmp_path / "tables" / "history.parquet")
    assert history[["model", "seed"]].values.tolist() == [["dnn", seed]]
    assert (tmp_path / "figures" / "history.png").exists()
    champion = tmp_path / "models" / "champion"
    assert json.loads((champion / "dnn.json").read_text())["run_id"] == result["runs"][0]["run_id"]

    # A champion far better than tonight's model: the gate fails the run and keeps the champion.
    record = json.loads((champion / "dnn.json").read_text())
    (champion / "dnn.json").write_text(json.dumps({**record, "accuracy": 0.999, "run_id": "legendary"}))
    state = full_study(artifacts_dir=str(tmp_path), **nightly, return_state=True)
    assert state.is_failed()
    assert "regression gate failed" in state.message and "dnn" in state.message and "0.9990" in state.message
    assert json.loads((champion / "dnn.json").read_text())["run_id"] == "legendary"
    assert len(pd.read_parquet(tmp_path / "tables" / "history.parquet")) == 2
