"""The records that travel between the pipeline's stages, each a frozen pydantic model.

A stage returns one of these, never a dict read by string key. Each record round-trips through
JSON (`to_json` / `from_json`), which is also how the pipeline's cache stores it. Paths inside a
record are relative to the artifacts root, so a record stays true when the root moves.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

Role = Literal["sweep", "gradient"]
ROLES: tuple[Role, ...] = ("sweep", "gradient")
# A set of roles, written in a fixed order: a frozenset's iteration order varies with the process's
# string hashing, and a record's JSON (a cache key's input) must not.
Roles = Annotated[frozenset[Role], PlainSerializer(lambda roles: sorted(roles), return_type=list)]
RecordT = TypeVar("RecordT", bound="Record")


class Record(BaseModel):
    """Base of every record: frozen, no unknown fields, JSON in and out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> str:
        """The record as JSON text (keys in declaration order)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls: type[RecordT], text: str | bytes) -> RecordT:
        """Rebuild a record from `to_json`'s output, validating every field."""
        return cls.model_validate_json(text)


class RunSpec(Record):
    """Everything that determines one training run's result, and nothing else."""

    model: str
    learning_rate: float
    epochs: int
    batch_size: int
    seed: int
    train_subset: int | None
    dataset: str
    data_hash: str
    code_files: dict[str, str]  # relative source path -> SHA-256, every module training imports
    versions: dict[str, str]  # major.minor of the libraries that shape the result
    # TensorFlow's threads: convolutions round differently on 1 and 2 (tests/mnist_models/test_stage_closures.py)
    threads: int = 1

    @property
    def code_hash(self) -> str:
        """One hash over the training code's files."""
        return hashlib.sha256(json.dumps(self.code_files, sort_keys=True).encode()).hexdigest()

    @property
    def cache_key(self) -> str:
        """Content address of the run: any change to data, code, hyperparameters or seed changes it."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()

    @property
    def lineage(self) -> str:
        """Content address of the spec without its epoch count: runs of one lineage are prefixes of each other."""
        fields = self.model_dump(mode="json", exclude={"epochs"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    @property
    def run_id(self) -> str:
        """Readable, unique folder name: model, learning rate, epochs, seed and a short key."""
        subset = f"-n{self.train_subset}" if self.train_subset else ""
        return f"{self.model}-lr{self.learning_rate:g}-e{self.epochs}-s{self.seed}{subset}-{self.cache_key[:8]}"


class PlannedRun(Record):
    """A run to have: its spec and the parts of the study it serves (one training serves them all)."""

    spec: RunSpec
    roles: Roles

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    def serves(self, role: Role) -> bool:
        """Whether this run is part of the learning-rate sweep or the gradient experiment."""
        return role in self.roles


class PreparedData(Record):
    """A verified, normalized data set: its content hash and its Parquet splits (relative paths)."""

    dataset: str
    content_hash: str
    train: Path
    test: Path
    test_hash: str


class TrainedRun(Record):
    """A finished run (its folder is `layout.run(spec.run_id)`): what was trained and what it cost."""

    spec: RunSpec
    parameters: int
    train_seconds: float
    diverged_epoch: int | None = None  # the epoch whose loss was not finite; training stopped there


class ClassMetrics(Record):
    """One class's one-vs-rest metrics on the test split."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True)

    class_: int = Field(alias="class")
    precision: float
    recall: float
    f1: float
    roc_auc: float | None
    average_precision: float | None
    support: int

    @field_validator("roc_auc", "average_precision", mode="before")
    @classmethod
    def _undefined_as_none(cls, value: object) -> object:
        """A class absent from the labels has no AUC or AP: NaN in a table, None in a record."""
        return None if isinstance(value, float) and math.isnan(value) else value


class Scores(Record):
    """A run's scores on the test split: accuracy with its 95% bootstrap interval, and the rest."""

    accuracy: float
    accuracy_low: float
    accuracy_high: float
    loss: float
    macro_f1: float
    macro_auc: float
    map: float
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]


class EvaluatedRun(Record):
    """A trained run, its test-split scores, and the roles it plays in this study."""

    trained: TrainedRun
    scores: Scores
    roles: Roles

    @property
    def spec(self) -> RunSpec:
        return self.trained.spec

    @property
    def run_id(self) -> str:
        return self.trained.spec.run_id

    @property
    def model(self) -> str:
        return self.trained.spec.model

    @property
    def learning_rate(self) -> float:
        return self.trained.spec.learning_rate

    def serves(self, role: Role) -> bool:
        return role in self.roles

    @property
    def role(self) -> Role:
        """The role the summary table shows: "sweep" whenever the run is part of the sweep."""
        return "sweep" if "sweep" in self.roles else "gradient"


class FailedRun(Record):
    """A planned run that has no result in this study run, and why (the tables and report list it)."""

    run_id: str
    model: str
    learning_rate: float
    epochs: int
    seed: int
    roles: Roles
    cause: str

    @classmethod
    def of(cls, run: PlannedRun, cause: str) -> "FailedRun":
        """The failure record of a planned run."""
        spec = run.spec
        return cls(run_id=run.run_id, model=spec.model, learning_rate=spec.learning_rate, epochs=spec.epochs,
                   seed=spec.seed, roles=run.roles, cause=cause)

    def describe(self) -> str:
        """One line for the log and the flow's final message."""
        return f"{self.run_id}: {self.cause}"


class ChampionDecision(Record):
    """The nightly gate's decision on tonight's run of one model against its champion, with the tests behind it."""

    model: str
    new_accuracy: float  # tonight's representative run, on the test images
    champion_accuracy: float | None  # on the same images; None when there is no champion yet
    promoted: bool
    regressed: bool  # the night fails
    warning: bool = False  # one sign of a drop that the rule does not count as a regression: the night passes
    p_value: float | None = None  # McNemar's test against the champion on the same test images
    message: str
    difference: float | None = None  # new_accuracy − champion_accuracy, from the discordant counts
    only_new_correct: int | None = None  # test images only tonight's run gets right
    only_champion_correct: int | None = None
    nights: int = 0  # past nights the gate set tonight beside
    history_mean: float | None = None  # of those nights' accuracies; None without any
    history_std: float | None = None  # ddof=1; None with fewer than two nights
    interval_low: float | None = None  # lower bound of the nights' prediction interval; None below three nights
    champion_bound: float | None = None  # the same bound from the nights since the champion's promotion
    rule: str = ""  # the rule that decided, in words
    champion_version: int | None = None  # the champion version compared against
    run_id: str | None = None  # tonight's representative run

    @property
    def verdict(self) -> str:
        """The decision in a few words, as the history table's `decision` column shows it."""
        if self.champion_accuracy is None:
            return "first champion"
        if self.promoted:
            return "promoted"
        if self.regressed:
            return "regressed"
        return "kept (drop within noise)" if self.warning else "kept"


class StudyResult(Record):
    """What a study run produced: evaluated runs, failures, and the files of its tables, figures, report."""

    artifacts_dir: Path
    planned: int
    runs: tuple[EvaluatedRun, ...] = ()
    failures: tuple[FailedRun, ...] = ()
    tables: dict[str, Path] = {}
    figures: dict[str, Path] = {}
    report: dict[str, Path] = {}
    champions: tuple[ChampionDecision, ...] = ()
    error: str | None = None

    @property
    def regressions(self) -> tuple[str, ...]:
        """Messages of the nightly gate's failed models."""
        return tuple(decision.message for decision in self.champions if decision.regressed)
