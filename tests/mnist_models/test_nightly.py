"""Nightly retraining logic: seed, history, champions (also under SIGKILL), the regression gate, pruning."""

import datetime as dt
import json

import pandas as pd
import pytest

from mnist_models import nightly
from mnist_models.io import remove_directory
from tests.mnist_models.test_io import kill_at_every_step

SUMMARY_COLUMNS = ["model", "learning_rate", "epochs", "seed", "accuracy", "accuracy_low", "accuracy_high", "map",
                   "run_id", "role"]


def summary(*runs: tuple) -> pd.DataFrame:
    """Summary-table rows from (model, learning rate, accuracy, run id, role) tuples."""
    return pd.DataFrame([{"model": model, "learning_rate": learning_rate, "epochs": 10, "seed": 1,
                          "accuracy": accuracy, "accuracy_low": accuracy - 0.01, "accuracy_high": accuracy + 0.01,
                          "map": accuracy, "run_id": run_id, "role": role}
                         for model, learning_rate, accuracy, run_id, role in runs], columns=SUMMARY_COLUMNS)


def night(date: str, flow_run_id: str, *runs: tuple) -> pd.DataFrame:
    return nightly.history_rows(summary(*runs), dt.date.fromisoformat(date), flow_run_id)


def trained_run(tmp_path, run_id: str, weights: bytes | None = None):
    """A run folder with a model and a manifest; returns (model path, manifest path)."""
    run_dir = tmp_path / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "model.keras").write_bytes(weights if weights is not None else f"weights of {run_id}".encode())
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": run_id}))
    return run_dir / "model.keras", run_dir / "manifest.json"


def promote(champions, model, accuracy, files, run_id):
    return nightly.promote(champions, model, *files, {"accuracy": accuracy, "run_id": run_id, "seed": 1})


def test_seed_is_derived_from_the_date():
    assert nightly.nightly_seed(dt.date(2026, 11, 27)) == 20261127
    assert nightly.nightly_seed(dt.date(2026, 11, 28)) != nightly.nightly_seed(dt.date(2026, 11, 27))


# --------------------------------------------------------------------------- history


def test_history_rows_are_the_sweep_runs_of_the_summary():
    rows = night("2026-11-26", "flow-a", ("dnn", 0.001, 0.96, "dnn-1", "sweep"),
                 ("dnn", 0.01, 0.95, "dnn-2", "sweep"), ("resnet", 0.001, 0.99, "resnet-g", "gradient"))

    assert list(rows.columns) == nightly.HISTORY_COLUMNS
    assert rows["run_id"].tolist() == ["dnn-1", "dnn-2"]
    assert set(rows["date"]) == {"2026-11-26"} and set(rows["flow_run_id"]) == {"flow-a"}


def test_history_rows_name_missing_columns():
    with pytest.raises(ValueError, match="sweep runs lack the column.s. map, role; expected the summary table's"):
        nightly.history_rows(summary().drop(columns=["map", "role"]), dt.date(2026, 11, 26), "flow-a")


def test_a_rerun_of_the_same_night_replaces_its_rows_whatever_its_flow_run():
    history = nightly.append_history(None, night("2026-11-26", "flow-a", ("dnn", 0.001, 0.96, "dnn-a", "sweep")))
    history = nightly.append_history(history, night("2026-11-27", "flow-b", ("dnn", 0.001, 0.97, "dnn-b", "sweep"),
                                                    ("convnet", 0.001, 0.98, "convnet-b", "sweep")))
    # The same night again, from a new flow run (a manual rerun), for one of its models:
    history = nightly.append_history(history, night("2026-11-27", "flow-c", ("dnn", 0.001, 0.975, "dnn-c", "sweep")))

    assert history[["date", "model", "accuracy"]].values.tolist() == [
        ["2026-11-26", "dnn", 0.96], ["2026-11-27", "convnet", 0.98], ["2026-11-27", "dnn", 0.975]]
    assert len(history.groupby(["date", "model"])) == len(history)  # one row per model per night


