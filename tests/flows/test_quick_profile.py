"""The quick profile end to end, with the default process-pool fan-out: every table, figure, report."""

import time

import pandas as pd
import pytest

from flows.full_study import full_study
from mnist_models import outputs
from mnist_models.config import StudyConfig

# From the registry: every table of the data and study stages, every figure it declares for one seed.
TABLES = [spec.name for spec in outputs.TABLES.values() if spec.stage != "nightly"]
SEVERAL_SEEDS_ONLY = {"lr_sweep_seeds", "gradient_norms_seeds"}
FIGURES = ("first_25_images", *(spec.name.format(model=model) for spec in outputs.FIGURES.values()
                                if spec.name not in SEVERAL_SEEDS_ONLY
                                for model in (("dnn", "convnet", "resnet") if spec.per_model else ("",))))


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory, prefect_harness, mnist_dir):
    artifacts = tmp_path_factory.mktemp("quick")
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_MIRROR", str(mnist_dir))
        result = full_study(StudyConfig(profile="quick", artifacts_dir=artifacts))
    print(f"quick profile: {time.monotonic() - started:.1f} s")
    return artifacts, result


def test_quick_profile_writes_every_table_figure_and_the_report(quick_study):
    artifacts, result = quick_study
    assert len(TABLES) == 13 and len(FIGURES) == 14  # failures included: written empty when none failed
    for name in TABLES:
        for suffix in ("parquet", "csv", "md"):
            assert (artifacts / "tables" / f"{name}.{suffix}").stat().st_size > 0, f"{name}.{suffix}"
    for name in FIGURES:
        assert (artifacts / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (artifacts / "report" / "report.md").read_text()
    assert "## " in report and "Conclusion" in report
    assert (artifacts / "report" / "report.html").stat().st_size > 100_000  # images are embedded
    assert len(result.runs) == 8


def test_quick_profile_tables_hold_the_grid(quick_study):
    artifacts, _ = quick_study
    summary = pd.read_parquet(artifacts / "tables" / "summary.parquet")
    sweep = summary[summary["role"] == "sweep"]
    assert sorted(zip(sweep["model"], sweep["learning_rate"])) == sorted(
        (model, rate) for model in ("dnn", "convnet", "resnet") for rate in (0.01, 0.001))
    gradient = summary[summary["role"] == "gradient"]
    assert sorted(gradient["model"]) == ["resnet", "resnet_plain"] and set(gradient["epochs"]) == {2}
    per_class = pd.read_parquet(artifacts / "tables" / "per_class_metrics.parquet")
    assert len(per_class) == 8 * 10 and per_class["support"].sum() == 8 * 10_000  # the full test split
    significance = pd.read_parquet(artifacts / "tables" / "significance.parquet")
    assert len(significance) == 3  # the three pairs of models at LR 0.001
    lr_sweep = pd.read_parquet(artifacts / "tables" / "lr_sweep.parquet")
    assert list(lr_sweep.columns) == ["model", "lr 0.01", "lr 0.001"]
    # Training used 2,000 stratified images; every run's manifest says so.
    assert {run["run_id"].split("-n")[1].split("-")[0] for run in _manifests(artifacts)} == {"2000"}


def _manifests(artifacts):
    import json

    return [json.loads(path.read_text()) for path in (artifacts / "runs").glob("*/manifest.json")]
