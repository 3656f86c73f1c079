"""Nightly retraining logic: seed, history, versioned champions (also under SIGKILL), their baselines and
data sets, rollback, the promotions table, what each night used, and retention."""

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mnist_models import evaluation, nightly, prediction
from mnist_models.io import remove_directory, sha256_file
from mnist_models.layout import RunFolder
from mnist_models.records import PreparedData
from tests.mnist_models.test_io import kill_at_every_step

SUMMARY_COLUMNS = ["model", "learning_rate", "epochs", "seed", "accuracy", "accuracy_low", "accuracy_high", "map",
                   "run_id", "role"]
MNIST = PreparedData(dataset="mnist", content_hash="c" * 64, train=Path("data/mnist/train.parquet"),
                     test=Path("data/mnist/test.parquet"), test_hash="t" * 64)
IMAGES = 100


def summary(*runs: tuple) -> pd.DataFrame:
    """Summary-table rows from (model, learning rate, accuracy, run id, role[, seed]) tuples."""
    return pd.DataFrame([{"model": model, "learning_rate": learning_rate, "epochs": 10, "seed": seed[0] if seed else 1,
                          "accuracy": accuracy, "accuracy_low": accuracy - 0.01, "accuracy_high": accuracy + 0.01,
                          "map": accuracy, "run_id": run_id, "role": role}
                         for model, learning_rate, accuracy, run_id, role, *seed in runs], columns=SUMMARY_COLUMNS)


def night(date: str, flow_run_id: str, *runs: tuple) -> pd.DataFrame:
    return nightly.history_rows(summary(*runs), dt.date.fromisoformat(date), flow_run_id)


def write_stamped_predictions(folder: RunFolder, correct: np.ndarray, test_hash: str = MNIST.test_hash,
                              model_hash: str | None = None) -> None:
    """Predictions of `folder`'s model that are right exactly where `correct` says, stamped as evaluation does."""
    labels = np.arange(correct.size) % 10
    predicted = np.where(correct, labels, (labels + 1) % 10)
    prediction.write_predictions(folder.predictions, labels, np.eye(10)[predicted],
                                 {"test": test_hash, "model": model_hash or sha256_file(folder.model)})


def trained_run(tmp_path: Path, run_id: str, correct: np.ndarray | None = None, weights: bytes | None = None,
                dataset: str = "mnist") -> RunFolder:
    """A trained and evaluated run folder: model, manifest and stamped predictions."""
    folder = RunFolder(tmp_path / "runs" / run_id)
    folder.path.mkdir(parents=True)
    folder.model.write_bytes(weights if weights is not None else f"weights of {run_id}".encode())
    folder.manifest.write_text(json.dumps({
        "run_id": run_id, "seed": 7, "data_hash": MNIST.content_hash,
        "parameters": {"model": "dnn", "learning_rate": 0.001, "epochs": 10, "dataset": dataset}}))
    write_stamped_predictions(folder, correct if correct is not None else np.arange(IMAGES) % 4 != 0)
    return folder


def promote(champions: Path, folder: RunFolder, accuracy: float, date: str = "2026-11-27") -> nightly.ChampionVersion:
    return nightly.promote(champions, "dnn", folder, accuracy=accuracy, dataset="mnist", test_hash=MNIST.test_hash,
                           date=dt.date.fromisoformat(date), reason=f"test promotion of {folder.run_id}",
                           flow_run_id="flow-1")


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


def test_past_accuracies_are_one_per_night_of_the_same_model_rate_and_epochs():
    replicated = night("2026-11-25", "flow-1", *(("dnn", 0.001, accuracy, f"dnn-{seed}", "sweep", seed)
                                                 for seed, accuracy in ((1, 0.95), (2, 0.97), (3, 0.96), (4, 0.94))))
    gated = night("2026-11-26", "flow-2", ("dnn", 0.001, 0.93, "dnn-a", "sweep", 1),
                  ("dnn", 0.001, 0.99, "dnn-b", "sweep", 2)).assign(decision=[None, "kept"])
    others = night("2026-11-26", "flow-2", ("dnn", 0.01, 0.5, "dnn-fast", "sweep"),
                   ("convnet", 0.001, 0.99, "convnet-1", "sweep"))
    tonight = night("2026-11-27", "flow-3", ("dnn", 0.001, 0.10, "dnn-tonight", "sweep"))
    history = pd.concat([replicated, gated, others, tonight], ignore_index=True)

    past = nightly.past_accuracies(history, "dnn", 0.001, 10, before=dt.date(2026, 11, 27))

    # 2026-11-25: no gate decisions yet, the lower median of four seeds; 2026-11-26: the run the gate tested.
    assert past.to_dict() == {"2026-11-25": 0.95, "2026-11-26": 0.99}
    assert nightly.past_accuracies(history, "dnn", 0.001, 20, before=dt.date(2026, 11, 27)).empty
    empty = nightly.past_accuracies(None, "dnn", 0.001, 10, before=dt.date(2026, 11, 27))
    assert empty.empty and (empty.index > "2026-11-25").sum() == 0  # nights since a champion: none yet
    assert (past.index > "2026-11-25").sum() == 1


