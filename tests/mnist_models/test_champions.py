"""Versioned champions (also under SIGKILL): promotion, their baselines and data sets, the previous format,
rollback and the promotions table."""

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mnist_models import champions, prediction
from mnist_models.atomic_files import remove_directory
from mnist_models.evaluation import correct_vector
from mnist_models.hashing import sha256_file
from mnist_models.layout import RunFolder
from mnist_models.records import PreparedData
from tests.mnist_models.test_atomic_files import kill_at_every_step

MNIST = PreparedData(dataset="mnist", content_hash="c" * 64, train=Path("data/mnist/train.parquet"),
                     test=Path("data/mnist/test.parquet"), test_hash="t" * 64)
IMAGES = 100


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


def promote(champions_dir: Path, folder: RunFolder, accuracy: float,
            date: str = "2026-11-27") -> champions.ChampionVersion:
    return champions.promote(champions_dir, "dnn", folder, accuracy=accuracy, dataset="mnist",
                             test_hash=MNIST.test_hash, date=dt.date.fromisoformat(date),
                             reason=f"test promotion of {folder.run_id}", flow_run_id="flow-1")


# --------------------------------------------------------------------------- champions


def test_promotion_adds_a_whole_version_and_the_newest_is_the_champion(tmp_path):
    champions_dir = tmp_path / "models" / "champion"
    assert champions.current_champion(champions_dir, "dnn") is None
    first = promote(champions_dir, trained_run(tmp_path, "dnn-first"), 0.96, "2026-11-26")
    better = np.arange(IMAGES) % 10 != 0
    second = promote(champions_dir, trained_run(tmp_path, "dnn-good", better), 0.97)

    champion = champions.current_champion(champions_dir, "dnn")
    assert champion == second and (first.version, second.version) == (1, 2) and champion.label == "v0002"
    assert (champion.run_id, champion.dataset, champion.test_hash, champion.seed) == ("dnn-good", "mnist",
                                                                                      MNIST.test_hash, 7)
    assert (champion.previous_version, champion.previous_accuracy, champion.date) == (1, 0.96, "2026-11-27")
    folder = champions.version_folder(champions_dir, "dnn", 2)
    assert sorted(path.name for path in folder.path.iterdir()) == ["manifest.json", "model.keras",
                                                                  "predictions.parquet", "record.json"]
    assert folder.model.read_bytes() == b"weights of dnn-good"
    assert (champions.baseline_correct(champions_dir, champion, MNIST.test_hash, None) == better).all()
    assert [version.version for version in champions.champion_versions(champions_dir, "dnn")] == [1, 2]
    assert champions.champion_run_ids(champions_dir) == {"dnn-good"}


def test_promoting_a_run_without_its_predictions_or_with_another_split_s_is_refused(tmp_path):
    folder = trained_run(tmp_path, "dnn-x")
    folder.predictions.unlink()
    with pytest.raises(FileNotFoundError, match=f"cannot promote dnn: {folder.predictions} does not exist"):
        promote(tmp_path / "champion", folder, 0.9)
    write_stamped_predictions(folder, np.ones(IMAGES, bool), test_hash="other")
    with pytest.raises(ValueError, match="were not made by .*model.keras on the test split tttt"):
        promote(tmp_path / "champion", folder, 0.9)
    assert champions.current_champion(tmp_path / "champion", "dnn") is None


