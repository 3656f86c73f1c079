"""The study's parameters, stated once: their types, defaults, descriptions and named profiles.

`StudyConfig` is the flow's one parameter (Prefect renders it as a form in the UI) and the source
of the command-line options (flows/_runtime.py derives them from these fields). A profile names
the values that differ from the study's own; unset fields take the profile's value.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mnist_models.architectures import check_model_name
from mnist_models.datasets import get_dataset
from mnist_models.nightly import nightly_seed

Profile = Literal["full", "quick", "replicated"]
STUDY_SEED = 42
STAGES = ("data", "train", "evaluate", "tables", "figures", "report")  # what --refresh can name
SEED_LIMIT = 2**32  # NumPy and TensorFlow seeds are unsigned 32-bit

# Values that differ from the class defaults (which are the study's own settings, profile `full`).
PROFILES: dict[str, dict[str, object]] = {
    "full": {},
    "quick": {"learning_rates": (0.01, 0.001), "epochs": 1, "train_subset": 2000, "gradient_epochs": 2},
    "replicated": {"replicates": 3},
}


class DataConfig(BaseModel):
    """What the data stage needs: which data set, from where, into which artifacts root."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field("mnist", description="mnist or fashion-mnist")
    mirrors: tuple[str, ...] | None = Field(
        None, description="http(s)://, file:// URLs or local directories holding the four .gz files, tried in order "
        "(default: $MNIST_MIRROR, else the public mirrors)",
        json_schema_extra={"flag": "--mirror", "metavar": "URL_OR_DIR", "repeatable": True})
    artifacts_dir: Path = Field(Path("artifacts"), description="root of every output")
    refresh: tuple[str, ...] = Field(
        (), description=f"recompute these stages whatever the cache says: any of {', '.join(STAGES)} "
        "(no name, `all` or true: every stage)", json_schema_extra={"nargs": "*", "metavar": "STAGE"})

    @classmethod
    def validated(cls, **values: object):
        """The configuration from these values, or one ValueError naming each bad parameter as the user spelled it."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise ValueError(format_validation_error(error)) from None

    @field_validator("refresh", mode="before")
    @classmethod
    def _refresh_stages(cls, value: Any) -> Any:
        if value is True or value == "all":
            return STAGES
        if value is False or value is None:
            return ()
        value = (value,) if isinstance(value, str) else tuple(value)
        if "all" in value:
            return STAGES
        unknown = [stage for stage in value if stage not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(map(repr, unknown))}; expected any of: {', '.join(STAGES)}")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        get_dataset(value)
        return value

    @property
    def data_config(self) -> "DataConfig":
        """The data stage's part of this configuration."""
        return DataConfig(**{name: getattr(self, name) for name in DataConfig.model_fields})