def test_recent_run_ids_are_those_of_the_last_nights():
    history = pd.concat([night(f"2026-11-{day}", f"flow-{day}", ("dnn", 0.001, 0.9, f"dnn-{day}", "sweep"),
                               ("convnet", 0.001, 0.9, f"convnet-{day}", "sweep")) for day in (24, 25, 26)])

    assert nightly.recent_run_ids(history, 2) == {"dnn-25", "convnet-25", "dnn-26", "convnet-26"}
    assert nightly.recent_run_ids(history, 0) == set()
    assert nightly.recent_run_ids(None, 14) == set()
    with pytest.raises(ValueError, match="nights to keep is -1; expected 0 or more"):
        nightly.recent_run_ids(history, -1)


@pytest.mark.parametrize(("accuracies", "chosen"), [
    ((0.95, 0.97, 0.96), "dnn-s3"),  # the median seed, not the best
    ((0.95, 0.97, 0.96, 0.94), "dnn-s1"),  # an even count: the lower middle (0.95)
    ((0.95,), "dnn-s1"),  # one seed: the one run, as before
])
def test_the_representative_run_is_the_median_seed_at_the_reference_rate(accuracies, chosen):
    rows = [("dnn", 0.001, accuracy, f"dnn-s{seed}", "sweep", seed) for seed, accuracy in enumerate(accuracies, 1)]
    rows.append(("dnn", 0.01, 0.99, "dnn-fast", "sweep", 1))
    assert evaluation.representative_runs(summary(*rows)) == {"dnn": chosen}
    elsewhere = summary(*((model, 0.01 if model == "dnn" else rate, accuracy, run_id, role, seed)
                          for model, rate, accuracy, run_id, role, seed in rows[:-1]))
    assert evaluation.representative_runs(elsewhere) == {"dnn": chosen}  # no run at 0.001: the best rate's median


# --------------------------------------------------------------------------- champions


def test_promotion_adds_a_whole_version_and_the_newest_is_the_champion(tmp_path):
    champions = tmp_path / "models" / "champion"
    assert nightly.current_champion(champions, "dnn") is None
    first = promote(champions, trained_run(tmp_path, "dnn-first"), 0.96, "2026-11-26")
    better = np.arange(IMAGES) % 10 != 0
    second = promote(champions, trained_run(tmp_path, "dnn-good", better), 0.97)

    champion = nightly.current_champion(champions, "dnn")
    assert champion == second and (first.version, second.version) == (1, 2) and champion.label == "v0002"
    assert (champion.run_id, champion.dataset, champion.test_hash, champion.seed) == ("dnn-good", "mnist",
                                                                                      MNIST.test_hash, 7)
    assert (champion.previous_version, champion.previous_accuracy, champion.date) == (1, 0.96, "2026-11-27")
    folder = nightly.version_folder(champions, "dnn", 2)
    assert sorted(path.name for path in folder.path.iterdir()) == ["manifest.json", "model.keras",
                                                                  "predictions.parquet", "record.json"]
    assert folder.model.read_bytes() == b"weights of dnn-good"
    assert (nightly.baseline_correct(champions, champion, MNIST.test_hash, None) == better).all()
    assert [version.version for version in nightly.champion_versions(champions, "dnn")] == [1, 2]
    assert nightly.champion_run_ids(champions) == {"dnn-good"}


def test_promoting_a_run_without_its_predictions_or_with_another_split_s_is_refused(tmp_path):
    folder = trained_run(tmp_path, "dnn-x")
    folder.predictions.unlink()
    with pytest.raises(FileNotFoundError, match=f"cannot promote dnn: {folder.predictions} does not exist"):
        promote(tmp_path / "champion", folder, 0.9)
    write_stamped_predictions(folder, np.ones(IMAGES, bool), test_hash="other")
    with pytest.raises(ValueError, match="were not made by .*model.keras on the test split tttt"):
        promote(tmp_path / "champion", folder, 0.9)
    assert nightly.current_champion(tmp_path / "champion", "dnn") is None


