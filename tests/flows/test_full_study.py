"""The full-study flow on tiny grids: what is reused and why, failure isolation, locking, bad input.

A run "trained" when its manifest was rewritten: that is what a user sees in artifacts/runs/.
Source edits are made for real, in a copy of the project run as a user would (`python flows/...`).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL

from flows.full_study import describe_threads, full_study, processes_ahead
from mnist_models.config import StudyConfig

pytestmark = pytest.mark.usefixtures("prefect_harness", "mnist_mirror")

REPOSITORY = Path(__file__).resolve().parents[2]
TINY = {"models": ["dnn", "convnet"], "learning_rates": [0.01], "epochs": 1, "train_subset": 300,
        "gradient_models": [], "workers": 1, "profile": "quick"}
TINY_OPTIONS = ["--profile", "quick", "--models", "dnn,convnet", "--learning-rates", "0.01", "--epochs", "1",
                "--train-subset", "300", "--gradient-models", "", "--workers", "1"]


def study(artifacts: Path, **overrides):
    """Run the flow on the tiny grid (overrides on top) and return its final state."""
    return full_study(StudyConfig(artifacts_dir=artifacts, **{**TINY, **overrides}), return_state=True)


def manifests(artifacts: Path) -> dict[str, int]:
    """Run id -> manifest modification time (ns)."""
    return {path.parent.name: path.stat().st_mtime_ns for path in (artifacts / "runs").glob("*/manifest.json")}


def trained(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {run for run, mtime in after.items() if before.get(run) != mtime}


def decisions(artifacts: Path) -> pd.DataFrame:
    return pd.read_parquet(artifacts / "tables" / "cache_decisions.parquet")


def recomputed(artifacts: Path) -> dict[str, str]:
    """'stage item' -> reason, for what the last run recomputed."""
    table = decisions(artifacts)
    table = table[table["action"] == "recomputed"]
    return {f"{stage} {item}": reason for stage, item, reason in table[["stage", "item", "reason"]].values}


@pytest.fixture(scope="module")
def first(tmp_path_factory, prefect_harness, mnist_dir):
    """One artifacts directory shared by the caching tests, which run in order."""
    artifacts = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_MIRROR", str(mnist_dir))
        state = study(artifacts)
    assert state.is_completed(), state.message
    return artifacts, state.result()


def test_first_run_trains_evaluates_and_reports(first):
    artifacts, result = first
    assert len(manifests(artifacts)) == 2 and [run.model for run in result.runs] == ["dnn", "convnet"]
    summary = pd.read_parquet(artifacts / "tables" / "summary.parquet")
    assert sorted(summary["model"]) == ["convnet", "dnn"]
    assert summary["accuracy"].between(0.1, 1).all()
    assert (summary["accuracy_low"] <= summary["accuracy"]).all() and (summary["accuracy"] <= summary["accuracy_high"]).all()
    for name in ("accuracy_at_lr", "lr_sweep", "per_class_metrics", "confusion_matrices", "significance",
                 "model_summary", "cache_decisions"):
        for suffix in ("parquet", "csv", "md"):
            assert (artifacts / "tables" / f"{name}.{suffix}").exists(), f"{name}.{suffix}"
    assert (artifacts / "report" / "report.html").exists() and (artifacts / "figures" / "roc_dnn.png").exists()
    assert set(decisions(artifacts)["action"]) == {"recomputed"}
    assert all(not path.is_absolute() for path in result.tables.values())
    report = (artifacts / "report" / "report.md").read_text()
    assert "The run that rendered this report reused 0 stage item(s)" in report
    assert "- train `dnn-lr0.01-e1-s42-n300-" in report and "`: new" in report


def test_summary_accuracy_is_what_the_saved_model_scores(first):
    import keras

    from mnist_models.data import load_split

    artifacts, _ = first
    summary = pd.read_parquet(artifacts / "tables" / "summary.parquet").set_index("model")
    run_dir = artifacts / "runs" / summary.loc["dnn", "run_id"]
    test = load_split(artifacts / "data" / "mnist" / "test.parquet")
    predicted = keras.saving.load_model(run_dir / "model.keras").predict(test.images, verbose=0).argmax(axis=1)
    assert (predicted == test.labels).mean() == pytest.approx(summary.loc["dnn", "accuracy"], abs=1e-9)
    saved = pd.read_parquet(run_dir / "predictions.parquet")
    assert (saved["predicted"].to_numpy() == predicted).all()


def test_rerun_reuses_every_stage_and_rewrites_nothing(first):
    artifacts, _ = first
    before = manifests(artifacts)
    outputs = sorted(p for p in artifacts.rglob("*") if p.is_file() and ".cache" not in p.parts
                     and p.name != ".lock" and not p.name.startswith("cache_decisions."))
    stamps = {path: path.stat().st_mtime_ns for path in outputs}
    assert study(artifacts).is_completed()
    assert trained(before, manifests(artifacts)) == set()
    assert [path for path in outputs if path.stat().st_mtime_ns != stamps[path]] == []
    assert recomputed(artifacts) == {}
    assert {"train", "evaluate", "tables", "figures", "report", "data"} == set(decisions(artifacts)["stage"])


def test_the_plan_names_the_decisions_the_run_then_makes_and_writes_nothing(first):
    from flows.full_study import plan_study

    artifacts, _ = first
    (artifacts / "report" / "report.md").unlink()
    files = {path: path.stat().st_mtime_ns for path in artifacts.rglob("*")}
    planned = plan_study(StudyConfig(artifacts_dir=artifacts, **TINY))
    assert {path: path.stat().st_mtime_ns for path in artifacts.rglob("*")} == files
    assert [(d.stage, d.action, d.reason) for d in planned if d.action == "recomputed"] == [
        ("report", "recomputed", "outputs missing (report/report.md)")]
    assert study(artifacts).is_completed()
    made = decisions(artifacts)
    assert [tuple(row) for row in made[["stage", "item", "action", "reason"]].values] == [
        (d.stage, d.item, d.action, d.reason) for d in planned]


def test_the_plan_on_the_command_line_counts_every_stage_of_the_full_profile(first):
    artifacts, _ = first
    completed = subprocess.run([sys.executable, str(REPOSITORY / "flows" / "full_study.py"), "--plan",
                                "--artifacts-dir", str(artifacts)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "train: 0 reused, 14 to compute, evaluate: 0 reused, 14 to compute" in completed.stdout
    assert "data mnist/train.parquet: reused (inputs, code and outputs unchanged)" in completed.stdout
    assert "tables study: recomputed (upstream recomputed (evaluate, train))" in completed.stdout


def test_no_file_under_the_artifacts_directory_is_a_pickle(first):
    artifacts, _ = first
    pickles = [path for path in artifacts.rglob("*") if path.is_file() and path.read_bytes()[:1] == b"\x80"
               and path.suffix not in (".png", ".keras", ".parquet", ".gz")]
    assert pickles == []
    records = list((artifacts / ".cache").rglob("*.json"))
    assert records and all(json.loads(path.read_text()) for path in records)


def test_a_reused_run_still_publishes_its_tables_to_prefect(first):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts, _ = first
    state = study(artifacts)
    assert recomputed(artifacts) == {}
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    keys = {artifact.key for artifact in found}
    assert {"summary", "lr-sweep", "cache-decisions", "study-report"} <= keys
    summary = next(artifact for artifact in found if artifact.key == "summary")
    assert {row["model"] for row in json.loads(summary.data)} == {"dnn", "convnet"}


def test_a_tampered_table_and_a_deleted_report_are_rebuilt_without_retraining(first):
    artifacts, _ = first
    before = manifests(artifacts)
    summary_csv = artifacts / "tables" / "summary.csv"
    original = summary_csv.read_bytes()
    summary_csv.write_bytes(original[:-2] + bytes([original[-2] ^ 1]) + original[-1:])
    (artifacts / "report" / "report.md").unlink()
    assert study(artifacts).is_completed()
    assert trained(before, manifests(artifacts)) == set()
    assert summary_csv.read_bytes() == original
    assert (artifacts / "report" / "report.md").exists()
    changed = recomputed(artifacts)
    assert "outputs modified (tables/summary.csv)" in changed["tables study"]
    assert "outputs missing (report/report.md)" in changed["report study"]
    assert not any(key.startswith(("train ", "evaluate ")) for key in changed)


def test_refresh_names_stages(first):
    artifacts, _ = first
    before = manifests(artifacts)
    assert study(artifacts, refresh=["figures", "report"]).is_completed()
    assert trained(before, manifests(artifacts)) == set()
    assert recomputed(artifacts) == {"figures study": "--refresh", "report study": "--refresh"}


def test_a_b_a_ends_with_a_s_tables_and_report(first):
    artifacts, _ = first
    runs_of_a = set(pd.read_parquet(artifacts / "tables" / "summary.parquet")["run_id"])
    assert study(artifacts, models=["dnn"]).is_completed()
    assert set(pd.read_parquet(artifacts / "tables" / "summary.parquet")["model"]) == {"dnn"}
    assert study(artifacts).is_completed()
    assert set(pd.read_parquet(artifacts / "tables" / "summary.parquet")["run_id"]) == runs_of_a
    assert "convnet" in (artifacts / "report" / "report.md").read_text()
    changed = recomputed(artifacts)
    assert {"tables study", "figures study", "report study"} <= set(changed)
    assert not any(key.startswith("train ") for key in changed)


def test_adding_a_learning_rate_trains_only_the_new_runs(first):
    artifacts, _ = first
    before = manifests(artifacts)
    assert study(artifacts, learning_rates=[0.01, 0.001]).is_completed()
    new = trained(before, manifests(artifacts))
    assert len(new) == 2 and all("-lr0.001-" in run for run in new)
    assert {reason for key, reason in recomputed(artifacts).items() if key.startswith("train ")} == {"new"}


def test_deleting_a_run_folder_retrains_only_that_run(first):
    artifacts, _ = first
    before = manifests(artifacts)
    victim = next(run for run in before if run.startswith("convnet-lr0.01-"))
    shutil.rmtree(artifacts / "runs" / victim)
    assert study(artifacts).is_completed()
    assert trained(before, manifests(artifacts)) == {victim}


def test_moving_the_artifacts_directory_trains_and_evaluates_nothing(first, tmp_path):
    artifacts, _ = first
    moved = tmp_path / "elsewhere"
    shutil.copytree(artifacts, moved, symlinks=True)
    (moved / ".lock").unlink(missing_ok=True)
    before = manifests(moved)
    state = study(moved)
    assert state.is_completed()
    assert trained(before, manifests(moved)) == set()
    assert not any(key.startswith(("train ", "evaluate ", "tables", "figures", "report", "data"))
                   for key in recomputed(moved))


def test_refresh_retrains_everything(first):
    artifacts, _ = first
    before = manifests(artifacts)
    result = study(artifacts, refresh=True).result()
    planned = {run.run_id for run in result.runs}
    assert len(planned) == 2 and planned <= set(before)
    assert trained(before, manifests(artifacts)) == planned


def test_more_epochs_continue_the_finished_runs(first):
    artifacts, _ = first
    shorter = {json.loads(path.read_text())["parameters"]["model"]: path.parent.name
               for path in (artifacts / "runs").glob("*-lr0.01-e1-*/manifest.json")}
    assert study(artifacts, epochs=2).is_completed()
    for path in (artifacts / "runs").glob("*-lr0.01-e2-*/manifest.json"):
        manifest = json.loads(path.read_text())
        assert manifest["continued_from"] == {"epoch": 1, "source": shorter[manifest["parameters"]["model"]]}
        history = pd.read_parquet(path.parent / "history.parquet")
        first_epoch = pd.read_parquet(artifacts / "runs" / shorter[manifest["parameters"]["model"]] / "history.parquet")
        assert history["epoch"].tolist() == [1, 2]
        assert history.iloc[0].equals(first_epoch.iloc[0])  # epoch 1 was not trained again: same row, same seconds
    assert sum(1 for key in recomputed(artifacts) if key.startswith("train ")) == 2


def _task_run_names(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        ids = [flow_run_id, *(subflow.id for subflow in subflows)]
        return [task_run.name for flow in ids for task_run in client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [flow]}))]


def test_a_run_serving_the_sweep_and_the_gradient_experiment_trains_once_and_serves_both(tmp_path):
    # Any models make the experiment's pair (the study's is resnet_plain and resnet): these two train in seconds.
    pair = {"learning_rates": [0.001], "epochs": 1, "gradient_models": ["convnet", "dnn"], "train_subset": 200}
    state = study(tmp_path, models=["dnn"], gradient_epochs=1, **pair)
    assert state.is_completed(), state.message
    assert len(manifests(tmp_path)) == 2
    assert len([name for name in _task_run_names(state.state_details.flow_run_id) if name.startswith("train ")]) == 2
    summary = pd.read_parquet(tmp_path / "tables" / "summary.parquet")
    dnn = summary[summary["model"] == "dnn"]
    assert dnn[["role", "roles"]].values.tolist() == [["sweep", "sweep,gradient"]]
    assert pd.read_parquet(tmp_path / "tables" / "lr_sweep.parquet")["model"].tolist() == ["dnn"]
    assert set(pd.read_parquet(tmp_path / "tables" / "gradient_norms.parquet")["model"]) == {"convnet", "dnn"}
    assert (tmp_path / "figures" / "gradient_norms.png").exists() and (tmp_path / "figures" / "roc_dnn.png").exists()

    # Planned later as a gradient-only run, the same training is reused and its evaluation too.
    assert study(tmp_path, models=["convnet"], gradient_epochs=1, **pair).is_completed()
    assert not any(key.startswith("evaluate dnn") for key in recomputed(tmp_path))

    # A 2-epoch gradient experiment beside the 1-epoch sweep: one training of dnn writes both runs.
    state = study(tmp_path / "longer", models=["dnn"], gradient_epochs=2, **pair)
    assert state.is_completed(), state.message
    assert len(manifests(tmp_path / "longer")) == 3
    trainings = [name for name in _task_run_names(state.state_details.flow_run_id) if name.startswith("train ")]
    assert len(trainings) == 2 and sum(name.startswith("train dnn lr=0.001") for name in trainings) == 1, trainings


# --------------------------------------------------------------------------- a copy of the project


@pytest.fixture
def project_copy(tmp_path, mnist_dir):
    """The repository's source copied to tmp_path/project, and a runner of its CLI (cwd elsewhere)."""
    copy = tmp_path / "project"
    shutil.copytree(REPOSITORY, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "artifacts", "*.egg-info", "__pycache__", ".pytest_cache", "benchmarks", "docs"))
    environment = {**os.environ, "PYTHONPATH": str(copy), "MNIST_MIRROR": str(mnist_dir), "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": PREFECT_API_URL.value()}

    def run(*arguments: str, own_server: bool = False) -> subprocess.CompletedProcess:
        """Run the copy's study on the session's server, as for a user who runs `prefect server start`; with
        `own_server`, on the temporary server it starts itself, as on a user's machine with no server set."""
        options = dict(environment)
        if own_server:
            del options["PREFECT_API_URL"]
        return subprocess.run([sys.executable, str(copy / "flows" / "full_study.py"), *TINY_OPTIONS, *arguments],
                              capture_output=True, text=True, env=options, cwd=tmp_path, timeout=600)

    return copy, run


