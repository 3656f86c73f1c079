"""What each night used and retention: the runs of the last nights are kept, only recognisable run folders go."""

import datetime as dt
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from mnist_models import retention
from tests.mnist_models.test_nightly import night


def test_recent_run_ids_are_those_of_the_last_nights():
    history = pd.concat([night(f"2026-11-{day}", f"flow-{day}", ("dnn", 0.001, 0.9, f"dnn-{day}", "sweep"),
                               ("convnet", 0.001, 0.9, f"convnet-{day}", "sweep")) for day in (24, 25, 26)])

    assert retention.recent_run_ids(history, 2) == {"dnn-25", "convnet-25", "dnn-26", "convnet-26"}
    assert retention.recent_run_ids(history, 0) == set()
    assert retention.recent_run_ids(None, 14) == set()
    with pytest.raises(ValueError, match="nights to keep is -1; expected 0 or more"):
        retention.recent_run_ids(history, -1)


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

    pruned = retention.prune_runs(runs, keep={"dnn-1", "convnet-9"})

    manifests = 2 * len(json.dumps({"run_id": "dnn-2"}))
    assert pruned.run_ids == ("dnn-2", "dnn-3") and pruned.bytes_freed == 12_000 + manifests
    assert pruned.unknown == ("copied", "garbled", "no-manifest", "notes")
    assert pruned.describe() == ("pruned 2 run folder(s), 0.0 MB freed: dnn-2, dnn-3; left 4 folder(s) without a "
                                 "valid manifest alone: copied, garbled, no-manifest, notes")
    assert sorted(path.name for path in runs.iterdir()) == [
        ".dnn-1.lock", ".dnn-4.123.abc.new.tmp", "README", "copied", "dnn-1", "garbled", "link-to-dnn-3",
        "no-manifest", "notes"]
    assert retention.prune_runs(runs, keep={"dnn-1"}).run_ids == ()
    assert retention.prune_runs(tmp_path / "absent", keep=set()).run_ids == ()


def test_two_nightly_runs_on_one_date_keep_each_other_s_runs(tmp_path):
    nights = tmp_path / "nights"
    retention.record_night(nights, dt.date(2026, 11, 26), "flow-a", ["dnn-s26", "resnet_plain-g26"])
    retention.record_night(nights, dt.date(2026, 11, 27), "flow-b", ["dnn-s27", "resnet_plain-g27"])
    retention.record_night(nights, dt.date(2026, 11, 27), "flow-c", ["dnn-s99"])  # a rerun with another seed
    retention.record_night(nights, dt.date(2026, 11, 27), "flow-c", ["dnn-s99", "convnet-s99"])  # the same run again

    recorded = retention.read_nights(nights)

    assert [(night.date, night.flow_run_id) for night in recorded] == [
        ("2026-11-26", "flow-a"), ("2026-11-27", "flow-b"), ("2026-11-27", "flow-c")]
    assert retention.kept_run_ids(recorded, 1) == {"dnn-s27", "resnet_plain-g27", "dnn-s99", "convnet-s99"}
    assert retention.kept_run_ids(recorded, 2) == retention.kept_run_ids(recorded, 1) | {"dnn-s26", "resnet_plain-g26"}
    assert retention.kept_run_ids(recorded, 0) == set()
    with pytest.raises(ValueError, match="flow run id '../x' cannot name a file"):
        retention.record_night(nights, dt.date(2026, 11, 27), "../x", [])
    (nights / "2026-11-28_flow-d.json").write_text("{")
    with pytest.raises(ValueError, match="night record .*2026-11-28_flow-d.json cannot be read"):
        retention.read_nights(nights)


def test_retention_over_many_nights_keeps_sweep_and_gradient_runs_of_the_last_nights(tmp_path):
    runs, nights, keep_nights = tmp_path / "runs", tmp_path / "nights", 3
    first = dt.date(2026, 11, 1)
    for day in range(8):
        date = first + dt.timedelta(days=day)
        used = [f"dnn-{date:%d}", f"resnet_plain-{date:%d}"]  # a sweep run and a gradient-experiment run
        for run_id in used:
            run_folder(runs, run_id)
        retention.record_night(nights, date, f"flow-{day}", used)
        keep = retention.kept_run_ids(retention.read_nights(nights), keep_nights) | {"dnn-01"}  # dnn-01: a champion
        retention.prune_runs(runs, keep)

    assert sorted(path.name for path in runs.iterdir()) == [
        "dnn-01", "dnn-06", "dnn-07", "dnn-08", "resnet_plain-06", "resnet_plain-07", "resnet_plain-08"]