def test_a_promotion_killed_at_any_step_leaves_the_old_or_the_new_champion_whole(tmp_path):
    champions = tmp_path / "champion"
    old_run = trained_run(tmp_path, "dnn-old")
    new_run = trained_run(tmp_path, "dnn-new", np.ones(IMAGES, bool), weights=bytes(range(256)) * 4096)  # 1 MiB
    script = f"""
        import datetime, sys
        from pathlib import Path
        from mnist_models import nightly
        from mnist_models.layout import RunFolder
        nightly.promote(sys.argv[1], "dnn", RunFolder(Path({str(new_run.path)!r})),
                        accuracy=0.99, dataset="mnist", test_hash={MNIST.test_hash!r},
                        date=datetime.date(2026, 11, 28), reason="better")
    """

    def reset() -> None:
        if champions.exists():
            remove_directory(champions)
        promote(champions, old_run, 0.97)

    def check(step: int) -> str:
        champion = nightly.current_champion(champions, "dnn")  # no clean-up first: readers see a whole champion
        expected = {"dnn-old": old_run, "dnn-new": new_run}[champion.run_id]
        folder = nightly.version_folder(champions, "dnn", champion.version)
        assert folder.model.read_bytes() == expected.model.read_bytes(), f"step {step}"
        baseline = nightly.baseline_correct(champions, champion, MNIST.test_hash, None)  # the baseline came along
        assert (baseline == evaluation.correct_vector(expected.predictions)).all(), f"step {step}"
        return champion.run_id

    verdicts = kill_at_every_step(script, champions, reset, check)

    assert verdicts == sorted(verdicts, key=["dnn-old", "dnn-new"].index)
    assert verdicts.count("dnn-old") > 3 and verdicts[-1] == "dnn-new"


def test_a_lost_baseline_is_predicted_again_from_the_champion_s_model_or_stops_the_gate(tmp_path):
    champions = tmp_path / "champion"
    correct = np.arange(IMAGES) % 3 != 0
    champion = promote(champions, trained_run(tmp_path, "dnn-1", correct), 0.67)
    folder = nightly.version_folder(champions, "dnn", 1)
    folder.predictions.unlink()  # deleted by hand, or never copied by the previous format

    with pytest.raises(nightly.ChampionMismatchError, match="v0001 of dnn: its predictions .* are missing; expected"):
        nightly.baseline_correct(champions, champion, MNIST.test_hash, None)
    assert nightly.current_champion(champions, "dnn") == champion  # still a champion: never a "first champion"

    calls = []

    def repredict(version: RunFolder) -> None:
        calls.append(version.path.name)
        write_stamped_predictions(version, correct)

    assert (nightly.baseline_correct(champions, champion, MNIST.test_hash, repredict) == correct).all()
    assert (nightly.baseline_correct(champions, champion, MNIST.test_hash, repredict) == correct).all()
    assert calls == ["v0001"]  # predicted once, then kept

    write_stamped_predictions(folder, ~correct, model_hash="f" * 64)  # predictions of another model: stale
    assert (nightly.baseline_correct(champions, champion, MNIST.test_hash, repredict) == correct).all()
    assert calls == ["v0001", "v0001"]
    folder.predictions.unlink()
    with pytest.raises(nightly.ChampionMismatchError, match="predicting them again did not help"):
        nightly.baseline_correct(champions, champion, MNIST.test_hash, lambda version: None)


@pytest.mark.parametrize("damage", ["record deleted", "record garbled", "model changed", "folder renamed"])
def test_a_damaged_champion_is_an_error_never_no_champion(tmp_path, damage):
    champions = tmp_path / "champion"
    promote(champions, trained_run(tmp_path, "dnn-1"), 0.97)
    folder = nightly.version_folder(champions, "dnn", 1)
    if damage == "record deleted":
        (folder.path / "record.json").unlink()
    elif damage == "record garbled":
        (folder.path / "record.json").write_text("{")
    elif damage == "model changed":
        with open(folder.model, "ab") as model_file:
            model_file.write(b"!")
    else:
        folder.path.rename(folder.path.with_name("v0002"))

    with pytest.raises(nightly.ChampionMismatchError, match="champion|v000"):
        nightly.current_champion(champions, "dnn")


