"""The flow's final message: every problem of a study run, together."""

from pathlib import Path

from mnist_models.records import ChampionDecision, FailedRun, PlannedRun, StudyResult
from tasks.stages import failure_message
from tests.mnist_models.test_records import EVALUATED, SPEC


def test_failed_runs_and_a_nightly_regression_reach_the_message_together():
    failed = FailedRun.of(PlannedRun(spec=SPEC, roles=frozenset({"sweep"})), "RunCrashedError: killed by signal 9")
    regression = ChampionDecision(model="dnn", new_accuracy=0.95, champion_accuracy=0.97, promoted=False,
                                  regressed=True, message="dnn: champion kept; REGRESSION")
    kept = regression.model_copy(update={"model": "convnet", "regressed": False, "message": "convnet: kept"})
    result = StudyResult(artifacts_dir=Path("/tmp/a"), planned=3, runs=(EVALUATED,), failures=(failed,),
                         champions=(regression, kept))
    message = failure_message(result)
    assert "1 of 3 runs failed" in message and f"{SPEC.run_id}: RunCrashedError: killed by signal 9" in message
    assert "nightly regression gate failed" in message and "dnn: champion kept; REGRESSION" in message
    assert "convnet" not in message
    assert failure_message(StudyResult(artifacts_dir=Path("/tmp/a"), planned=1, runs=(EVALUATED,))) == ""
