"""Export a study's runs and nightly champions to an MLflow tracking server (the optional `mlflow` extra).

Each run folder becomes one MLflow run, found again by its tag `mnist_study.run_id`, so exporting twice
updates the run instead of adding another: its parameters, per-epoch metrics (step = epoch), test-split
scores, tags (run id, cache key, code hash, roles) and its model as an MLflow logged model (Keras flavor).
An unchanged run costs one query: the run keeps a digest of everything exported (`mnist_study.export_digest`).
Each nightly champion version becomes a version of the registered model `<dataset>-<model>` (found again by
its tag `mnist_study.champion_version`), and the alias `champion` names the current one.

MLflow is imported here only, when an export starts; nothing under the artifacts directory is written.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from mnist_models.champions import (ChampionMismatchError, ChampionVersion, champion_models, champion_versions,
                                   version_folder)
from mnist_models.hashing import file_sha256
from mnist_models.layout import ArtifactsLayout, RunFolder
from mnist_models.provenance import StageStore, digest, outputs_problem
from mnist_models.records import Record, Scores
from mnist_models.runs import read_manifest

EXPERIMENT = "mnist-study"
CHAMPION_ALIAS = "champion"
RUN_TAG = "mnist_study.run_id"
DIGEST_TAG = "mnist_study.export_digest"
SHA_TAG = "mnist_study.model_sha256"
CHAMPION_TAG = "mnist_study.champion_version"
INSTALL_HINT = "install the mlflow extra: pip install 'mnist-study[mlflow]'"
PARAMETERS = ("model", "learning_rate", "epochs", "batch_size", "seed", "train_subset", "dataset")
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
TEST_METRICS = ("accuracy", "accuracy_low", "accuracy_high", "loss", "macro_f1", "macro_auc", "map")
_MANIFEST_TAGS = ("cache_key", "code_hash", "data_hash", "lineage")
_URI_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch call


class MlflowNotInstalledError(ImportError, ValueError):
    """The export was asked for but the `mlflow` package is not installed."""


class TrackingServerError(ValueError):
    """No MLflow tracking server answers at the URI given."""


class ExportedRun(Record):
    """One study run as it now is in MLflow, and what this export did to it."""

    run_id: str
    mlflow_run_id: str
    action: Literal["created", "updated", "unchanged"]


class ExportedChampion(Record):
    """One nightly champion version as a version of its registered model."""

    model: str
    champion_version: int
    registered_model: str
    model_version: int
    action: Literal["registered", "unchanged"]
    current: bool  # carries the alias `champion`


class ExportReport(Record):
    """What one export created, updated or left as it was, and the run folders it could not read."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    runs: tuple[ExportedRun, ...] = ()
    champions: tuple[ExportedChampion, ...] = ()
    skipped: tuple[str, ...] = ()  # folders under runs/ without a complete manifest

    def run_ids(self, action: str) -> tuple[str, ...]:
        """The study run ids this export `created`, `updated` or left `unchanged`."""
        return tuple(run.run_id for run in self.runs if run.action == action)

    def describe(self) -> str:
        """One line for the log and the command line."""
        counts = ", ".join(f"{len(self.run_ids(action))} {action}" for action in ("created", "updated", "unchanged"))
        text = f"MLflow {self.tracking_uri}, experiment {self.experiment!r} ({self.experiment_id}): runs {counts}"
        registered = [champion for champion in self.champions if champion.action == "registered"]
        if self.champions:
            text += f"; {len(registered)} champion version(s) registered"
        for champion in self.champions:
            if champion.current:
                text += (f"; {champion.registered_model}@{CHAMPION_ALIAS} = version {champion.model_version} "
                         f"(champion v{champion.champion_version:04d})")
        if self.skipped:
            text += f"; skipped {len(self.skipped)} incomplete run folder(s): {', '.join(self.skipped)}"
        return text


def registered_model_name(dataset: str, model: str) -> str:
    """The registered model of a data set's champions of one architecture, e.g. `mnist-dnn`."""
    return f"{dataset}-{model}"


