"""Every record that crosses a stage boundary round-trips through JSON, and is frozen."""

from pathlib import Path

import pydantic
import pytest

from mnist_models.records import (ChampionDecision, ClassMetrics, EvaluatedRun, FailedRun, PlannedRun, PreparedData,
                                  RunSpec, Scores, StudyResult, TrainedRun)

SPEC = RunSpec(model="resnet", learning_rate=0.001, epochs=20, batch_size=32, seed=42, train_subset=None,
               dataset="mnist", data_hash="d" * 64, code_files={"mnist_models/training.py": "c" * 64},
               versions={"tensorflow": "2.21"})
SCORES = Scores(accuracy=0.99, accuracy_low=0.988, accuracy_high=0.992, loss=0.03, macro_f1=0.99, macro_auc=0.999,
                map=0.998, per_class=(ClassMetrics.model_validate({
                    "class": 0, "precision": 1.0, "recall": 0.99, "f1": 0.995, "roc_auc": float("nan"),
                    "average_precision": 0.99, "support": 980}),),
                confusion=((970, 10), (2, 1133)))
EVALUATED = EvaluatedRun(trained=TrainedRun(spec=SPEC, parameters=1234, train_seconds=12.5), scores=SCORES,
                         roles=frozenset({"sweep", "gradient"}))
FAILED = FailedRun.of(PlannedRun(spec=SPEC, roles=frozenset({"sweep"})), "RunCrashedError: killed by signal 9")

RECORDS = [
    SPEC,
    PlannedRun(spec=SPEC, roles=frozenset({"gradient"})),
    PreparedData(dataset="mnist", content_hash="h", train=Path("data/mnist/train.parquet"),
                 test=Path("data/mnist/test.parquet"), test_hash="t"),
    EVALUATED,
    FAILED,
    TrainedRun(spec=SPEC, parameters=1234, train_seconds=1.5, diverged_epoch=1),
    StudyResult(artifacts_dir=Path("/tmp/a"), planned=1, runs=(EVALUATED,), failures=(FAILED,),
                tables={"summary": Path("tables/summary.parquet")},
                champions=(ChampionDecision(model="resnet", new_accuracy=0.99, champion_accuracy=0.995, promoted=False,
                                            regressed=True, message="resnet: REGRESSION"),)),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: type(record).__name__)
def test_each_record_round_trips_through_json(record):
    again = type(record).from_json(record.to_json())
    assert again == record
    assert again.to_json() == record.to_json()


def test_records_are_frozen_and_refuse_unknown_fields():
    with pytest.raises(pydantic.ValidationError):
        SPEC.epochs = 5
    with pytest.raises(pydantic.ValidationError, match="extra"):
        RunSpec.model_validate({**SPEC.model_dump(), "colour": "red"})


def test_an_undefined_auc_survives_json_as_missing():
    again = Scores.from_json(SCORES.to_json())
    assert again.per_class[0].roc_auc is None and again.per_class[0].class_ == 0
    assert again.per_class[0].model_dump()["class"] == 0


def test_a_run_serving_both_parts_of_the_study_shows_as_sweep():
    assert EVALUATED.serves("sweep") and EVALUATED.serves("gradient") and EVALUATED.role == "sweep"
    gradient_only = EVALUATED.model_copy(update={"roles": frozenset({"gradient"})})
    assert gradient_only.role == "gradient"


def test_the_run_id_is_a_content_address():
    assert SPEC.run_id.startswith("resnet-lr0.001-e20-s42-") and len(SPEC.cache_key) == 64
    assert SPEC.model_copy(update={"code_files": {"mnist_models/training.py": "e" * 64}}).run_id != SPEC.run_id
    assert StudyResult.from_json(RECORDS[-1].to_json()).regressions == ("resnet: REGRESSION",)