def test_a_late_rerun_of_an_older_night_keeps_the_history_in_date_order():
    history = nightly.append_history(None, night("2026-11-27", "flow-b", ("dnn", 0.001, 0.97, "dnn-b", "sweep")))
    history = nightly.append_history(history, night("2026-11-26", "flow-a", ("dnn", 0.001, 0.96, "dnn-a", "sweep")))

    assert history["date"].tolist() == ["2026-11-26", "2026-11-27"]


def test_recent_run_ids_are_those_of_the_last_nights():
    history = pd.concat([night(f"2026-11-{day}", f"flow-{day}", ("dnn", 0.001, 0.9, f"dnn-{day}", "sweep"),
                               ("convnet", 0.001, 0.9, f"convnet-{day}", "sweep")) for day in (24, 25, 26)])

    assert nightly.recent_run_ids(history, 2) == {"dnn-25", "convnet-25", "dnn-26", "convnet-26"}
    assert nightly.recent_run_ids(history, 0) == set()
    assert nightly.recent_run_ids(None, 14) == set()
    with pytest.raises(ValueError, match="nights to keep is -1; expected 0 or more"):
        nightly.recent_run_ids(history, -1)


# --------------------------------------------------------------------------- champions and the gate


@pytest.mark.parametrize(
    ("new", "champion", "promoted", "regressed"),
    [
        (0.990, None, True, False),      # first night: the model becomes champion
        (0.991, 0.990, True, False),     # better: replaces it
        (0.990, 0.990, True, False),     # as accurate: replaces it
        (0.987, 0.990, False, False),    # 0.3 points worse: kept, within the 0.5-point tolerance
        (0.984, 0.990, False, True),     # 0.6 points worse: regression
    ],
)
def test_champion_decisions(new, champion, promoted, regressed):
    decision = nightly.decide("convnet", new, champion, tolerance=0.005)
    assert (decision.promoted, decision.regressed) == (promoted, regressed)


def test_regression_message_names_model_champion_and_new_accuracy():
    message = nightly.decide("resnet", 0.95, 0.99, tolerance=0.005).describe(0.005)
    assert "resnet" in message and "0.9900" in message and "0.9500" in message and "REGRESSION" in message


def test_promotion_replaces_model_and_record_and_keeps_one_model_file(tmp_path):
    champions = tmp_path / "champion"
    assert nightly.read_champion(champions, "dnn") is None
    promote(champions, "dnn", 0.96, trained_run(tmp_path, "dnn-first"), "dnn-first")
    target = promote(champions, "dnn", 0.97, trained_run(tmp_path, "dnn-good"), "dnn-good")

    record = nightly.read_champion(champions, "dnn")
    assert record["accuracy"] == 0.97 and record["run_id"] == "dnn-good" and record["model"] == "dnn"
    assert record["manifest"] == {"run_id": "dnn-good"}
    assert target == champions / "dnn.keras" and target.read_bytes() == b"weights of dnn-good"
    assert open(record["model_path"], "rb").read() == b"weights of dnn-good"
    assert sorted(path.name for path in champions.iterdir()) == sorted(
        ["dnn.json", "dnn.keras", record["model_file"]])
    worse = nightly.decide("dnn", 0.90, record["accuracy"], 0.005)
    assert not worse.promoted and worse.regressed


def test_a_champion_from_before_versioned_files_is_still_read(tmp_path):
    champions = tmp_path / "champion"
    champions.mkdir()
    (champions / "dnn.keras").write_bytes(b"old weights")
    (champions / "dnn.json").write_text(json.dumps({"model": "dnn", "accuracy": 0.95, "run_id": "dnn-old"}))

    record = nightly.read_champion(champions, "dnn")

    assert record["run_id"] == "dnn-old" and record["model_path"] == str(champions / "dnn.keras")