class StudyConfig(DataConfig):
    """Everything that defines a study run; the defaults are the study's own settings."""

    profile: Profile = Field("full", description="full = the study; quick = every stage on a 2,000-image slice; "
                                                 "replicated = the study with 3 seeds per cell")
    models: tuple[str, ...] = Field(("dnn", "convnet", "resnet"), description="models of the learning-rate sweep")
    learning_rates: tuple[float, ...] = Field((0.1, 0.01, 0.001, 0.0001), description="learning rates of the sweep")
    epochs: int = Field(10, description="epochs per sweep run")
    batch_size: int = Field(32, description="training batch size")
    seed: int | None = Field(None, description=f"random seed of every run (default {STUDY_SEED}; a nightly run: "
                                               "the date as YYYYMMDD)")
    seeds: tuple[int, ...] | None = Field(None, description="train every cell once per seed, e.g. 42,43,44 "
                                                            "(default: --seed alone)")
    replicates: int | None = Field(None, description="train every cell with this many seeds: --seed, --seed + 1, ...")
    train_subset: int | None = Field(None, description="train on a stratified subset of this many images (default: all)")
    gradient_models: tuple[str, ...] = Field(("resnet_plain", "resnet"),
                                             description="models of the gradient experiment ('' for none)")
    gradient_learning_rate: float = Field(0.001, description="learning rate of the gradient experiment")
    gradient_epochs: int = Field(20, description="epochs of the gradient experiment")
    workers: int | None = Field(None, description="parallel training processes (default: one per core)")
    dask_address: str | None = Field(None, description="train on an existing Dask cluster, e.g. tcp://10.0.0.5:8786")
    nightly: bool = Field(False, description="nightly retraining: date seed, history, champions and the regression gate")
    regression_tolerance: float = Field(
        0.005, description="nightly: fail if a model's accuracy drops more than this below its champion")
    significance_level: float = Field(
        0.05, description="nightly: a drop fails the night only when McNemar's test against the champion has p below this")
    keep_nights: int = Field(14, description="nightly: keep the run folders of this many recent nights (and every "
                                             "champion's); prune the rest")

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, values: Any) -> Any:
        """Unset fields (absent or None) take the profile's value, then the class default."""
        if not isinstance(values, dict):
            return values
        profile = values.get("profile") or "full"
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of: {', '.join(PROFILES)}")
        given = {key: value for key, value in values.items() if value is not None}
        return {**PROFILES[profile], **given, "profile": profile}

    @classmethod
    def for_profile(cls, profile: str = "full", **overrides: object) -> "StudyConfig":
        """Build the named profile with overrides, or raise one ValueError naming each bad parameter."""
        return cls.validated(profile=profile, **overrides)

    def resolved(self, today: dt.date) -> "StudyConfig":
        """This configuration with its seed decided (a nightly run's comes from the date) and an absolute root."""
        seed = self.seed if self.seed is not None else (nightly_seed(today) if self.nightly else STUDY_SEED)
        return self.model_copy(update={"seed": seed, "artifacts_dir": Path(self.artifacts_dir).resolve()})

    @field_validator("models", "gradient_models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            check_model_name(name)
        return _each_once(value, "models")

    @field_validator("learning_rates")
    @classmethod
    def _positive_learning_rates(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return _each_once(tuple(_check_learning_rate(rate) for rate in value), "learning rates")

    @field_validator("gradient_learning_rate")
    @classmethod
    def _positive_gradient_learning_rate(cls, value: float) -> float:
        return _check_learning_rate(value)

    @field_validator("epochs", "gradient_epochs", "batch_size", "keep_nights")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds_in_range(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        for seed in value or ():
            cls._seed_range(seed)
        return _each_once(value, "seeds") if value is not None else None

    @field_validator("workers", "train_subset", "replicates")
    @classmethod
    def _positive_or_none(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1 (or left unset), got {value}")
        return value

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value < SEED_LIMIT:
            raise ValueError(f"must be in [0, 2**32) (an unsigned 32-bit seed), got {value}")
        return value

    @field_validator("significance_level")
    @classmethod
    def _level_range(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"must be a probability in (0, 1), such as 0.05, got {value}")
        return value

    @field_validator("regression_tolerance")
    @classmethod
    def _tolerance_range(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"must be a fraction of accuracy in [0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _seeds_or_replicates(self) -> "StudyConfig":
        if self.seeds and self.replicates:
            raise ValueError("give --seeds or --replicates, not both")
        if self.seeds == ():
            raise ValueError("seeds is empty; expected at least one seed such as 42")
        return self

    @model_validator(mode="after")
    def _non_empty_grid(self) -> "StudyConfig":
        if not (self.models and self.learning_rates) and not self.gradient_models:
            raise ValueError(
                "the training grid is empty: give at least one model and one learning rate "
                "(or gradient models)"
            )
        return self

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The seeds every cell trains with: --seeds, else --replicates seeds from --seed, else --seed alone."""
        if self.seeds:
            return self.seeds
        base = STUDY_SEED if self.seed is None else self.seed
        return tuple(base + offset for offset in range(self.replicates or 1))

    @property
    def model_order(self) -> tuple[str, ...]:
        """Every model of this study once, in the study's order (sweep models first)."""
        return tuple(dict.fromkeys([*self.models, *self.gradient_models]))

    def report_settings(self) -> dict[str, object]:
        """The settings a report lists: those that shape the results, not where or how fast they ran."""
        return self.model_dump(mode="json", exclude={"artifacts_dir", "refresh", "workers", "dask_address", "mirrors"})


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