def test_leftover_files_of_a_lost_champion_are_an_error_never_a_first_champion(tmp_path):
    champions = tmp_path / "champion"
    champions.mkdir()
    (champions / "dnn.predictions.parquet").write_bytes(b"predictions")  # the record was lost, its files remain
    with pytest.raises(nightly.ChampionMismatchError, match="holds dnn.predictions.parquet of a champion of dnn but "
                                                            "not its record dnn.json"):
        nightly.current_champion(champions, "dnn")
    assert nightly.current_champion(champions, "convnet") is None


def test_a_champion_of_another_data_set_or_test_split_is_not_compared(tmp_path):
    champion = promote(tmp_path / "champion", trained_run(tmp_path, "dnn-1"), 0.97)
    nightly.check_comparable(champion, MNIST)
    fashion = MNIST.model_copy(update={"dataset": "fashion-mnist"})
    with pytest.raises(nightly.ChampionMismatchError, match="trained on 'mnist', tonight's run on 'fashion-mnist'; "
                                                            "expected the same data set and test split"):
        nightly.check_comparable(champion, fashion)
    resplit = MNIST.model_copy(update={"test_hash": "u" * 64})
    with pytest.raises(nightly.ChampionMismatchError, match="tested on the test split tttttttttttt, tonight's run on "
                                                            "uuuuuuuuuuuu"):
        nightly.check_comparable(champion, resplit)


def previous_format(champions: Path, with_predictions: bool = True, versioned: bool = True) -> bytes:
    """A champion as the previous nightly format wrote it; returns its model's bytes."""
    champions.mkdir(parents=True)
    weights = b"old weights"
    digest = hashlib.sha256(weights).hexdigest()
    model_file = f"dnn.{digest[:16]}.keras" if versioned else "dnn.keras"
    (champions / model_file).write_bytes(weights)
    (champions / "dnn.keras").write_bytes(weights)
    record = {"model": "dnn", "accuracy": 0.75, "run_id": "dnn-old", "seed": 3, "learning_rate": 0.001,
              "promoted_at": "2026-11-20T02:10:00+00:00",
              "manifest": {"run_id": "dnn-old", "seed": 3, "data_hash": MNIST.content_hash,
                           "parameters": {"dataset": "mnist", "epochs": 10, "learning_rate": 0.001}}}
    if versioned:
        record.update(model_file=model_file, model_sha256=digest)
    (champions / "dnn.json").write_text(json.dumps(record))
    if with_predictions:
        labels = np.arange(IMAGES) % 10
        prediction.write_predictions(champions / "dnn.predictions.parquet", labels, np.eye(10)[labels],
                                     {"test": MNIST.test_hash, "model": digest})
    return weights


def test_a_champion_of_the_previous_format_becomes_version_1_on_first_use(tmp_path):
    champions = tmp_path / "champion"
    weights = previous_format(champions)
    listed = nightly.champion_versions(champions, "dnn")  # reading changes nothing
    assert [version.label for version in listed] == ["v0001"] and (champions / "dnn.json").exists()

    champion = nightly.current_champion(champions, "dnn")

    assert champion == listed[0] and champion.reason.startswith("migrated from the previous champion files")
    assert (champion.run_id, champion.accuracy, champion.dataset, champion.test_hash, champion.date) == (
        "dnn-old", 0.75, "mnist", MNIST.test_hash, "2026-11-20")
    assert sorted(path.name for path in champions.iterdir()) == ["dnn"]  # the old files are gone
    folder = nightly.version_folder(champions, "dnn", 1)
    assert folder.model.read_bytes() == weights and json.loads(folder.manifest.read_text())["run_id"] == "dnn-old"
    assert nightly.baseline_correct(champions, champion, MNIST.test_hash, None).all()
    second = promote(champions, trained_run(tmp_path, "dnn-new"), 0.8)
    assert (second.version, second.previous_version) == (2, 1)


def test_an_older_champion_without_predictions_or_test_split_is_checked_by_its_data_set(tmp_path):
    champions = tmp_path / "champion"
    previous_format(champions, with_predictions=False, versioned=False)
    champion = nightly.current_champion(champions, "dnn")
    assert champion.test_hash is None and champion.data_hash == MNIST.content_hash
    nightly.check_comparable(champion, MNIST)  # same data set content: same test split
    with pytest.raises(nightly.ChampionMismatchError, match="does not record its test split"):
        nightly.check_comparable(champion, MNIST.model_copy(update={"content_hash": "d" * 64}))
    with pytest.raises(nightly.ChampionMismatchError, match="are missing"):
        nightly.baseline_correct(champions, champion, MNIST.test_hash, None)


