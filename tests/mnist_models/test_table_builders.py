"""The table builders on hand-built runs: what each table holds, row by row."""

import numpy as np
import pandas as pd
import pytest

from mnist_models import table_builders
from mnist_models.evaluation import StudyRuns
from mnist_models.layout import ArtifactsLayout
from tests.mnist_models.test_nightly import summary as summary_rows
from tests.mnist_models.test_records import EVALUATED


def _run(model, rate, accuracy, roles=("sweep",), seed=42):
    spec = EVALUATED.spec.model_copy(update={"model": model, "learning_rate": rate, "seed": seed, "epochs": 10})
    scores = EVALUATED.scores.model_copy(update={"accuracy": accuracy, "accuracy_low": accuracy - 0.01,
                                                 "accuracy_high": accuracy + 0.01})
    return EVALUATED.model_copy(update={"trained": EVALUATED.trained.model_copy(update={"spec": spec}),
                                        "scores": scores, "roles": frozenset(roles)})


@pytest.fixture
def study(tmp_path):
    runs = (_run("dnn", 0.01, 0.93), _run("dnn", 0.001, 0.96), _run("convnet", 0.001, 0.99),
            _run("resnet", 0.001, 0.991, roles=("sweep", "gradient")), _run("resnet_plain", 0.001, 0.98, ("gradient",)))
    return StudyRuns(runs, ArtifactsLayout.at(tmp_path), ("dnn", "convnet", "resnet", "resnet_plain"))


def test_the_summary_has_one_row_per_run_with_its_roles(study):
    summary = table_builders.summary_table(study)
    assert list(summary.columns) == table_builders.SUMMARY_COLUMNS and len(summary) == 5
    resnet = summary.set_index("model").loc["resnet"]
    assert (resnet["role"], resnet["roles"]) == ("sweep", "sweep,gradient")
    assert summary.set_index("model").loc["resnet_plain", "role"] == "gradient"


def test_study_tables_2_1_and_5_1_come_from_the_sweep_rows(study):
    summary = table_builders.summary_table(study)
    at_lr = table_builders.accuracy_at_lr_table(summary)
    assert at_lr["model"].tolist() == ["dnn", "convnet", "resnet"]  # resnet_plain is not in the sweep
    assert at_lr["study_accuracy"].tolist() == [0.959, 0.987, 0.991]
    sweep = table_builders.lr_sweep_table(summary)
    assert list(sweep.columns) == ["model", "lr 0.01", "lr 0.001"]
    assert sweep.set_index("model").loc["dnn"].tolist() == [0.93, 0.96]
    assert np.isnan(sweep.set_index("model").loc["convnet", "lr 0.01"])


def test_per_class_and_confusion_tables_hold_every_run(study):
    per_class = table_builders.per_class_table(study)
    assert len(per_class) == 5 * len(EVALUATED.scores.per_class) and per_class["roc_auc"].isna().all()
    confusion = table_builders.confusion_table(study)
    assert len(confusion) == 5 * 2 and list(confusion.columns[-2:]) == ["predicted_0", "predicted_1"]


def test_the_representative_run_is_at_the_reference_rate_else_the_best(study):
    summary = table_builders.summary_table(study)
    chosen = table_builders.representative_runs(summary)
    assert {model: run_id.split("-")[1] for model, run_id in chosen.items()} == {
        "dnn": "lr0.001", "convnet": "lr0.001", "resnet": "lr0.001"}
    elsewhere = summary[~np.isclose(summary["learning_rate"], 0.001) | (summary["model"] != "dnn")]
    assert table_builders.representative_runs(elsewhere)["dnn"].split("-")[1] == "lr0.01"


@pytest.mark.parametrize(("accuracies", "chosen"), [
    ((0.95, 0.97, 0.96), "dnn-s3"),  # the median seed, not the best
    ((0.95, 0.97, 0.96, 0.94), "dnn-s1"),  # an even count: the lower middle (0.95)
    ((0.95,), "dnn-s1"),  # one seed: the one run, as before
])
def test_the_representative_run_is_the_median_seed_at_the_reference_rate(accuracies, chosen):
    rows = [("dnn", 0.001, accuracy, f"dnn-s{seed}", "sweep", seed) for seed, accuracy in enumerate(accuracies, 1)]
    rows.append(("dnn", 0.01, 0.99, "dnn-fast", "sweep", 1))
    assert table_builders.representative_runs(summary_rows(*rows)) == {"dnn": chosen}
    elsewhere = summary_rows(*((model, 0.01 if model == "dnn" else rate, accuracy, run_id, role, seed)
                               for model, rate, accuracy, run_id, role, seed in rows[:-1]))
    assert table_builders.representative_runs(elsewhere) == {"dnn": chosen}  # no run at 0.001: the best rate's median


def test_significance_needs_the_saved_predictions(study):
    with pytest.raises(FileNotFoundError):
        table_builders.significance_table(study)
    for run in study.serving("sweep"):
        folder = study.folder(run)
        folder.path.mkdir(parents=True)
        pd.DataFrame({"label": [0, 1, 1, 0], "predicted": [0, 1, 0 if run.model == "dnn" else 1, 0]}).to_parquet(
            folder.predictions)
    table = table_builders.significance_table(study)
    assert len(table) == 3 and set(table["seed"]) == {42}


def test_the_model_summary_comes_from_the_layers_training_recorded_else_from_keras(study):
    import json

    from mnist_models.architectures import build_model, describe_layers
    from mnist_models.runs import folder_hashes

    built = table_builders.model_summary_table(study)  # no run folder here: each model is built with Keras
    convnet = built[built["model"] == "convnet"].set_index("layer")
    assert convnet.loc["conv_2", "study_formula"] == "3x3x64x32+64" and convnet.loc["conv_2", "parameters"] == 18496
    assert convnet.loc["(total)", "parameters"] == 93322 and convnet.loc["conv_1", "output_shape"] == "(None, 26, 26, 32)"

    recorded = describe_layers(build_model("convnet"))
    recorded[1]["layer"] = "conv_1_as_recorded"
    run = next(run for run in study.runs if run.model == "convnet")
    folder = study.folder(run)
    folder.path.mkdir(parents=True)
    (folder.path / "model.keras").write_bytes(b"weights")
    folder.manifest.write_text(json.dumps({"files": ["model.keras"], "file_hashes": folder_hashes(folder),
                                           "layers": recorded}))
    from_run = table_builders.model_summary_table(study)
    assert from_run[from_run["model"] == "convnet"]["layer"].tolist()[1] == "conv_1_as_recorded"
    others = from_run["layer"] != "conv_1_as_recorded"
    pd.testing.assert_frame_equal(from_run[others].reset_index(drop=True),
                                  built[built["layer"] != "conv_1"].reset_index(drop=True))