def check_tracking_uri(uri: str) -> str:
    """`uri` if MLflow can track to it (an http(s) server, a database, a folder, Databricks), else a ValueError."""
    parts = urllib.parse.urlsplit(uri.strip())
    scheme = parts.scheme.split("+")[0]
    if uri.strip() == "databricks" or (scheme in _URI_SCHEMES and (parts.hostname or scheme not in ("http", "https"))):
        return uri.strip()
    raise ValueError(f"MLflow tracking URI {uri!r} is not one MLflow can use; expected a server address such as "
                     "http://127.0.0.1:5000, or a sqlite:///, postgresql://, file:// or databricks URI")


def require_mlflow():
    """The `mlflow` module, or MlflowNotInstalledError saying how to install it."""
    try:
        import mlflow
    except ImportError as error:
        raise MlflowNotInstalledError(f"exporting to MLflow needs the mlflow package; {INSTALL_HINT}") from error
    return mlflow


def export_runs(root: Path, tracking_uri: str, experiment: str = EXPERIMENT) -> ExportReport:
    """Export every complete run folder under `root` and its nightly champions to MLflow; idempotent."""
    require_mlflow()
    from mlflow import MlflowClient

    layout = ArtifactsLayout.at(root)
    if not layout.root.is_dir():
        raise FileNotFoundError(f"{layout.root} does not exist; expected a study's artifacts directory (the one "
                                "holding runs/, or artifacts/nightly for the nightly champions)")
    tracking_uri = check_tracking_uri(tracking_uri)
    check_server(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment, tracking_uri)
    summary_tags = _summary_tags(layout)
    runs, skipped = [], []
    for folder in _run_folders(layout):
        manifest = read_manifest(folder)
        if manifest is None or manifest.get("run_id") != folder.run_id:
            skipped.append(folder.run_id)
            continue
        content = _run_content(layout, folder, manifest, summary_tags.get(folder.run_id, {}))
        runs.append(_export_run(client, experiment_id, content))
    exported = {run.run_id: run.mlflow_run_id for run in runs}
    champions = []
    for model in champion_models(layout.champions_dir):
        registered, stand_ins = _export_champions(client, experiment_id, layout, model, exported)
        champions += registered
        runs += stand_ins
    return ExportReport(tracking_uri=tracking_uri, experiment=experiment, experiment_id=experiment_id,
                        runs=tuple(runs), champions=tuple(champions), skipped=tuple(skipped))


# ---- what a run exports -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _RunContent:
    """Everything one study run puts into its MLflow run: parameters, tags, metrics, model file."""

    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: tuple[tuple[str, int, float], ...]  # (key, step, value)
    model: Path
    model_sha256: str
    requirements: tuple[str, ...]
    start_ms: int | None
    end_ms: int | None

    @property
    def digest(self) -> str:
        return digest([self.params, self.tags, [list(metric) for metric in self.metrics], self.model_sha256])


def _run_folders(layout: ArtifactsLayout) -> list[RunFolder]:
    if not layout.runs_dir.is_dir():
        return []
    return [layout.run(path.name) for path in sorted(layout.runs_dir.iterdir())
            if path.is_dir() and not path.is_symlink() and not path.name.startswith(".")]


def _summary_tags(layout: ArtifactsLayout) -> dict[str, dict[str, str]]:
    """Run id -> its roles and status in the latest study run (the summary table's columns)."""
    path = layout.table("summary")["parquet"]
    if not path.is_file():
        return {}
    summary = pd.read_parquet(path)
    columns = [column for column in ("roles", "status") if column in summary.columns]
    return {str(row["run_id"]): {f"mnist_study.{column}": str(row[column]) for column in columns}
            for _, row in summary.iterrows()}


def _run_content(layout: ArtifactsLayout, folder: RunFolder, manifest: dict, extra_tags: dict[str, str]) -> _RunContent:
    """A run folder's export: its history per epoch and, when its evaluation is current, its test scores."""
    history = pd.read_parquet(folder.history)
    metrics = [(name, int(row["epoch"]), float(row[name])) for _, row in history.iterrows() for name in EPOCH_METRICS]
    metrics += [("epoch_seconds", int(row["epoch"]), float(row["seconds"])) for _, row in history.iterrows()]
    scores = _scores(layout, folder, manifest)
    if scores is not None:
        metrics += [(f"test_{name}", 0, float(getattr(scores, name))) for name in TEST_METRICS]
    return _content(folder.run_id, folder, manifest, manifest["file_hashes"]["model.keras"], metrics, extra_tags)


