"""Export to a real MLflow tracking server (`mlflow server` on 127.0.0.1: SQLite, artifacts in a local folder it
serves): one MLflow run per study run with its parameters, per-epoch metrics, test scores and tags; the nightly
champion by its alias predicts as the project's model does; exporting again duplicates nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.export_mlflow import export_mlflow
from flows.export_mlflow import main as export_command
from flows.full_study import full_study
from mnist_models import champions
from mnist_models.config import StudyConfig
from mnist_models.data import load_split
from mnist_models.layout import ArtifactsLayout
from mnist_models.mlflow_export import (DIGEST_TAG, RUN_TAG, TrackingServerError, export_runs,
                                        registered_model_name)
from tests.prefect_harness import free_port, start_process, stop_process, wait_until_healthy

REPOSITORY = Path(__file__).resolve().parents[2]
MLFLOW = str(Path(sys.executable).with_name("mlflow"))  # the CLI of the environment running the tests
EPOCHS = 2
NIGHTLY = {"models": ["dnn"], "learning_rates": [0.01], "epochs": EPOCHS, "train_subset": 300,
           "gradient_models": [], "workers": 1, "profile": "quick", "nightly": True}


class MlflowServer:
    """An `mlflow server` subprocess, started at once and waited for only when first used."""

    def __init__(self, home: Path) -> None:
        self.home, self.log = home, home / "server.log"
        self.uri = f"http://127.0.0.1:{free_port()}"
        environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
        # No job runner: its eight consumer processes serve MLflow's GenAI jobs, which the export never starts.
        environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        self.process = start_process(
            [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
             "--artifacts-destination", str(home / "artifacts"), "--host", "127.0.0.1",
             "--port", self.uri.rsplit(":", 1)[1], "--workers", "1"], environment, self.log, cwd=home)

    def ready(self) -> str:
        wait_until_healthy(self.process, f"{self.uri}/health", self.log, "mlflow server")
        return self.uri


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture(scope="module")
def exported(mlflow_server, prefect_harness, mnist_dir, tmp_path_factory):
    """A nightly study of one 2-epoch dnn run (the server starts meanwhile), exported twice."""
    artifacts = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_MIRROR", str(mnist_dir))
        state = full_study(StudyConfig(artifacts_dir=artifacts, **NIGHTLY), return_state=True)
    assert state.is_completed(), state.message
    root, uri = artifacts / "nightly", mlflow_server.ready()
    first = export_runs(root, uri)
    began = time.perf_counter()
    second = export_runs(root, uri)
    return root, uri, first, second, time.perf_counter() - began


@pytest.fixture
def client(exported):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=exported[1], registry_uri=exported[1])


def _run_folder(root: Path):
    (folder,) = [path for path in (root / "runs").iterdir() if not path.name.startswith(".")]
    return ArtifactsLayout.at(root).run(folder.name)


def _mlflow_runs(client, experiment_id: str) -> list:
    return client.search_runs([experiment_id], max_results=100)


def test_each_run_is_one_mlflow_run_with_its_parameters_metrics_and_tags(exported, client):
    root, _, first, second, second_seconds = exported
    folder = _run_folder(root)
    manifest = json.loads(folder.manifest.read_text())
    assert first.run_ids("created") == (folder.run_id,) and second.run_ids("unchanged") == (folder.run_id,)
    assert second.experiment_id == first.experiment_id and second_seconds < 10

    (run,) = _mlflow_runs(client, first.experiment_id)  # exported twice, one MLflow run
    parameters = manifest["parameters"]
    assert run.data.params == {**{name: str(parameters[name]) for name in (
        "model", "learning_rate", "epochs", "batch_size", "seed", "train_subset", "dataset")},
        "trainable_parameters": str(manifest["trainable_parameters"])}
    summary = pd.read_parquet(root / "tables" / "summary.parquet").set_index("run_id").loc[folder.run_id]
    tags = run.data.tags
    assert (tags[RUN_TAG], tags["mnist_study.cache_key"], tags["mnist_study.code_hash"]) == (
        folder.run_id, manifest["cache_key"], manifest["code_hash"])
    assert tags["mnist_study.roles"] == summary["roles"] == "sweep" and run.info.run_name == folder.run_id
    assert run.info.status == "FINISHED"
    assert (run.info.start_time, run.info.end_time) == (round(manifest["started_unix"] * 1000),
                                                        round(manifest["finished_unix"] * 1000))

    history = pd.read_parquet(folder.history)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        logged = sorted((metric.step, metric.value) for metric in client.get_metric_history(run.info.run_id, name))
        assert logged == list(zip(range(1, EPOCHS + 1), history[name])), name
    for name in ("accuracy", "accuracy_low", "accuracy_high", "map", "macro_f1"):
        assert run.data.metrics[f"test_{name}"] == pytest.approx(summary[name], abs=1e-12), name
    assert run.data.metrics["train_seconds"] == manifest["wall_seconds"]
    (logged_model,) = client.search_logged_models([first.experiment_id])
    assert logged_model.source_run_id == run.info.run_id
    assert logged_model.tags["mnist_study.model_sha256"] == manifest["file_hashes"]["model.keras"]


def test_the_champion_is_a_registered_version_and_predicts_as_the_project_s_model(exported, client):
    import keras
    import mlflow

    root, uri, first, _, _ = exported
    folder = _run_folder(root)
    name = registered_model_name("mnist", "dnn")
    assert [(champion.registered_model, champion.champion_version, champion.model_version, champion.action)
            for champion in first.champions] == [(name, 1, 1, "registered")]
    version = client.get_model_version_by_alias(name, "champion")
    assert (version.version, version.tags[RUN_TAG], version.tags["mnist_study.champion_version"]) == (
        "1", folder.run_id, "1")
    assert version.run_id == _mlflow_runs(client, first.experiment_id)[0].info.run_id

    test = load_split(root / "data" / "mnist" / "test.parquet")
    images = test.images[:32]
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    finally:
        mlflow.set_tracking_uri(previous)
    predicted = np.asarray(served.predict(images)).argmax(axis=1)
    own = keras.saving.load_model(folder.model).predict(images, verbose=0).argmax(axis=1)
    stored = pd.read_parquet(folder.predictions)["predicted"].to_numpy()[:32]
    assert predicted.tolist() == own.tolist() == stored.tolist()
    assert (predicted == test.labels[:32]).mean() > 0.5  # a trained model, not chance


def test_a_new_champion_version_moves_the_alias_and_an_update_duplicates_nothing(exported, client):
    root, uri, first, _, _ = exported
    folder, layout = _run_folder(root), ArtifactsLayout.at(root)
    (current,) = champions.champion_versions(layout.champions_dir, "dnn")
    champions.promote(layout.champions_dir, "dnn", folder, accuracy=current.accuracy, dataset="mnist",
                      test_hash=current.test_hash, date=dt.date.today(), reason="promoted again by the test")
    (run,) = _mlflow_runs(client, first.experiment_id)
    client.delete_tag(run.info.run_id, DIGEST_TAG)  # as if the export had stopped half-way: it is redone

    third = export_runs(root, uri)

    assert third.run_ids("updated") == (folder.run_id,)
    assert [(champion.champion_version, champion.model_version, champion.action, champion.current)
            for champion in third.champions] == [(1, 1, "unchanged", False), (2, 2, "registered", True)]
    name = registered_model_name("mnist", "dnn")
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    assert len(_mlflow_runs(client, first.experiment_id)) == 1
    assert len(client.search_logged_models([first.experiment_id])) == 1  # the same model file, logged once
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == EPOCHS
    assert len(client.get_metric_history(run.info.run_id, "test_accuracy")) == 1
    # Once more through the flow, its parameters a dict as a deployment passes them: nothing left to do.
    fourth = export_mlflow({"artifacts_dir": str(root), "mlflow_tracking_uri": uri}, return_state=True).result()
    assert fourth.run_ids("unchanged") == (folder.run_id,)
    assert {champion.action for champion in fourth.champions} == {"unchanged"}


def test_a_champion_whose_run_folder_retention_removed_is_exported_from_its_own_copy(exported, client):
    root, uri, _, _, _ = exported
    folder, layout = _run_folder(root), ArtifactsLayout.at(root)
    record = champions.promote(layout.champions_dir, "dnn", folder, accuracy=0.5, dataset="mnist",
                               test_hash=champions.champion_versions(layout.champions_dir, "dnn")[0].test_hash,
                               date=dt.date.today(), reason="the third champion")
    aside = root / f".{folder.run_id}.aside"
    folder.path.rename(aside)  # what retention does to an old night's run folder
    try:
        report = export_runs(root, uri, experiment="after-retention")
    finally:
        aside.rename(folder.path)

    assert report.run_ids("created") == (folder.run_id,)  # from models/champion/dnn/v0003
    assert [(champion.champion_version, champion.action) for champion in report.champions] == [
        (1, "unchanged"), (2, "unchanged"), (3, "registered")]
    (run,) = _mlflow_runs(client, report.experiment_id)
    assert run.data.params["learning_rate"] == "0.01" and run.data.metrics["test_accuracy"] == record.accuracy
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "val_accuracy")] == [EPOCHS]
    champion = client.get_model_version_by_alias(registered_model_name("mnist", "dnn"), "champion")
    assert (champion.version, champion.run_id) == ("3", run.info.run_id)


def test_a_server_that_does_not_answer_is_one_clear_error(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    began = time.perf_counter()
    with pytest.raises(TrackingServerError, match=f"no MLflow tracking server answers at {uri}"):
        export_runs(tmp_path, uri)
    assert time.perf_counter() - began < 15  # not MLflow's minutes of retries


@pytest.mark.parametrize(("arguments", "message"), [
    ([], "invalid mlflow_tracking_uri: expected the MLflow tracking server"),
    (["--mlflow-tracking-uri", "ftp://host/x"], "MLflow tracking URI 'ftp://host/x' is not one MLflow can use"),
    (["--mlflow-tracking-uri", "http://127.0.0.1:5000", "--mlflow-experiment", " "], "expected an experiment name"),
])
def test_bad_options_are_one_message(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_command(["--artifacts-dir", str(tmp_path), *arguments])


def test_a_deployment_s_bad_parameter_fails_the_flow_run_with_one_line(prefect_harness, tmp_path):
    state = export_mlflow({"artifacts_dir": str(tmp_path), "mlflow_tracking_uri": "ftp://host/x"}, return_state=True)
    assert state.is_failed() and "\n" not in state.message
    assert "invalid mlflow_tracking_uri: MLflow tracking URI 'ftp://host/x' is not one MLflow can use" in state.message


def test_without_the_extra_the_command_says_how_to_install_it(tmp_path):
    script = ("import sys; sys.modules['mlflow'] = None  # what Python does for a package that is not installed\n"
              "from flows.cli import main; main(sys.argv[1:])")
    completed = subprocess.run([sys.executable, "-c", script, "export", "--artifacts-dir", str(tmp_path),
                                "--mlflow-tracking-uri", "http://127.0.0.1:5000"],
                               cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: exporting to MLflow needs the mlflow package; install the mlflow extra: "
        "pip install 'mnist-study[mlflow]'")


def test_the_export_subcommand_lists_its_options():
    completed = subprocess.run([sys.executable, "-m", "flows.cli", "export", "--help"], cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert all(flag in completed.stdout for flag in ("--artifacts-dir", "--mlflow-tracking-uri",
                                                     "--mlflow-experiment"))
