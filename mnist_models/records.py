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
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["sweep", "gradient"]
ROLES: tuple[Role, ...] = ("sweep", "gradient")
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
    roles: frozenset[Role]

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
    roles: frozenset[Role]

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


class RunOutcome(Record):
    """What the training grid did with one planned run: its record and scores, or why it failed."""

    run_id: str
    trained: TrainedRun | None = None
    scores: Scores | None = None
    failure: str | None = None


class ChampionDecision(Record):
    """What tonight's run of one model means for its champion."""

    model: str
    new_accuracy: float
    champion_accuracy: float | None
    promoted: bool
    regressed: bool
    warning: bool = False  # a drop beyond the tolerance that is not significant: the night passes
    p_value: float | None = None  # McNemar's test against the champion on the same test images
    message: str


class StudyResult(Record):
    """What a study run produced: evaluated runs, failures, and the files of its tables, figures, report."""

    artifacts_dir: Path
    planned: int
    runs: tuple[EvaluatedRun, ...] = ()
    failures: tuple[str, ...] = ()
    tables: dict[str, Path] = {}
    figures: dict[str, Path] = {}
    report: dict[str, Path] = {}
    champions: tuple[ChampionDecision, ...] = ()
    error: str | None = None

    @property
    def regressions(self) -> tuple[str, ...]:
        """Messages of the nightly gate's failed models."""
        return tuple(decision.message for decision in self.champions if decision.regressed)
