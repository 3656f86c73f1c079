"""Run folders as the `train` stage's records: a folder is reused only with its spec's key and every file intact."""

import json

from mnist_models.atomic_files import write_json
from mnist_models.engine import Engine, Stage
from mnist_models.layout import ArtifactsLayout
from mnist_models.planning import plan_runs
from mnist_models.run_records import RunRecords, spec_key
from mnist_models.runs import folder_hashes
from tests.mnist_models.test_planning import config


def _decision(run, layout: ArtifactsLayout, refresh: bool):
    """The engine's decision for a planned run, with its run folder as the record (as the study declares it)."""
    records = RunRecords(layout)
    stage = Stage(name="train", store="runs", key=lambda item, upstream: spec_key(run.spec), run=None,
                  predecessor=lambda item, key: records.predecessor(item, key, run.spec))
    engine = Engine({"runs": records, "cache": records}, frozenset({"train"} if refresh else ()))
    return engine.decide(stage, run.run_id, spec_key(run.spec))[0]


def _fake_finished_run(layout: ArtifactsLayout, spec) -> None:
    """A run folder as training leaves it: files, and a manifest listing their hashes (no TensorFlow needed)."""
    folder = layout.run(spec.run_id)
    folder.path.mkdir(parents=True)
    for path in (folder.model, folder.history, folder.gradients, folder.kernel_histograms):
        path.write_bytes(f"{path.name} of {spec.run_id}".encode())
    (folder.tensorboard / "train").mkdir(parents=True)
    (folder.tensorboard / "train" / "events").write_bytes(b"events")
    write_json(folder.manifest, {"parameters": spec.model_dump(mode="json"), "created_at": "2026-11-28T00:00:00Z",
                                 "files": [path.name for path in folder.training_files],
                                 "file_hashes": folder_hashes(folder)})


def test_training_decisions_say_why(tmp_path):
    training_decision = _decision
    layout = ArtifactsLayout.at(tmp_path)
    (run,) = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[]), "data")
    assert training_decision(run, layout, refresh=False).reason == "new"
    _fake_finished_run(layout, run.spec)
    decision = training_decision(run, layout, refresh=False)
    assert (decision.action, decision.reason) == ("reused", "inputs, code and outputs unchanged")
    assert training_decision(run, layout, refresh=True).reason == "--refresh"

    (longer,) = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[], epochs=12), "data")
    assert training_decision(longer, layout, refresh=False).reason == "parameters changed (epochs)"
    edited = longer.model_copy(update={"spec": run.spec.model_copy(update={
        "code_files": {**run.spec.code_files, "mnist_models/architectures/dnn.py": "edited"}})})
    reason = training_decision(edited, layout, refresh=False).reason
    assert reason == "code changed (mnist_models/architectures/dnn.py)"
    other_data = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[]), "other")[0]
    assert training_decision(other_data, layout, refresh=False).reason == "data changed (data)"

    layout.run(run.run_id).history.write_bytes(b"tampered")
    decision = training_decision(run, layout, refresh=False)
    assert (decision.action, decision.reason) == ("recomputed", f"outputs modified (runs/{run.run_id}/history.parquet)")
    assert json.loads(layout.run(run.run_id).manifest.read_text())["parameters"]["model"] == "dnn"




def test_a_manifest_whose_spec_differs_from_its_folder_name_is_not_reused(tmp_path):
    """A folder is trusted for the run it was trained for: a manifest edited to another spec is a key change."""
    layout = ArtifactsLayout.at(tmp_path)
    (run,) = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[]), "data")
    _fake_finished_run(layout, run.spec)
    manifest = json.loads(layout.run(run.run_id).manifest.read_text())
    manifest["parameters"]["epochs"] = 12
    write_json(layout.run(run.run_id).manifest, manifest)
    assert _decision(run, layout, refresh=False).reason == "parameters changed (epochs)"


def test_a_file_the_manifest_does_not_list_is_a_change(tmp_path):
    layout = ArtifactsLayout.at(tmp_path)
    (run,) = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[]), "data")
    _fake_finished_run(layout, run.spec)
    (layout.run(run.run_id).path / "stray.bin").write_bytes(b"x")
    assert _decision(run, layout, refresh=False).reason == f"outputs modified (runs/{run.run_id}/stray.bin)"