def test_a_promotion_over_a_champion_of_the_previous_format_keeps_it_as_version_1(tmp_path):
    champions = tmp_path / "champion"
    previous_format(champions)

    promoted = promote(champions, trained_run(tmp_path, "dnn-new"), 0.8)

    assert (promoted.version, promoted.previous_version, promoted.previous_accuracy) == (2, 1, 0.75)
    assert [version.run_id for version in nightly.champion_versions(champions, "dnn")] == ["dnn-old", "dnn-new"]


# --------------------------------------------------------------------------- rollback and promotions


def three_versions(tmp_path: Path) -> Path:
    champions = tmp_path / "champion"
    for day, (run_id, accuracy) in enumerate((("dnn-1", 0.96), ("dnn-2", 0.97), ("dnn-3", 0.98)), 20):
        promote(champions, trained_run(tmp_path, run_id, np.arange(IMAGES) % (day - 17) != 0), accuracy,
                f"2026-11-{day}")
    return champions


def test_rollback_makes_the_replaced_version_champion_again_as_a_new_version(tmp_path):
    champions = three_versions(tmp_path)
    today = dt.date(2026, 12, 1)

    back = nightly.rollback(champions, "dnn", today)

    assert (back.version, back.source_version, back.run_id, back.accuracy) == (4, 2, "dnn-2", 0.97)
    assert (back.previous_version, back.previous_accuracy, back.date) == (3, 0.98, "2026-12-01")
    assert back.reason == "rollback to v0002 from v0003"
    assert nightly.current_champion(champions, "dnn") == back
    assert nightly.version_folder(champions, "dnn", 4).model.read_bytes() == b"weights of dnn-2"
    baseline = nightly.baseline_correct(champions, back, MNIST.test_hash, None)
    assert (baseline == (np.arange(IMAGES) % 4 != 0)).all()  # dnn-2's predictions came along

    assert nightly.rollback(champions, "dnn", today).source_version == 1  # again: one further back
    with pytest.raises(ValueError, match="has no earlier version to roll back to"):
        nightly.rollback(champions, "dnn", today)
    assert nightly.rollback(champions, "dnn", today, to_version=3).run_id == "dnn-3"  # forward again
    with pytest.raises(ValueError, match="has no champion version 9; expected one of 1, 2, 3, 4, 5, 6"):
        nightly.rollback(champions, "dnn", today, to_version=9)
    with pytest.raises(ValueError, match="already is the model of version 3"):
        nightly.rollback(champions, "dnn", today, to_version=3)
    with pytest.raises(ValueError, match="convnet has no champion"):
        nightly.rollback(champions, "convnet", today)


def test_the_promotions_table_holds_every_promotion_and_rollback(tmp_path):
    champions = three_versions(tmp_path)
    nightly.rollback(champions, "dnn", dt.date(2026, 12, 1))

    table = nightly.promotions_table(champions)

    assert list(table.columns) == list(nightly.PROMOTION_COLUMNS)
    assert table[["date", "version", "new_accuracy", "run_id"]].values.tolist() == [
        ["2026-11-20", 1, 0.96, "dnn-1"], ["2026-11-21", 2, 0.97, "dnn-2"], ["2026-11-22", 3, 0.98, "dnn-3"],
        ["2026-12-01", 4, 0.97, "dnn-2"]]
    assert table["old_accuracy"].tolist()[1:] == [0.96, 0.97, 0.98] and np.isnan(table["old_accuracy"].iloc[0])
    assert table["reason"].iloc[-1] == "rollback to v0002 from v0003"
    assert nightly.promotions_table(tmp_path / "none").empty


# --------------------------------------------------------------------------- what each night used, and retention


def run_folder(runs: Path, run_id: str, manifest: object = None, size: int = 1000) -> Path:
    folder = runs / run_id
    (folder / "tensorboard").mkdir(parents=True)
    (folder / "model.keras").write_bytes(bytes(size))
    (folder / "tensorboard" / "events").write_bytes(bytes(size))
    if manifest is not False:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest or {"run_id": run_id})
        (folder / "manifest.json").write_text(text)
    return folder