def test_a_promotion_killed_at_any_step_leaves_the_old_or_the_new_champion_whole(tmp_path):
    champions_dir = tmp_path / "champion"
    old_run = trained_run(tmp_path, "dnn-old")
    new_run = trained_run(tmp_path, "dnn-new", np.ones(IMAGES, bool), weights=bytes(range(256)) * 4096)  # 1 MiB
    script = f"""
        import datetime, sys
        from pathlib import Path
        from mnist_models import champions
        from mnist_models.layout import RunFolder
        champions.promote(sys.argv[1], "dnn", RunFolder(Path({str(new_run.path)!r})),
                          accuracy=0.99, dataset="mnist", test_hash={MNIST.test_hash!r},
                          date=datetime.date(2026, 11, 28), reason="better")
    """

    def reset() -> None:
        if champions_dir.exists():
            remove_directory(champions_dir)
        promote(champions_dir, old_run, 0.97)

    def check(step: int) -> str:
        champion = champions.current_champion(champions_dir, "dnn")  # no clean-up first: readers see a whole champion
        expected = {"dnn-old": old_run, "dnn-new": new_run}[champion.run_id]
        folder = champions.version_folder(champions_dir, "dnn", champion.version)
        assert folder.model.read_bytes() == expected.model.read_bytes(), f"step {step}"
        baseline = champions.baseline_correct(champions_dir, champion, MNIST.test_hash, None)  # the baseline came along
        assert (baseline == correct_vector(expected.predictions)).all(), f"step {step}"
        return champion.run_id

    verdicts = kill_at_every_step(script, champions_dir, reset, check)

    assert verdicts == sorted(verdicts, key=["dnn-old", "dnn-new"].index)
    assert verdicts.count("dnn-old") > 3 and verdicts[-1] == "dnn-new"


def test_a_lost_baseline_is_predicted_again_from_the_champion_s_model_or_stops_the_gate(tmp_path):
    champions_dir = tmp_path / "champion"
    correct = np.arange(IMAGES) % 3 != 0
    champion = promote(champions_dir, trained_run(tmp_path, "dnn-1", correct), 0.67)
    folder = champions.version_folder(champions_dir, "dnn", 1)
    folder.predictions.unlink()  # deleted by hand, or never copied by the previous format

    with pytest.raises(champions.ChampionMismatchError, match="v0001 of dnn: its predictions .* are missing; expected"):
        champions.baseline_correct(champions_dir, champion, MNIST.test_hash, None)
    assert champions.current_champion(champions_dir, "dnn") == champion  # still a champion: never a "first champion"

    calls = []

    def repredict(version: RunFolder) -> None:
        calls.append(version.path.name)
        write_stamped_predictions(version, correct)

    assert (champions.baseline_correct(champions_dir, champion, MNIST.test_hash, repredict) == correct).all()
    assert (champions.baseline_correct(champions_dir, champion, MNIST.test_hash, repredict) == correct).all()
    assert calls == ["v0001"]  # predicted once, then kept

    write_stamped_predictions(folder, ~correct, model_hash="f" * 64)  # predictions of another model: stale
    assert (champions.baseline_correct(champions_dir, champion, MNIST.test_hash, repredict) == correct).all()
    assert calls == ["v0001", "v0001"]
    folder.predictions.unlink()
    with pytest.raises(champions.ChampionMismatchError, match="predicting them again did not help"):
        champions.baseline_correct(champions_dir, champion, MNIST.test_hash, lambda version: None)


@pytest.mark.parametrize("damage", ["record deleted", "record garbled", "model changed", "folder renamed"])
def test_a_damaged_champion_is_an_error_never_no_champion(tmp_path, damage):
    champions_dir = tmp_path / "champion"
    promote(champions_dir, trained_run(tmp_path, "dnn-1"), 0.97)
    folder = champions.version_folder(champions_dir, "dnn", 1)
    if damage == "record deleted":
        (folder.path / "record.json").unlink()
    elif damage == "record garbled":
        (folder.path / "record.json").write_text("{")
    elif damage == "model changed":
        with open(folder.model, "ab") as model_file:
            model_file.write(b"!")
    else:
        folder.path.rename(folder.path.with_name("v0002"))

    with pytest.raises(champions.ChampionMismatchError, match="champion|v000"):
        champions.current_champion(champions_dir, "dnn")


def test_leftover_files_of_a_lost_champion_are_an_error_never_a_first_champion(tmp_path):
    champions_dir = tmp_path / "champion"
    champions_dir.mkdir()
    (champions_dir / "dnn.predictions.parquet").write_bytes(b"predictions")  # the record was lost, its files remain
    with pytest.raises(champions.ChampionMismatchError, match="holds dnn.predictions.parquet of a champion of dnn but "
                                                            "not its record dnn.json"):
        champions.current_champion(champions_dir, "dnn")
    assert champions.current_champion(champions_dir, "convnet") is None