def test_a_model_file_changed_by_hand_is_refused(tmp_path):
    champions = tmp_path / "champion"
    promote(champions, "dnn", 0.97, trained_run(tmp_path, "dnn-good"), "dnn-good")
    record = nightly.read_champion(champions, "dnn")
    with open(record["model_path"], "ab") as model_file:
        model_file.write(b"!")

    with pytest.raises(nightly.ChampionMismatchError, match="does not match its record .* expected the file "
                                                            "promoted with run dnn-good"):
        nightly.read_champion(champions, "dnn")


def test_promoting_a_missing_model_says_which_file(tmp_path):
    model_path, manifest_path = trained_run(tmp_path, "dnn-x")
    model_path.unlink()
    with pytest.raises(FileNotFoundError, match=f"cannot promote dnn: {model_path} does not exist"):
        nightly.promote(tmp_path / "champion", "dnn", model_path, manifest_path, {"accuracy": 0.9, "run_id": "x"})


def test_a_promotion_killed_at_any_step_leaves_the_old_or_the_new_champion_whole(tmp_path):
    champions = tmp_path / "champion"
    old_files = trained_run(tmp_path, "dnn-old")
    new_files = trained_run(tmp_path, "dnn-new", weights=bytes(range(256)) * 4096)  # 1 MiB
    script = f"""
        import sys
        from mnist_models import nightly
        nightly.promote(sys.argv[1], "dnn", {str(new_files[0])!r}, {str(new_files[1])!r},
                        {{"accuracy": 0.99, "run_id": "dnn-new"}})
    """

    def reset() -> None:
        if champions.exists():
            remove_directory(champions)
        promote(champions, "dnn", 0.97, old_files, "dnn-old")

    def check(step: int) -> str:
        record = nightly.read_champion(champions, "dnn")  # no clean-up first: readers see a whole champion
        expected = {"dnn-old": old_files[0], "dnn-new": new_files[0]}[record["run_id"]]
        assert open(record["model_path"], "rb").read() == expected.read_bytes(), f"step {step}"
        assert record["manifest"]["run_id"] == record["run_id"], f"step {step}"
        return record["run_id"]

    verdicts = kill_at_every_step(script, champions, reset, check)

    assert verdicts == sorted(verdicts, key=["dnn-old", "dnn-new"].index)
    assert verdicts.count("dnn-old") > 3 and verdicts.count("dnn-new") > 1
    assert (champions / "dnn.keras").read_bytes() == new_files[0].read_bytes()


def test_champion_run_ids_name_every_champions_run(tmp_path):
    champions = tmp_path / "champion"
    promote(champions, "dnn", 0.97, trained_run(tmp_path, "dnn-1"), "dnn-1")
    promote(champions, "resnet", 0.99, trained_run(tmp_path, "resnet-1"), "resnet-1")

    assert nightly.champion_run_ids(champions) == {"dnn-1", "resnet-1"}


# --------------------------------------------------------------------------- pruning


def test_prune_runs_removes_every_run_not_kept_and_reports_what_it_freed(tmp_path):
    runs = tmp_path / "runs"
    for run_id, size in (("dnn-1", 1000), ("dnn-2", 2000), ("dnn-3", 4000)):
        (runs / run_id / "tensorboard").mkdir(parents=True)
        (runs / run_id / "model.keras").write_bytes(bytes(size))
        (runs / run_id / "tensorboard" / "events").write_bytes(bytes(size))
    for hidden in (".dnn-1.lock", ".dnn-4.123.abc.new.tmp"):
        (runs / hidden).write_text("not a run folder")

    pruned = nightly.prune_runs(runs, keep={"dnn-1", "convnet-9"})

    assert pruned.run_ids == ("dnn-2", "dnn-3") and pruned.bytes_freed == 12_000
    assert pruned.describe() == "pruned 2 run folder(s), 0.0 MB freed: dnn-2, dnn-3"
    assert sorted(path.name for path in runs.iterdir()) == [".dnn-1.lock", ".dnn-4.123.abc.new.tmp", "dnn-1"]
    assert nightly.prune_runs(runs, keep={"dnn-1"}).describe() == "pruned no run folder"
    assert nightly.prune_runs(tmp_path / "absent", keep=set()).run_ids == ()