def _champion_content(folder: RunFolder, version: ChampionVersion, manifest: dict) -> _RunContent:
    """A champion version's export, for a run whose folder retention has removed: final metrics only."""
    epochs = int(manifest.get("parameters", {}).get("epochs") or version.epochs or 0)
    final = manifest.get("final_metrics") or {}
    metrics = [(name, epochs, float(final[name])) for name in EPOCH_METRICS if final.get(name) is not None]
    metrics.append(("test_accuracy", 0, version.accuracy))
    return _content(version.run_id, folder, manifest, version.model_sha256, metrics, {})


def _content(run_id: str, folder: RunFolder, manifest: dict, model_sha256: str,
             metrics: list[tuple[str, int, float]], extra_tags: dict[str, str]) -> _RunContent:
    parameters = manifest.get("parameters", {})
    params = {name: str(parameters[name]) for name in PARAMETERS if name in parameters}
    if "trainable_parameters" in manifest:
        params["trainable_parameters"] = str(manifest["trainable_parameters"])
    tags = {RUN_TAG: run_id, SHA_TAG: model_sha256,
            **{f"mnist_study.{name}": str(manifest[name]) for name in _MANIFEST_TAGS if manifest.get(name)},
            **extra_tags}
    if (manifest.get("diverged") or {}).get("epoch") is not None:
        tags["mnist_study.diverged_epoch"] = str(manifest["diverged"]["epoch"])
    if manifest.get("wall_seconds") is not None:
        metrics = [*metrics, ("train_seconds", 0, float(manifest["wall_seconds"]))]
    versions = manifest.get("versions", {})
    requirements = tuple(f"{name}=={versions[name]}" for name in ("keras", "tensorflow") if versions.get(name))
    # A diverged epoch's loss is not a number: it is left out (the tag says where training stopped).
    finite = tuple(metric for metric in metrics if math.isfinite(metric[2]))
    return _RunContent(run_id=run_id, params=params, tags=tags, metrics=finite, model=folder.model,
                       model_sha256=model_sha256, requirements=requirements or ("keras",),
                       start_ms=_milliseconds(manifest.get("started_unix")),
                       end_ms=_milliseconds(manifest.get("finished_unix")))


def _scores(layout: ArtifactsLayout, folder: RunFolder, manifest: dict) -> Scores | None:
    """The run's stored test scores, if they are of this model file and its predictions are intact."""
    record = StageStore(layout).load("evaluate", folder.run_id)
    if record is None or record.key.inputs.get("model") != manifest["file_hashes"]["model.keras"]:
        return None
    if outputs_problem(record.outputs, layout.root) is not None:
        return None
    return Scores.model_validate(record.result)


def _milliseconds(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(float(seconds) * 1000))


# ---- writing to MLflow --------------------------------------------------------------------------------------

def check_server(tracking_uri: str) -> None:
    """Fail at once, not after MLflow's minutes of retries, when no server answers at an http(s) URI."""
    if urllib.parse.urlsplit(tracking_uri).scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=10):
            pass
    except urllib.error.HTTPError:
        pass  # the server answered (perhaps asking for credentials, which MLflow's client sends)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingServerError(f"no MLflow tracking server answers at {tracking_uri} ({reason}); start one "
                                  "(mlflow server --host 127.0.0.1 --port 5000) or correct the tracking URI") from None