def test_a_champion_of_another_data_set_or_test_split_is_not_compared(tmp_path):
    champion = promote(tmp_path / "champion", trained_run(tmp_path, "dnn-1"), 0.97)
    champions.check_comparable(champion, MNIST)
    fashion = MNIST.model_copy(update={"dataset": "fashion-mnist"})
    with pytest.raises(champions.ChampionMismatchError, match="trained on 'mnist', tonight's run on 'fashion-mnist'; "
                                                            "expected the same data set and test split"):
        champions.check_comparable(champion, fashion)
    resplit = MNIST.model_copy(update={"test_hash": "u" * 64})
    with pytest.raises(champions.ChampionMismatchError, match="tested on the test split tttttttttttt, tonight's run on "
                                                            "uuuuuuuuuuuu"):
        champions.check_comparable(champion, resplit)


def previous_format(champions_dir: Path, with_predictions: bool = True, versioned: bool = True) -> bytes:
    """A champion as the previous nightly format wrote it; returns its model's bytes."""
    champions_dir.mkdir(parents=True)
    weights = b"old weights"
    digest = hashlib.sha256(weights).hexdigest()
    model_file = f"dnn.{digest[:16]}.keras" if versioned else "dnn.keras"
    (champions_dir / model_file).write_bytes(weights)
    (champions_dir / "dnn.keras").write_bytes(weights)
    record = {"model": "dnn", "accuracy": 0.75, "run_id": "dnn-old", "seed": 3, "learning_rate": 0.001,
              "promoted_at": "2026-11-20T02:10:00+00:00",
              "manifest": {"run_id": "dnn-old", "seed": 3, "data_hash": MNIST.content_hash,
                           "parameters": {"dataset": "mnist", "epochs": 10, "learning_rate": 0.001}}}
    if versioned:
        record.update(model_file=model_file, model_sha256=digest)
    (champions_dir / "dnn.json").write_text(json.dumps(record))
    if with_predictions:
        labels = np.arange(IMAGES) % 10
        prediction.write_predictions(champions_dir / "dnn.predictions.parquet", labels, np.eye(10)[labels],
                                     {"test": MNIST.test_hash, "model": digest})
    return weights


def test_a_champion_of_the_previous_format_becomes_version_1_on_first_use(tmp_path):
    champions_dir = tmp_path / "champion"
    weights = previous_format(champions_dir)
    listed = champions.champion_versions(champions_dir, "dnn")  # reading changes nothing
    assert [version.label for version in listed] == ["v0001"] and (champions_dir / "dnn.json").exists()

    champion = champions.current_champion(champions_dir, "dnn")

    assert champion == listed[0] and champion.reason.startswith("migrated from the previous champion files")
    assert (champion.run_id, champion.accuracy, champion.dataset, champion.test_hash, champion.date) == (
        "dnn-old", 0.75, "mnist", MNIST.test_hash, "2026-11-20")
    assert sorted(path.name for path in champions_dir.iterdir()) == ["dnn"]  # the old files are gone
    folder = champions.version_folder(champions_dir, "dnn", 1)
    assert folder.model.read_bytes() == weights and json.loads(folder.manifest.read_text())["run_id"] == "dnn-old"
    assert champions.baseline_correct(champions_dir, champion, MNIST.test_hash, None).all()
    second = promote(champions_dir, trained_run(tmp_path, "dnn-new"), 0.8)
    assert (second.version, second.previous_version) == (2, 1)


def test_an_older_champion_without_predictions_or_test_split_is_checked_by_its_data_set(tmp_path):
    champions_dir = tmp_path / "champion"
    previous_format(champions_dir, with_predictions=False, versioned=False)
    champion = champions.current_champion(champions_dir, "dnn")
    assert champion.test_hash is None and champion.data_hash == MNIST.content_hash
    champions.check_comparable(champion, MNIST)  # same data set content: same test split
    with pytest.raises(champions.ChampionMismatchError, match="does not record its test split"):
        champions.check_comparable(champion, MNIST.model_copy(update={"content_hash": "d" * 64}))
    with pytest.raises(champions.ChampionMismatchError, match="are missing"):
        champions.baseline_correct(champions_dir, champion, MNIST.test_hash, None)


