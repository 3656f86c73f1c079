"""Planning: which runs, with which roles, grouped into lineages, in what order, and when one counts as hung."""

from mnist_models.atomic_files import write_json
from mnist_models.config import StudyConfig
from mnist_models.layout import ArtifactsLayout
from mnist_models.planning import lineage_jobs, plan_runs, share_threads, study_order
from mnist_models.records import EvaluatedRun
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


def test_a_training_is_hung_only_after_ten_expected_epochs_and_never_before_the_floor():
    from mnist_models.planning import STALL_FLOOR_SECONDS, stall_seconds

    (dnn,) = plan_runs(config(models=["dnn"], learning_rates=[0.01], gradient_models=[], train_subset=2000), "data")
    assert stall_seconds(dnn.spec, threads=1) == STALL_FLOOR_SECONDS
    (resnet,) = plan_runs(config(models=["resnet"], learning_rates=[0.01], gradient_models=[]), "data")
    assert stall_seconds(resnet.spec, {"resnet": 200.0}, threads=1) == 10 * 200.0 * 2


def test_spare_cores_go_to_the_critical_path_and_only_its_runs_change_keys():
    """On 16 cores the study's 13 lineages train at once; the 3 spare cores shorten the longest ones (the ResNet
    10 + 20-epoch lineage, then resnet_plain's 20 epochs), and only their runs get new keys."""
    study = config()
    one_each = plan_runs(study, "data")
    shares = share_threads(study, one_each, cores=16)
    assert len(shares) == 13 and sum(shares.values()) == 16
    assert {name: count for name, count in shares.items() if count > 1} == {
        ("resnet", 0.001, 42): 3, ("resnet_plain", 0.001, 42): 2}
    shared = plan_runs(study, "data", threads=shares)
    changed = {run.spec.model for before, run in zip(one_each, shared) if before.run_id != run.run_id}
    assert changed == {"resnet", "resnet_plain"}
    assert {run.spec.threads for run in shared if run.spec.model == "resnet" and run.spec.learning_rate == 0.001} == {3}
    # the longest-first order of the jobs is the critical path's: the lineage with most threads starts first
    assert lineage_jobs(shared)[0][-1].spec.threads == 3


def test_threads_are_even_where_lineages_queue_or_another_rule_decides():
    study = config()
    planned = plan_runs(study, "data")
    assert set(share_threads(study, planned, cores=2).values()) == {1}  # 13 lineages queue for 2 processes
    assert set(share_threads(config(workers=4), planned, cores=16).values()) == {4}  # 4 at a time: which, unknown
    assert set(share_threads(config(threads=2), planned, cores=16).values()) == {2}
    assert set(share_threads(config(dask_address="tcp://x:8786"), planned, cores=16).values()) == {1}
    assert set(share_threads(study, planned, cores=16, gpu_slots=4).values()) == {4}
    assert share_threads(study, planned[:1], cores=2) == {("dnn", 0.1, 42): 2}  # one lineage alone: both cores
