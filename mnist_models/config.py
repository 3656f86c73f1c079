"""The study's one validated parameter object, and its named profiles (`full`, `quick`)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mnist_models.architectures import check_model_name
from mnist_models.datasets import get_dataset

Profile = Literal["full", "quick"]

# Values that differ between profiles; everything else has one default that reproduces the study.
PROFILES: dict[str, dict[str, object]] = {
    "full": {
        "models": ("dnn", "convnet", "resnet"),
        "learning_rates": (0.1, 0.01, 0.001, 0.0001),
        "epochs": 10,
        "train_subset": None,
        "gradient_epochs": 20,
    },
    "quick": {
        "models": ("dnn", "convnet", "resnet"),
        "learning_rates": (0.01, 0.001),
        "epochs": 1,
        "train_subset": 2000,
        "gradient_epochs": 2,
    },
}


class StudyConfig(BaseModel):
    """Everything that defines a study run; the defaults are the study's own settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: Profile = "full"
    dataset: str = "mnist"
    mirrors: tuple[str, ...] | None = Field(None, description="URLs or directories; None = dataset defaults")
    artifacts_dir: Path = Path("artifacts")
    models: tuple[str, ...] = ("dnn", "convnet", "resnet")
    learning_rates: tuple[float, ...] = (0.1, 0.01, 0.001, 0.0001)
    epochs: int = 10
    batch_size: int = 32
    train_subset: int | None = Field(None, description="stratified training subset size; None = all")
    gradient_models: tuple[str, ...] = ("resnet_plain", "resnet")
    gradient_learning_rate: float = 0.001
    gradient_epochs: int = 20
    seed: int = 42
    workers: int | None = Field(None, description="parallel training processes; None = one per core")
    dask_address: str | None = None
    refresh: bool = False
    nightly: bool = False
    regression_tolerance: float = Field(0.005, description="accuracy drop below the champion that fails a nightly run")

    @classmethod
    def for_profile(cls, profile: str = "full", **overrides: object) -> "StudyConfig":
        """Build the named profile, then apply the overrides that are not None."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of: {', '.join(PROFILES)}")
        values = {**PROFILES[profile], **{key: value for key, value in overrides.items() if value is not None}}
        try:
            return cls(profile=profile, **values)
        except ValidationError as error:
            raise ValueError(format_validation_error(error)) from None

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        get_dataset(value)
        return value

    @field_validator("models", "gradient_models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            check_model_name(name)
        return _each_once(value, "models")

    @field_validator("learning_rates")
    @classmethod
    def _positive_learning_rates(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for rate in value:
            _check_learning_rate(rate)
        return _each_once(value, "learning rates")

    @field_validator("gradient_learning_rate")
    @classmethod
    def _positive_gradient_learning_rate(cls, value: float) -> float:
        return _check_learning_rate(value)

    @field_validator("epochs", "gradient_epochs", "batch_size")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("workers", "train_subset")
    @classmethod
    def _positive_or_none(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1 (or left unset), got {value}")
        return value

    @field_validator("regression_tolerance")
    @classmethod
    def _tolerance_range(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"must be a fraction of accuracy in [0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _non_empty_grid(self) -> "StudyConfig":
        if not (self.models and self.learning_rates) and not self.gradient_models:
            raise ValueError(
                "the training grid is empty: give at least one model and one learning rate "
                "(or gradient models)"
            )
        return self

    @property
    def resolved_workers(self) -> int:
        """Worker processes to use: the option, else one per core."""
        return self.workers or max(1, os.cpu_count() or 1)

    @property
    def resolved_mirrors(self) -> tuple[str, ...]:
        """The mirrors to try, in order: the option, else the dataset's defaults."""
        return self.mirrors or get_dataset(self.dataset).mirrors


def _each_once(values: tuple, what: str) -> tuple:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} are listed twice in {list(values)}; expected each once")
    return values


def _check_learning_rate(rate: float) -> float:
    if not isinstance(rate, (int, float)) or math.isnan(rate) or math.isinf(rate) or rate <= 0:
        raise ValueError(f"learning rate {rate!r} is invalid; expected a positive number such as 0.001")
    return float(rate)


def format_validation_error(error: ValidationError) -> str:
    """Turn pydantic's report into one message per bad parameter, named as the user spelled it."""
    lines = []
    for item in error.errors():
        parameter = ".".join(str(part) for part in item["loc"] if not isinstance(part, int)) or "parameters"
        message = item["msg"].removeprefix("Value error, ")
        if item["loc"] and "got" not in message:
            message += f" (got {item.get('input')!r})"
        lines.append(f"invalid {parameter}: {message}")
    return "; ".join(lines)


def artifacts_paths(artifacts_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Every output location, derived from the one artifacts root (see DESIGN.md)."""
    root = Path(artifacts_dir)
    return {
        "root": root,
        "data": root / "data",
        "runs": root / "runs",
        "tables": root / "tables",
        "figures": root / "figures",
        "report": root / "report",
        "models": root / "models",
        "cache": root / ".cache",
    }