def test_a_promotion_over_a_champion_of_the_previous_format_keeps_it_as_version_1(tmp_path):
    champions_dir = tmp_path / "champion"
    previous_format(champions_dir)

    promoted = promote(champions_dir, trained_run(tmp_path, "dnn-new"), 0.8)

    assert (promoted.version, promoted.previous_version, promoted.previous_accuracy) == (2, 1, 0.75)
    assert [version.run_id for version in champions.champion_versions(champions_dir, "dnn")] == ["dnn-old", "dnn-new"]


# --------------------------------------------------------------------------- rollback and promotions


def three_versions(tmp_path: Path) -> Path:
    champions_dir = tmp_path / "champion"
    for day, (run_id, accuracy) in enumerate((("dnn-1", 0.96), ("dnn-2", 0.97), ("dnn-3", 0.98)), 20):
        promote(champions_dir, trained_run(tmp_path, run_id, np.arange(IMAGES) % (day - 17) != 0), accuracy,
                f"2026-11-{day}")
    return champions_dir


def test_rollback_makes_the_replaced_version_champion_again_as_a_new_version(tmp_path):
    champions_dir = three_versions(tmp_path)
    today = dt.date(2026, 12, 1)

    back = champions.rollback(champions_dir, "dnn", today)

    assert (back.version, back.source_version, back.run_id, back.accuracy) == (4, 2, "dnn-2", 0.97)
    assert (back.previous_version, back.previous_accuracy, back.date) == (3, 0.98, "2026-12-01")
    assert back.reason == "rollback to v0002 from v0003"
    assert champions.current_champion(champions_dir, "dnn") == back
    assert champions.version_folder(champions_dir, "dnn", 4).model.read_bytes() == b"weights of dnn-2"
    baseline = champions.baseline_correct(champions_dir, back, MNIST.test_hash, None)
    assert (baseline == (np.arange(IMAGES) % 4 != 0)).all()  # dnn-2's predictions came along

    assert champions.rollback(champions_dir, "dnn", today).source_version == 1  # again: one further back
    with pytest.raises(ValueError, match="has no earlier version to roll back to"):
        champions.rollback(champions_dir, "dnn", today)
    assert champions.rollback(champions_dir, "dnn", today, to_version=3).run_id == "dnn-3"  # forward again
    with pytest.raises(ValueError, match="has no champion version 9; expected one of 1, 2, 3, 4, 5, 6"):
        champions.rollback(champions_dir, "dnn", today, to_version=9)
    with pytest.raises(ValueError, match="already is the model of version 3"):
        champions.rollback(champions_dir, "dnn", today, to_version=3)
    with pytest.raises(ValueError, match="convnet has no champion"):
        champions.rollback(champions_dir, "convnet", today)


def test_the_promotions_table_holds_every_promotion_and_rollback(tmp_path):
    champions_dir = three_versions(tmp_path)
    champions.rollback(champions_dir, "dnn", dt.date(2026, 12, 1))

    table = champions.promotions_table(champions_dir)

    assert list(table.columns) == list(champions.PROMOTION_COLUMNS)
    assert table[["date", "version", "new_accuracy", "run_id"]].values.tolist() == [
        ["2026-11-20", 1, 0.96, "dnn-1"], ["2026-11-21", 2, 0.97, "dnn-2"], ["2026-11-22", 3, 0.98, "dnn-3"],
        ["2026-12-01", 4, 0.97, "dnn-2"]]
    assert table["old_accuracy"].tolist()[1:] == [0.96, 0.97, 0.98] and np.isnan(table["old_accuracy"].iloc[0])
    assert table["reason"].iloc[-1] == "rollback to v0002 from v0003"
    assert champions.promotions_table(tmp_path / "none").empty