def test_prune_runs_deletes_only_run_folders_it_recognises(tmp_path):
    runs = tmp_path / "runs"
    for run_id, size in (("dnn-1", 1000), ("dnn-2", 2000), ("dnn-3", 4000)):
        run_folder(runs, run_id, size=size)
    run_folder(runs, "no-manifest", manifest=False)
    run_folder(runs, "garbled", manifest="{not json")
    run_folder(runs, "copied", manifest={"run_id": "dnn-9"})  # a folder copied or renamed by hand
    run_folder(runs, "notes", manifest=["a list"])
    os.symlink(runs / "dnn-3", runs / "link-to-dnn-3")
    (runs / "README").write_text("a file, not a folder")
    for hidden in (".dnn-1.lock", ".dnn-4.123.abc.new.tmp"):
        (runs / hidden).write_text("not a run folder")

    pruned = nightly.prune_runs(runs, keep={"dnn-1", "convnet-9"})

    manifests = 2 * len(json.dumps({"run_id": "dnn-2"}))
    assert pruned.run_ids == ("dnn-2", "dnn-3") and pruned.bytes_freed == 12_000 + manifests
    assert pruned.unknown == ("copied", "garbled", "no-manifest", "notes")
    assert pruned.describe() == ("pruned 2 run folder(s), 0.0 MB freed: dnn-2, dnn-3; left 4 folder(s) without a "
                                 "valid manifest alone: copied, garbled, no-manifest, notes")
    assert sorted(path.name for path in runs.iterdir()) == [
        ".dnn-1.lock", ".dnn-4.123.abc.new.tmp", "README", "copied", "dnn-1", "garbled", "link-to-dnn-3",
        "no-manifest", "notes"]
    assert nightly.prune_runs(runs, keep={"dnn-1"}).run_ids == ()
    assert nightly.prune_runs(tmp_path / "absent", keep=set()).run_ids == ()


def test_two_nightly_runs_on_one_date_keep_each_other_s_runs(tmp_path):
    nights = tmp_path / "nights"
    nightly.record_night(nights, dt.date(2026, 11, 26), "flow-a", ["dnn-s26", "resnet_plain-g26"])
    nightly.record_night(nights, dt.date(2026, 11, 27), "flow-b", ["dnn-s27", "resnet_plain-g27"])
    nightly.record_night(nights, dt.date(2026, 11, 27), "flow-c", ["dnn-s99"])  # a rerun with another seed
    nightly.record_night(nights, dt.date(2026, 11, 27), "flow-c", ["dnn-s99", "convnet-s99"])  # the same run again

    recorded = nightly.read_nights(nights)

    assert [(night.date, night.flow_run_id) for night in recorded] == [
        ("2026-11-26", "flow-a"), ("2026-11-27", "flow-b"), ("2026-11-27", "flow-c")]
    assert nightly.kept_run_ids(recorded, 1) == {"dnn-s27", "resnet_plain-g27", "dnn-s99", "convnet-s99"}
    assert nightly.kept_run_ids(recorded, 2) == nightly.kept_run_ids(recorded, 1) | {"dnn-s26", "resnet_plain-g26"}
    assert nightly.kept_run_ids(recorded, 0) == set()
    with pytest.raises(ValueError, match="flow run id '../x' cannot name a file"):
        nightly.record_night(nights, dt.date(2026, 11, 27), "../x", [])
    (nights / "2026-11-28_flow-d.json").write_text("{")
    with pytest.raises(ValueError, match="night record .*2026-11-28_flow-d.json cannot be read"):
        nightly.read_nights(nights)


def test_retention_over_many_nights_keeps_sweep_and_gradient_runs_of_the_last_nights(tmp_path):
    runs, nights, keep_nights = tmp_path / "runs", tmp_path / "nights", 3
    first = dt.date(2026, 11, 1)
    for day in range(8):
        date = first + dt.timedelta(days=day)
        used = [f"dnn-{date:%d}", f"resnet_plain-{date:%d}"]  # a sweep run and a gradient-experiment run
        for run_id in used:
            run_folder(runs, run_id)
        nightly.record_night(nights, date, f"flow-{day}", used)
        keep = nightly.kept_run_ids(nightly.read_nights(nights), keep_nights) | {"dnn-01"}  # dnn-01: a champion
        nightly.prune_runs(runs, keep)

    assert sorted(path.name for path in runs.iterdir()) == [
        "dnn-01", "dnn-06", "dnn-07", "dnn-08", "resnet_plain-06", "resnet_plain-07", "resnet_plain-08"]