def test_editing_source_retrains_or_rerenders_only_what_it_shapes(project_copy, tmp_path):
    copy, run = project_copy
    artifacts = tmp_path / "artifacts"
    completed = run("--artifacts-dir", str(artifacts), own_server=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    before = manifests(artifacts)
    # Nothing trained here yet: the training process was started before the server and took both lineages.
    output = completed.stdout + completed.stderr
    assert "Starting temporary server" in output and "Stopping temporary server" in output
    (ahead,) = re.findall(r"started 1 training process\(es\) ahead, in process\(es\) (\d+)", output)
    assert re.findall(r"thread\(s\), in process (\d+)", output) == [ahead, ahead]

    with open(copy / "mnist_models" / "architectures" / "convnet.py", "a") as source:
        source.write("\n_EDITED = 1  # a statement changes the code (a comment alone would not)\n")
    completed = run("--artifacts-dir", str(artifacts))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ahead" not in completed.stdout + completed.stderr  # finished runs here: the plan decides, after the data stage
    new = trained(before, manifests(artifacts))
    assert len(new) == 1 and next(iter(new)).startswith("convnet-lr0.01-")
    changed = recomputed(artifacts)
    (reason,) = [reason for key, reason in changed.items() if key.startswith("train ")]
    assert reason == "code changed (mnist_models/architectures/convnet.py)"
    assert "recomputed (code changed (mnist_models/architectures/convnet.py))" in completed.stdout + completed.stderr

    before = manifests(artifacts)
    with open(copy / "tasks" / "training.py", "a") as source:  # the task wrapper is not part of a run's identity
        source.write("\n_EDITED = 1  # the wrapper's body changed\n")
    completed = run("--artifacts-dir", str(artifacts))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert trained(before, manifests(artifacts)) == set() and recomputed(artifacts) == {}

    with open(copy / "mnist_models" / "report.py", "a") as source:
        source.write("\n_EDITED = 1\n")
    completed = run("--artifacts-dir", str(artifacts))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert trained(before, manifests(artifacts)) == set()
    assert recomputed(artifacts) == {"report study": "code changed (mnist_models/report.py)"}

    # How predictions are made shapes evaluations, not trainings: kept predictions are made again.
    with open(copy / "mnist_models" / "prediction.py", "a") as source:
        source.write("\n_EDITED = 1  # predictions made another way\n")
    completed = run("--artifacts-dir", str(artifacts))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert trained(before, manifests(artifacts)) == set()
    changed = recomputed(artifacts)
    planned = pd.read_parquet(artifacts / "tables" / "summary.parquet")["run_id"].tolist()
    assert sorted(key for key in changed if key.startswith("evaluate ")) == sorted(f"evaluate {run}" for run in planned)
    assert {changed[key] for key in changed if key.startswith("evaluate ")} == {
        "code changed (mnist_models/prediction.py)"}
    assert all(reason == "code changed (mnist_models/prediction.py)" or reason.startswith("upstream recomputed (")
               for key, reason in changed.items() if not key.startswith("evaluate ")), changed
    output = completed.stdout + completed.stderr
    assert output.count("(predicted from model.keras)") == len(planned) == 2 and "kept by training" not in output


def test_training_processes_start_ahead_only_where_training_is_sure_to_be_needed(first, tmp_path):
    artifacts, _ = first
    fresh = tmp_path / "fresh"
    assert processes_ahead(StudyConfig(artifacts_dir=fresh, **TINY)) == 1  # --workers 1
    assert processes_ahead(StudyConfig(artifacts_dir=fresh, **{**TINY, "workers": None})) == min(os.cpu_count(), 2)
    assert processes_ahead(StudyConfig(artifacts_dir=artifacts, **TINY)) == 0  # its runs may be reused
    assert processes_ahead(StudyConfig(artifacts_dir=artifacts, refresh=("train",), **TINY)) == 1
    assert processes_ahead(StudyConfig(artifacts_dir=fresh, dask_address="tcp://127.0.0.1:8786", **TINY)) == 0
    assert not fresh.exists()  # deciding writes nothing


def test_a_crashed_run_does_not_lose_the_others(project_copy, tmp_path):
    copy, run = project_copy
    builder = copy / "mnist_models" / "architectures" / "convnet.py"
    original = builder.read_text()
    # The edited builder fails the way an out-of-memory convnet would; dnn's runs are untouched.
    builder.write_text(original + "\n\ndef build_convnet(*args, **kwargs):\n"
                       "    raise MemoryError('simulated out-of-memory in convnet')\n")
    artifacts = tmp_path / "artifacts"
    completed = run("--artifacts-dir", str(artifacts))
    assert completed.returncode == 1
    assert "1 of 2 runs failed" in completed.stderr and "simulated out-of-memory in convnet" in completed.stderr
    assert [name.split("-")[0] for name in manifests(artifacts)] == ["dnn"]
    assert pd.read_parquet(artifacts / "tables" / "summary.parquet")["model"].tolist() == ["dnn"]

    builder.write_text(original)
    before = manifests(artifacts)
    completed = run("--artifacts-dir", str(artifacts))
    assert completed.returncode == 0, completed.stderr[-3000:]
    new = trained(before, manifests(artifacts))
    assert len(new) == 1 and next(iter(new)).startswith("convnet-")


# --------------------------------------------------------------------------- locking and bad input


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
        state = study(tmp_path)
        assert state.is_failed() and "is in use by pid" in state.message
        assert time.monotonic() - started < 30
        assert not (tmp_path / "runs").exists()
    finally:
        holder.kill()
        holder.wait()


def test_bad_parameters_from_the_api_fail_the_flow_run_before_any_work(tmp_path):
    state = full_study({"artifacts_dir": str(tmp_path / "out"), "epochs": 0}, return_state=True)
    assert state.is_failed() and "epochs" in state.message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--models", "dnn,vgg"], "unknown model 'vgg'"),
        (["--learning-rates", "0.01,abc"], "comma-separated list of floats"),
        (["--learning-rates", "0"], "learning rate 0.0 is invalid"),
        (["--epochs", "0"], "invalid epochs"),
        (["--workers", "0"], "invalid workers"),
        (["--seed", "-1"], "invalid seed: must be in [0, 2**32)"),
        (["--refresh", "everything"], "unknown stage(s) 'everything'"),
        (["--models", "", "--gradient-models", ""], "the training grid is empty"),
    ],
)
def test_cli_rejects_bad_input_with_one_message(arguments, message, tmp_path):
    completed = subprocess.run(
        [sys.executable, "flows/full_study.py", "--artifacts-dir", str(tmp_path / "out"), *arguments],
        capture_output=True, text=True, cwd=REPOSITORY, timeout=120,
    )
    assert completed.returncode != 0
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_cli_help_lists_every_configuration_field_with_its_default():
    completed = subprocess.run([sys.executable, "flows/full_study.py", "--help"], capture_output=True, text=True,
                               cwd=REPOSITORY, timeout=120)
    assert completed.returncode == 0
    for name in StudyConfig.model_fields:
        flag = "--mirror" if name == "mirrors" else "--" + name.replace("_", "-")
        assert flag in completed.stdout, flag
    text = " ".join(completed.stdout.split())  # argparse wraps the help at the terminal's width
    assert "(default: 0.005)" in text and "(default: 10; quick: 1)" in text


