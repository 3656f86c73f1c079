"""The study's parameters, stated once: their types, defaults, descriptions and named profiles.

`StudyConfig` is the flow's one parameter (Prefect renders it as a form in the UI) and the source
of the command-line options (flows/_runtime.py derives them from these fields). A profile names
the values that differ from the study's own; unset fields take the profile's value.
"""

from __future__ import annotations

import datetime as dt
import math
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from mnist_models.architectures import MAX_DEPTH, check_model_name
from mnist_models.datasets import get_dataset
from mnist_models.nightly import nightly_seed

Profile = Literal["full", "quick", "replicated"]
STUDY_SEED = 42
STAGES = ("data", "train", "evaluate", "tables", "figures", "report")  # what --refresh can name
NIGHTLY_FOLDER = "nightly"  # a nightly run's root inside the artifacts directory
SEED_LIMIT = 2**32  # NumPy and TensorFlow seeds are unsigned 32-bit

# Upper bounds that catch a typo (an extra zero, a seed typed into --epochs) before any work starts,
# while leaving room far beyond the study's own settings:
MAX_EPOCHS = 1000  # the study trains 10 and 20 epochs; 1,000 epochs of one run already take days on a CPU
MAX_BATCH_SIZE = 60_000  # the whole MNIST training set: a larger batch is the same single batch
MAX_SEEDS = 100  # seeds per cell (--replicates or --seeds): 100 copies of the grid is weeks of training
MAX_WORKERS = 256  # parallel training processes: more than the cores of any one machine we would meet
MAX_KEEP_NIGHTS = 3650  # ten years of nightly run folders
_UPPER_LIMITS = {"epochs": MAX_EPOCHS, "gradient_epochs": MAX_EPOCHS, "batch_size": MAX_BATCH_SIZE,
                 "replicates": MAX_SEEDS, "workers": MAX_WORKERS, "threads": MAX_WORKERS, "keep_nights": MAX_KEEP_NIGHTS,
                 "gradient_depth": MAX_DEPTH}

# The study's own values of the fields that a profile changes. Those fields default to None, "the profile's value",
# so that a form that submits every default it shows (the Prefect UI's run form does) leaves them to the profile.
STUDY_VALUES: dict[str, object] = {"learning_rates": (0.1, 0.01, 0.001, 0.0001), "epochs": 10, "gradient_epochs": 20}
# Values that differ from the study's own (STUDY_VALUES and the class defaults: profile `full`).
PROFILES: dict[str, dict[str, object]] = {
    "full": {},
    "quick": {"learning_rates": (0.01, 0.001), "epochs": 1, "train_subset": 2000, "gradient_epochs": 2},
    "replicated": {"replicates": 3},
}
PROFILE_FIELDS = frozenset(STUDY_VALUES).union(*PROFILES.values())  # fields whose unset value the profile decides


def profile_defaults(name: str) -> dict[str, object]:
    """The value each profile gives field `name` when it is unset, e.g. {"full": 10, "quick": 1, "replicated": 10}."""
    return {profile: {**STUDY_VALUES, **values}.get(name) for profile, values in PROFILES.items()}