def _experiment_id(client, experiment: str, tracking_uri: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return client.create_experiment(experiment)
    if found.lifecycle_stage != "active":
        raise ValueError(f"MLflow experiment {experiment!r} at {tracking_uri} is deleted; restore it "
                         f"(mlflow experiments restore --experiment-id {found.experiment_id}) or choose another name")
    return found.experiment_id


def _find_run(client, experiment_id: str, run_id: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'",
                              max_results=1, order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


def _export_run(client, experiment_id: str, content: _RunContent) -> ExportedRun:
    """Create or update the MLflow run of one study run; an unchanged one is left as it is."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag

    existing = _find_run(client, experiment_id, content.run_id)
    if existing is not None and existing.data.tags.get(DIGEST_TAG) == content.digest:
        return ExportedRun(run_id=content.run_id, mlflow_run_id=existing.info.run_id, action="unchanged")
    run = existing or client.create_run(experiment_id, start_time=content.start_ms, tags={RUN_TAG: content.run_id},
                                        run_name=content.run_id)
    mlflow_run_id = run.info.run_id
    logged = _logged_metrics(client, mlflow_run_id, content) if existing is not None else set()
    params = [Param(key, value) for key, value in content.params.items() if key not in run.data.params]
    client.log_batch(mlflow_run_id, params=params, tags=[RunTag(key, value) for key, value in content.tags.items()])
    timestamp = int(time.time() * 1000)  # a value that changed is then the latest of its step
    metrics = [Metric(key, value, timestamp, step) for key, step, value in content.metrics
               if (key, step, value) not in logged]
    for start in range(0, len(metrics), _METRICS_PER_BATCH):
        client.log_batch(mlflow_run_id, metrics=metrics[start:start + _METRICS_PER_BATCH])
    _logged_model(client, experiment_id, mlflow_run_id, content)
    client.set_tag(mlflow_run_id, DIGEST_TAG, content.digest)  # last: an interrupted export is redone next time
    if run.info.status != RunStatus.to_string(RunStatus.FINISHED):
        client.set_terminated(mlflow_run_id, "FINISHED", end_time=content.end_ms)
    return ExportedRun(run_id=content.run_id, mlflow_run_id=mlflow_run_id,
                       action="created" if existing is None else "updated")


def _logged_metrics(client, mlflow_run_id: str, content: _RunContent) -> set[tuple[str, int, float]]:
    keys = {key for key, _, _ in content.metrics}
    return {(metric.key, metric.step, metric.value) for key in keys
            for metric in client.get_metric_history(mlflow_run_id, key)}


def _logged_model(client, experiment_id: str, mlflow_run_id: str, content: _RunContent) -> str:
    """The id of the run's logged model of this model file, logging it (Keras flavor) when there is none."""
    from mlflow.entities import LoggedModelStatus

    found = client.search_logged_models([experiment_id], filter_string=f"tags.`{SHA_TAG}` = '{content.model_sha256}'")
    for model in found:
        if model.source_run_id == mlflow_run_id and model.status == LoggedModelStatus.READY:
            return model.model_id
    return _log_keras_model(client, experiment_id, mlflow_run_id, content)


def _log_keras_model(client, experiment_id: str, mlflow_run_id: str, content: _RunContent) -> str:
    import keras
    import mlflow.keras
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    model = keras.saving.load_model(content.model)
    logged = client.create_logged_model(experiment_id, name="model", source_run_id=mlflow_run_id,
                                        tags={RUN_TAG: content.run_id, SHA_TAG: content.model_sha256},
                                        params=content.params, model_type="keras")
    try:
        with tempfile.TemporaryDirectory() as directory:
            saved = Path(directory) / "model"
            metadata = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                             run_id=mlflow_run_id, model_id=logged.model_id)
            mlflow.keras.save_model(model, str(saved), mlflow_model=metadata, signature=_signature(model),
                                    pip_requirements=list(content.requirements))
            client.log_model_artifacts(logged.model_id, str(saved))
        client.log_outputs(mlflow_run_id, [LoggedModelOutput(logged.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id


def _signature(model):
    """Input and output tensors of a Keras model, batch dimension free: what MLflow checks a request against."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(shape) -> TensorSpec:
        return TensorSpec(np.dtype(np.float32), tuple(-1 if size is None else size for size in shape))
    return ModelSignature(inputs=Schema([spec(model.input_shape)]), outputs=Schema([spec(model.output_shape)]))


# ---- nightly champions --------------------------------------------------------------------------------------

def _export_champions(client, experiment_id: str, layout: ArtifactsLayout, model: str,
                      exported: dict[str, str]) -> tuple[list[ExportedChampion], list[ExportedRun]]:
    """Register each champion version of `model` once, then point the alias `champion` at the current one."""
    versions = champion_versions(layout.champions_dir, model)
    if not versions:
        return [], []
    manifests = {version.version: _champion_manifest(layout, version) for version in versions}
    dataset = versions[-1].dataset or manifests[versions[-1].version].get("parameters", {}).get("dataset") or "mnist"
    name = registered_model_name(dataset, model)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=f"Nightly champions of {model} on {dataset} "
                                                         "(mnist-study); the alias `champion` is the current one")
    registered = {int(found.tags[CHAMPION_TAG]): found for found in client.search_model_versions(f"name = '{name}'")
                  if CHAMPION_TAG in found.tags}
    champions, stand_ins = [], []
    for version in versions:
        found = registered.get(version.version)
        if found is not None and found.tags.get(SHA_TAG) != version.model_sha256:
            raise ValueError(f"registered model {name!r} version {found.version} is champion {version.label} of "
                             f"another artifacts directory (run {found.tags.get(RUN_TAG)}); expected the model of "
                             f"{version.run_id}: export each nightly directory's champions to its own tracking server")
        action = "unchanged"
        if found is None:
            found, stand_in = _register(client, experiment_id, layout, name, version, manifests[version.version],
                                        exported)
            registered[version.version], action = found, "registered"
            stand_ins += [stand_in] if stand_in else []
        champions.append(ExportedChampion(model=model, champion_version=version.version, registered_model=name,
                                          model_version=int(found.version), action=action,
                                          current=version is versions[-1]))
    current = str(registered[versions[-1].version].version)
    if client.get_registered_model(name).aliases.get(CHAMPION_ALIAS) != current:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, current)
    return champions, stand_ins


def _register(client, experiment_id: str, layout: ArtifactsLayout, name: str, version: ChampionVersion,
              manifest: dict, exported: dict[str, str]):
    """A new version of registered model `name` for one champion version, from the MLflow run of its study run
    (exported from the champion's own copy when retention has removed the run folder)."""
    content = _champion_content(version_folder(layout.champions_dir, version.model, version.version), version, manifest)
    mlflow_run_id = exported.get(version.run_id) or _run_of(client, experiment_id, version.run_id)
    stand_in = None
    if mlflow_run_id is None:
        stand_in = _export_run(client, experiment_id, content)
        mlflow_run_id = exported[version.run_id] = stand_in.mlflow_run_id
    model_id = _logged_model(client, experiment_id, mlflow_run_id, content)
    created = client.create_model_version(name, source=f"models:/{model_id}", run_id=mlflow_run_id,
                                          model_id=model_id, description=version.reason, tags=_champion_tags(version))
    return created, stand_in


def _champion_manifest(layout: ArtifactsLayout, version: ChampionVersion) -> dict:
    """A champion version's manifest, its model file checked against the version's record."""
    folder = version_folder(layout.champions_dir, version.model, version.version)
    if not folder.model.is_file() or file_sha256(folder.model) != version.model_sha256:
        raise ChampionMismatchError(
            f"champion {version.label} of {version.model}: {folder.model} is missing or does not match its record "
            "(SHA-256 differs); expected the model promoted with run " + version.run_id + ". A champion of the "
            "previous format is migrated by the next nightly run")
    try:
        return json.loads(folder.manifest.read_text())
    except (OSError, ValueError):
        return {}


def _run_of(client, experiment_id: str, run_id: str) -> str | None:
    run = _find_run(client, experiment_id, run_id)
    return None if run is None else run.info.run_id


def _champion_tags(version: ChampionVersion) -> dict[str, str]:
    return {CHAMPION_TAG: str(version.version), RUN_TAG: version.run_id, "mnist_study.accuracy": str(version.accuracy),
            "mnist_study.promoted_at": version.promoted_at, "mnist_study.date": version.date,
            SHA_TAG: version.model_sha256}