def test_nightly_run_keeps_history_and_champions_and_gates_regressions(tmp_path):
    from mnist_models.prediction import read_stamp, write_predictions

    result = study(tmp_path, models=["dnn"], nightly=True).result()
    root = tmp_path / "nightly"  # the nightly's own folder: the on-demand study's files are never touched
    seed = int(time.strftime("%Y%m%d", time.gmtime()))
    assert result.runs[0].spec.seed == seed
    history = pd.read_parquet(root / "tables" / "history.parquet")
    assert history[["model", "seed", "decision"]].values.tolist() == [["dnn", seed, "first champion"]]
    assert (root / "figures" / "history.png").exists() and not (tmp_path / "tables").exists()
    assert "first champion" in (root / "report" / "report.md").read_text()
    version = root / "models" / "champion" / "dnn" / "v0001"
    record = json.loads((version / "record.json").read_text())
    assert record["run_id"] == result.runs[0].run_id and record["dataset"] == "mnist" and record["test_hash"]
    promotions = pd.read_parquet(root / "tables" / "promotions.parquet")
    assert len(promotions) == 1 and promotions["model"].tolist() == ["dnn"]
    assert len(list((root / "nights").glob("*.json"))) == 1

    # A lost baseline is predicted again from the champion's own model: never a "first champion" again.
    (version / "predictions.parquet").unlink()
    state = study(tmp_path, models=["dnn"], nightly=True)
    assert state.is_completed(), state.message
    history = pd.read_parquet(root / "tables" / "history.parquet")
    assert history["decision"].tolist() == ["kept"] and (version / "predictions.parquet").exists()

    # A champion right on every test image: tonight's model is significantly worse on the same images,
    # so the gate fails the night and keeps the champion.
    stored = version / "predictions.parquet"
    labels = pd.read_parquet(stored)["label"].to_numpy()
    write_predictions(stored, labels, np.eye(10, dtype=np.float32)[labels], read_stamp(stored))
    state = study(tmp_path, models=["dnn"], nightly=True)
    assert state.is_failed()
    assert "regression gate failed" in state.message and "dnn" in state.message and "McNemar p=" in state.message
    assert [path.name for path in version.parent.iterdir()] == ["v0001"]
    history = pd.read_parquet(root / "tables" / "history.parquet")
    assert history[["model", "decision"]].values.tolist() == [["dnn", "regressed"]]  # one row per model per night
    assert history["champion_accuracy"].iloc[0] == 1.0 and history["p_value"].iloc[0] < 0.05