def _profile_default(name: str, unset: str = "none") -> str:
    """How a profile field's description states its default: `(default: 10; quick: 1)` (`unset` names a None)."""
    def shown(value: object) -> str:
        return unset if value is None else ",".join(f"{item:g}" if isinstance(item, float) else str(item)
                                                    for item in (value if isinstance(value, tuple) else (value,)))
    values = profile_defaults(name)
    others = [f"{profile}: {shown(value)}" for profile, value in values.items() if value != values["full"]]
    return "(" + "; ".join([f"default: {shown(values['full'])}", *others]) + ")"


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
    # The profile fields: None in the schema and the form, the profile's value once validated (_apply_profile).
    learning_rates: tuple[float, ...] | None = Field(
        None, description=f"learning rates of the sweep {_profile_default('learning_rates')}")
    epochs: int | None = Field(
        None, description=f"epochs per sweep run (1 to {MAX_EPOCHS}) {_profile_default('epochs')}")
    batch_size: int = Field(32, description=f"training batch size (1 to {MAX_BATCH_SIZE})")
    seed: int | None = Field(None, description=f"random seed of every run (default {STUDY_SEED}; a nightly run: "
                                               "the date as YYYYMMDD)")
    seeds: tuple[int, ...] | None = Field(None, description=f"train every cell once per seed, e.g. 42,43,44; at most "
                                                            f"{MAX_SEEDS} seeds (default: --seed alone)")
    replicates: int | None = Field(None, description="train every cell with this many seeds: --seed, --seed + 1, ... "
                                                     f"(1 to {MAX_SEEDS}; every seed below 2**32) "
                                                     f"{_profile_default('replicates')}")
    train_subset: int | None = Field(None, description="train on a stratified subset of this many images "
                                                       f"{_profile_default('train_subset', 'all')}")
    gradient_models: tuple[str, ...] = Field(("resnet_plain", "resnet"),
                                             description="models of the gradient experiment ('' for none)")
    gradient_learning_rate: float = Field(0.001, description="learning rate of the gradient experiment")
    gradient_depth: tuple[int, ...] | None = Field(
        None, description=f"blocks of the gradient experiment's pairs, each 1 to {MAX_DEPTH}, e.g. 4,8,16: 1 is the "
                          "study's pair; N above 1 trains resnet_plain_deepN and resnet_deepN (N two-convolution blocks, "
                          "without and with identity shortcuts); several depths train one pair each (default: 1)")
    gradient_epochs: int | None = Field(
        None,
        description=f"epochs of the gradient experiment (1 to {MAX_EPOCHS}) {_profile_default('gradient_epochs')}")
    workers: int | None = Field(None, description=f"parallel training processes, 1 to {MAX_WORKERS} "
                                                  "(default: one per core)")
    threads: int | None = Field(None, description=f"TensorFlow threads per training process, 1 to {MAX_WORKERS}; part of "
                                                  "each run's key, as convolutions round differently on another count "
                                                  "(default: the cores shared among the study's lineages; 1 on Dask)")
    dask_address: str | None = Field(None, description="train on an existing Dask cluster: a tcp:// or tls:// address "
                                                       "with host and port, e.g. tcp://10.0.0.5:8786")
    stall_timeout: float | None = Field(
        None, gt=0, le=7 * 24 * 3600,
        description="seconds without a progress line after which a training process counts as hung: it is killed "
                    "and retried once (default: ten times the run's expected epoch time, at least 15 minutes)")
    nightly: bool = Field(False, description="nightly retraining: date seed, history, champions and the regression gate")
    regression_tolerance: float = Field(
        0.005, description="nightly, until 3 past nights exist: fail if a model's accuracy drops more than this "
                           "below its champion, significantly (after that, the interval of the past nights decides)")
    significance_level: float = Field(
        0.05, description="nightly: McNemar's test against the champion must have p below this for a drop to fail "
                          "the night or a gain to promote")
    keep_nights: int = Field(14, description="nightly: keep the run folders of this many recent nights (and every "
                                             f"champion's), 1 to {MAX_KEEP_NIGHTS}; prune the rest")
    mlflow_tracking_uri: str | None = Field(
        None, description="after the study, export its runs (and a nightly run's champions) to this MLflow tracking "
                          "server, e.g. http://127.0.0.1:5000 (needs the mlflow extra)")

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, values: Any) -> Any:
        """Unset fields (absent or None) take the profile's value, then the study's, then the class default."""
        if not isinstance(values, dict):
            return values
        profile = values.get("profile") or "full"
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of: {', '.join(PROFILES)}")
        given = {key: value for key, value in values.items() if value is not None}
        return {**STUDY_VALUES, **PROFILES[profile], **given, "profile": profile}

    @classmethod
    def for_profile(cls, profile: str = "full", **overrides: object) -> "StudyConfig":
        """Build the named profile with overrides, or raise one ValueError naming each bad parameter."""
        return cls.validated(profile=profile, **overrides)

    def resolved(self, today: dt.date) -> "StudyConfig":
        """This configuration with its seed decided (a nightly run's comes from the date) and an absolute root."""
        seed = self.seed if self.seed is not None else (nightly_seed(today) if self.nightly else STUDY_SEED)
        return self.model_copy(update={"seed": seed, "artifacts_dir": Path(self.artifacts_dir).resolve()})

    @property
    def output_root(self) -> Path:
        """Where this run writes: the artifacts directory, or for a nightly run its own `nightly/` inside it, so
        that the nightly and the on-demand study never delete, overwrite or invalidate each other's files."""
        return Path(self.artifacts_dir) / NIGHTLY_FOLDER if self.nightly else Path(self.artifacts_dir)

    @field_validator("models", "gradient_models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            check_model_name(name)
        return _each_once(value, "models")

    @field_validator("learning_rates")
    @classmethod
    def _positive_learning_rates(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        rates = _each_once(tuple(_check_learning_rate(rate) for rate in value), "learning rates")
        for index, rate in enumerate(rates):
            for other in rates[index + 1:]:
                _check_printed_apart(rate, other)
        return rates

    @field_validator("gradient_learning_rate")
    @classmethod
    def _positive_gradient_learning_rate(cls, value: float) -> float:
        return _check_learning_rate(value)

    @field_validator("epochs", "gradient_epochs", "batch_size", "keep_nights")
    @classmethod
    def _at_least_one(cls, value: int, info: ValidationInfo) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return _at_most(value, info.field_name)

    @field_validator("seeds")
    @classmethod
    def _seeds_in_range(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        for seed in value or ():
            cls._seed_range(seed)
        if value is not None and len(value) > MAX_SEEDS:
            raise ValueError(f"got {len(value)} seeds; expected at most {MAX_SEEDS}")
        return _each_once(value, "seeds") if value is not None else None

    @field_validator("gradient_depth", mode="before")
    @classmethod
    def _depths(cls, value: object) -> object:
        return (value,) if isinstance(value, int) else value  # one depth, as an older form or call gives it

    @field_validator("gradient_depth")
    @classmethod
    def _depths_in_range(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("is empty; expected at least one depth such as 8 (or leave it unset)")
        for depth in value:
            if depth < 1:
                raise ValueError(f"depths must be at least 1, got {depth}")
            _at_most(depth, "gradient_depth")
        return tuple(sorted(_each_once(value, "gradient depths")))

    @field_validator("workers", "threads", "train_subset", "replicates")
    @classmethod
    def _positive_or_none(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1 (or left unset), got {value}")
        return value if value is None else _at_most(value, info.field_name)

    @field_validator("dask_address")
    @classmethod
    def _dask_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        expected = (f"expected a tcp:// or tls:// address with a host and a port, such as tcp://10.0.0.5:8786, "
                    f"got {value!r}")
        try:
            parts = urllib.parse.urlsplit(value)
            port = parts.port
        except ValueError:  # an unclosed IPv6 bracket, a port that is no number or above 65535
            raise ValueError(expected) from None
        if parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None or parts.path not in ("", "/"):
            raise ValueError(expected)
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
        last_seed = (STUDY_SEED if self.seed is None else self.seed) + (self.replicates or 1) - 1
        if last_seed >= SEED_LIMIT:
            raise ValueError(
                f"--seed {self.seed} with --replicates {self.replicates} trains with seeds up to {last_seed}; "
                f"expected every seed in [0, 2**32): a --seed of at most {SEED_LIMIT - self.replicates}, "
                "or fewer replicates"
            )
        return self

    @model_validator(mode="after")
    def _gradient_rate_printed_apart(self) -> "StudyConfig":
        gradient_rate = self.gradient_learning_rate
        for rate in self.learning_rates if self.gradient_models else ():
            if rate != gradient_rate and f"{rate:g}" == f"{gradient_rate:g}":
                raise ValueError(
                    f"gradient_learning_rate {gradient_rate!r} and learning rate {rate!r} are both printed as "
                    f"{rate:g} in run ids and tables; expected the same rate, or one that differs in its first "
                    "6 significant digits"
                )
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
        return tuple(dict.fromkeys([*self.models, *self.gradient_pair]))

    @property
    def gradient_pair(self) -> tuple[str, ...]:
        """The gradient experiment's models, pair by pair: per `gradient_depth`, the `gradient_models` for depth 1
        and resnet_plain_deepN, resnet_deepN for a depth N above 1; none without `gradient_models`."""
        if not self.gradient_models:
            return ()
        return tuple(dict.fromkeys(model for depth in self.gradient_depth or (1,) for model in (
            self.gradient_models if depth == 1 else (f"resnet_plain_deep{depth}", f"resnet_deep{depth}"))))

    def report_settings(self) -> dict[str, object]:
        """The settings a report lists: those that shape the results, not where or how fast they ran."""
        return self.model_dump(mode="json", exclude={"artifacts_dir", "refresh", "workers", "dask_address", "mirrors",
                                                     "stall_timeout", "mlflow_tracking_uri"})


def _each_once(values: tuple, what: str) -> tuple:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} are listed twice in {list(values)}; expected each once")
    return values


def _at_most(value: int, field_name: str) -> int:
    limit = _UPPER_LIMITS.get(field_name)
    if limit is not None and value > limit:
        raise ValueError(f"must be at most {limit:,}, got {value:,}")
    return value


def _check_printed_apart(rate: float, other: float) -> None:
    """Refuse two learning rates of the sweep that run ids and tables would print alike (`f"{rate:g}"`)."""
    if f"{rate:g}" == f"{other:g}":
        raise ValueError(
            f"learning rates {rate!r} and {other!r} are both printed as {rate:g} in run ids and tables; "
            "expected rates that differ in their first 6 significant digits"
        )


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
