"""Planning: which runs, with which roles, which must train and why, in what order, on how many threads."""

import json

import pytest

from mnist_models.config import StudyConfig
from mnist_models.io import write_json
from mnist_models.layout import ArtifactsLayout
from mnist_models.planning import (DEFAULT_RUN_MEMORY_MB, Capacity, check_workers, longest_first, machine_capacity,
                                   parallel_runs, plan_runs, study_order, threads_per_worker, training_decision)
from mnist_models.records import EvaluatedRun
from mnist_models.training import folder_hashes
from tests.mnist_models.test_records import EVALUATED


def config(**values) -> StudyConfig:
    return StudyConfig(**values).resolved(__import__("datetime").date(2026, 11, 28))


def test_a_run_serving_the_sweep_and_the_gradient_experiment_is_planned_once_with_both_roles():
    planned = plan_runs(config(models=["resnet"], learning_rates=[0.001], epochs=20), "data")
    roles = {run.spec.model: run.roles for run in planned}
    assert roles == {"resnet": {"sweep", "gradient"}, "resnet_plain": {"gradient"}}


def test_the_full_grid_has_twelve_sweep_runs_and_the_gradient_pair():
    planned = plan_runs(config(), "data")
    assert len(planned) == 14
    assert sum(run.serves("sweep") for run in planned) == 12 and sum(run.serves("gradient") for run in planned) == 2
    assert len({run.run_id for run in planned}) == 14


def test_the_longest_runs_start_first():
    ordered = longest_first(plan_runs(config(), "data"))
    assert [(run.spec.model, run.spec.epochs) for run in ordered[:2]] == [("resnet_plain", 20), ("resnet", 20)]
    assert ordered[-1].spec.model == "dnn"


@pytest.mark.parametrize(("workers", "runs", "cores", "memory_mb", "parallel", "threads"), [
    (None, 14, 2, 24_000, 2, 1), (None, 1, 2, 24_000, 1, 2), (1, 14, 2, 24_000, 1, 2), (4, 3, 8, 24_000, 3, 2),
    (None, 0, 2, 24_000, 1, 2), (None, 14, 8, 3_000, 2, 4), (None, 14, 8, 500, 1, 8)])
def test_cores_and_memory_bound_the_runs_that_train_at_once(workers, runs, cores, memory_mb, parallel, threads):
    capacity = Capacity(cores=cores, available_mb=memory_mb, run_mb=1500)
    study = config(workers=workers)
    assert parallel_runs(study, runs, capacity) == parallel
    assert threads_per_worker(study, runs, capacity) == threads
    assert threads_per_worker(config(dask_address="tcp://x:8786"), runs, capacity) is None


def test_more_workers_than_memory_holds_is_refused_with_the_numbers():
    capacity = Capacity(cores=2, available_mb=3_000, run_mb=1_000)
    check_workers(config(workers=3), capacity)
    with pytest.raises(ValueError, match=r"invalid workers: 4 parallel runs do not fit this machine \(2 core\(s\), "
                                         r"2.9 GiB available at about 1000 MiB per run \(room for 3\)\); expected at most 3"):
        check_workers(config(workers=4), capacity)


def test_a_run_s_memory_comes_from_earlier_manifests(tmp_path):
    layout = ArtifactsLayout.at(tmp_path)
    assert machine_capacity(layout).run_mb == DEFAULT_RUN_MEMORY_MB
    for name, peak in (("a", 800.0), ("b", 1200.0)):
        write_json(layout.run(name).manifest, {"peak_memory_mb": peak})
    capacity = machine_capacity(layout)
    assert capacity.run_mb == 1500.0 and capacity.cores >= 1 and capacity.available_mb > 0