@pytest.mark.parametrize("parameters, message", [
    ({"profile": "quick", "epochs": 0}, "error: invalid epochs: must be at least 1, got 0"),
    ({"profile": "quick", "seed": 4294967295, "replicates": 3}, "seeds up to 4294967297"),
    ({"profile": "quick", "dask_address": "scheduler:8786"}, "invalid dask_address: expected a tcp:// or tls://"),
    ({"profile": "quick", "mirrors": ["http:/x"]}, "mirror 'http:/x' names no host"),
])
def test_a_deployment_parameter_is_checked_like_the_command_line_before_any_work(tmp_path, parameters, message):
    """Deployments pass the configuration as a dict: a bad value fails the run at once with one line, writing nothing."""
    state = full_study({**parameters, "artifacts_dir": str(tmp_path / "artifacts")}, return_state=True)
    assert state.is_failed() and message in state.message and "\n" not in state.message, state.message
    assert not (tmp_path / "artifacts" / "runs").exists() and not (tmp_path / "artifacts" / "data").exists()


def test_the_log_names_the_lineages_given_the_spare_cores():
    from mnist_models import planning

    study = StudyConfig.for_profile("full")
    even = planning.plan_runs(study, "data")
    assert describe_threads(run.spec for run in even) == "1 thread(s) each"
    shared = planning.plan_runs(study, "data", threads=planning.share_threads(study, even, cores=16))
    assert describe_threads(run.spec for run in shared) == "1-3 threads (3 for the longest: resnet lr=0.001)"
