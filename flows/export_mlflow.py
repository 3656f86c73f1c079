"""Export a study's runs, and a nightly run's champions, to an MLflow tracking server (the `mlflow` extra).

Run:   python flows/export_mlflow.py --artifacts-dir artifacts --mlflow-tracking-uri http://127.0.0.1:5000
       python flows/export_mlflow.py --artifacts-dir artifacts/nightly --mlflow-tracking-uri ...  (and the champions)
       mnist-study export ...                      (the same options)
Time:  a few seconds per run exported for the first time (its model is loaded and uploaded); an unchanged
       run costs one query, so exporting again after every study run is cheap.
Makes: in the experiment `mnist-study`, one MLflow run per run folder (tag mnist_study.run_id): parameters,
       per-epoch metrics, test scores, tags and the Keras model. A nightly artifacts directory also makes each
       champion version a version of the registered model `<dataset>-<model>`, the alias `champion` on the
       current one. Exporting again updates, never duplicates; nothing under the artifacts directory changes.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Failed
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flows._runtime import parse_config, run_cli, run_flow
from mnist_models.config import format_validation_error
from mnist_models.mlflow_export import (EXPERIMENT, ExportReport, check_server, check_tracking_uri, export_runs,
                                        require_mlflow)


class ExportConfig(BaseModel):
    """What an export needs: the artifacts directory, the tracking server and the experiment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    artifacts_dir: Path = Field(Path("artifacts"), description="the study's artifacts directory (artifacts/nightly: "
                                                               "the nightly runs and their champions)")
    mlflow_tracking_uri: str = Field("", validate_default=True,
                                     description="the MLflow tracking server, e.g. http://127.0.0.1:5000 (required)")
    mlflow_experiment: str = Field(EXPERIMENT, description="the MLflow experiment that holds the runs")

    @classmethod
    def validated(cls, **values: object) -> "ExportConfig":
        """The configuration from these values, or one ValueError naming each bad parameter."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise ValueError(format_validation_error(error)) from None

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _usable_uri(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected the MLflow tracking server, e.g. --mlflow-tracking-uri http://127.0.0.1:5000")
        return check_tracking_uri(value)

    @field_validator("mlflow_experiment")
    @classmethod
    def _named_experiment(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"expected an experiment name such as {EXPERIMENT}")
        return value


@flow(name="export-mlflow", validate_parameters=False)
def export_mlflow(config: ExportConfig | dict) -> ExportReport:
    """Export every run folder (and a nightly directory's champions) to MLflow; exporting again updates in place."""
    try:
        config = config if isinstance(config, ExportConfig) else ExportConfig.validated(**dict(config or {}))
        report = export_runs(Path(config.artifacts_dir), config.mlflow_tracking_uri, config.mlflow_experiment)
    except (ValueError, FileNotFoundError) as error:
        return Failed(message=str(error))
    get_run_logger().info(report.describe())
    return report


def main(argv: list[str] | None = None) -> ExportReport:
    """Command line: check the options, the mlflow extra and the server before starting Prefect, then export."""
    config = parse_config(ExportConfig, __doc__.split("\n\n")[0], argv, check_machine=False)
    require_mlflow()
    check_server(config.mlflow_tracking_uri)
    if not Path(config.artifacts_dir).is_dir():
        raise FileNotFoundError(f"{config.artifacts_dir} does not exist; expected a study's artifacts directory")
    report = run_flow(export_mlflow, config)
    print(report.describe())
    return report


if __name__ == "__main__":
    run_cli(main)