def test_results_come_in_the_study_order():
    def run(model, rate, roles):
        spec = EVALUATED.spec.model_copy(update={"model": model, "learning_rate": rate})
        return EVALUATED.model_copy(update={"trained": EVALUATED.trained.model_copy(update={"spec": spec}),
                                            "roles": frozenset(roles)})

    runs = [run("resnet_plain", 0.001, {"gradient"}), run("resnet", 0.01, {"sweep"}), run("dnn", 0.001, {"sweep"}),
            run("dnn", 0.1, {"sweep"})]
    ordered = study_order(runs, ("dnn", "convnet", "resnet", "resnet_plain"))
    assert [(r.model, r.learning_rate) for r in ordered] == [("dnn", 0.1), ("dnn", 0.001), ("resnet", 0.01),
                                                             ("resnet_plain", 0.001)]
    assert all(isinstance(r, EvaluatedRun) for r in ordered)


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
    layout = ArtifactsLayout.at(tmp_path)
    (run,) = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[]), "data")
    assert training_decision(run, layout, refresh=False).reason == "new"
    _fake_finished_run(layout, run.spec)
    decision = training_decision(run, layout, refresh=False)
    assert (decision.action, decision.reason) == ("reused", "run folder complete and unchanged")
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
    assert decision.action == "recomputed" and "outputs missing or modified" in decision.reason
    assert json.loads(layout.run(run.run_id).manifest.read_text())["parameters"]["model"] == "dnn"


def test_costs_are_calibrated_from_this_machine_s_manifests(tmp_path):
    from mnist_models.planning import EPOCH_COST, epoch_costs, lineage_jobs

    layout = ArtifactsLayout.at(tmp_path)
    assert epoch_costs(layout) == EPOCH_COST
    # Measured here: dnn is slow and resnet fast (per 1,000 images), the reverse of the defaults.
    for name, model, seconds in (("a", "dnn", [30.0, 20.0, 20.0]), ("b", "resnet", [1.0, 1.0])):
        write_json(layout.run(name).manifest, {"parameters": {"model": model}, "train_images": 1000,
                                               "epoch_seconds": seconds})
    costs = epoch_costs(layout)
    assert costs["dnn"] == 20.0 * 60 and costs["resnet"] == 1.0 * 60 and costs["convnet"] == EPOCH_COST["convnet"]
    planned = plan_runs(config(models=["dnn", "resnet"], learning_rates=[0.01], gradient_models=[]), "data")
    assert [job[0].spec.model for job in lineage_jobs(planned, costs)] == ["dnn", "resnet"]
    assert [job[0].spec.model for job in lineage_jobs(planned)] == ["resnet", "dnn"]


def test_a_lineage_is_one_job_with_its_runs_in_epoch_order():
    from mnist_models.planning import lineage_jobs

    planned = plan_runs(config(), "data")
    jobs = lineage_jobs(planned)
    assert len(jobs) == 13  # 14 runs: resnet at LR 0.001 for 10 and 20 epochs train once
    (resnet,) = [job for job in jobs if len(job) == 2]
    assert [(run.spec.model, run.spec.epochs) for run in resnet] == [("resnet", 10), ("resnet", 20)]
    assert resnet[0].roles == {"sweep"} and resnet[1].roles == {"gradient"}


def test_a_train_subset_at_least_the_split_size_is_the_whole_split():
    whole = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[]), "data", 60_000)
    larger = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[], train_subset=70_000),
                       "data", 60_000)
    smaller = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[], train_subset=59_999),
                        "data", 60_000)
    assert larger[0].run_id == whole[0].run_id and larger[0].spec.train_subset is None
    assert smaller[0].spec.train_subset == 59_999


def test_threads_follow_the_lineages_that_train_not_the_runs():
    """The ResNet 10/20 lineage alone: two runs, one process, both cores."""
    capacity = Capacity(cores=2, available_mb=16_000, run_mb=1_000)
    assert threads_per_worker(config(), 1, capacity) == 2
    assert threads_per_worker(config(), 2, capacity) == 1


def test_a_training_is_hung_only_after_ten_expected_epochs_and_never_before_the_floor():
    from mnist_models.planning import STALL_FLOOR_SECONDS, stall_seconds

    (dnn,) = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[], train_subset=2000), "data")
    assert stall_seconds(dnn.spec, threads=1) == STALL_FLOOR_SECONDS
    (resnet,) = plan_runs(config(models=["resnet"], learning_rates=[0.01], gradient_models=[]), "data")
    assert stall_seconds(resnet.spec, {"resnet": 200.0}, threads=1) == 10 * 200.0 * 2
