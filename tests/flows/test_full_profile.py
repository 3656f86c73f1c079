"""The study itself, full size (about 30 minutes on 2 cores): `make test-all` runs it, `make test` does not."""

import pandas as pd
import pytest

from flows.full_study import full_study
from mnist_models.config import StudyConfig

STUDY_TABLE_5_1_AT_0_001 = {"dnn": 0.962, "convnet": 0.991, "resnet": 0.99}


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
@pytest.mark.usefixtures("prefect_harness", "mnist_mirror")
def test_full_profile_reproduces_the_study(tmp_path):
    full_study(StudyConfig(profile="full", artifacts_dir=tmp_path))
    sweep = pd.read_parquet(tmp_path / "tables" / "summary.parquet").query("role == 'sweep'")
    accuracy = sweep.set_index(["model", "learning_rate"])["accuracy"]
    for model, expected in STUDY_TABLE_5_1_AT_0_001.items():
        assert accuracy[(model, 0.001)] == pytest.approx(expected, abs=0.01), model
        assert accuracy[(model, 0.1)] < 0.2, f"{model} at LR 0.1 should diverge as in the study"
    assert (tmp_path / "report" / "report.html").exists()
