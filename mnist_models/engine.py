"""One engine that decides, for every stage and item, whether a stored result is reused or recomputed.

A study is a graph of `Stage`s, declared as data: a name, the stages it reads (`upstream`), the items
it produces (`items`: a run id, or `study` for a stage with one result), the `key` of an item (its
parameters, the content of what it reads, its code, its libraries and the environment that changes
its numbers; mnist_models.provenance builds these), the function that computes a unit of items
(`run`), the files each item writes (`Produced.outputs`), and how a stored result is read back
(`load`). The engine walks the graph in order, decides for each item (reused while the key is
equal and every output has the hash it was written with; recomputed otherwise, and whenever an
item it reads was recomputed in this run), hands the items to recompute to a runner (in this
process, Prefect's tasks, a Dask cluster: the caller's choice), and stores one record per item
(mnist_models.provenance.StageRecord) as each unit finishes. `plan` makes the same decisions
without running anything; its lines are the ones the run logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic_core import to_jsonable_python

from mnist_models.provenance import Decision, StageKey, StageRecord, decide, key_change, outputs_problem

STUDY = "study"  # the item of a stage that has one result for the whole study
Upstream = Mapping[str, Mapping[str, Any]]  # stage name -> item -> result, for the items that succeeded


@dataclass(frozen=True)
class Produced:
    """What one item of a stage computed: its result (JSON-able) and every file it wrote."""

    result: Any
    outputs: Sequence[Path] = ()


class RecordStore(Protocol):
    """Where a stage's records live: JSON files under `.cache/stages/`, or a run folder's own manifest."""

    root: Path

    def load(self, stage: str, item: str) -> StageRecord | None: ...

    def save(self, stage: str, item: str, key: StageKey, outputs: Iterable[Path], result: Any) -> StageRecord: ...


def _one_item(upstream: Upstream) -> Sequence[str]:
    return (STUDY,)


def _each_alone(items: Sequence[str], upstream: Upstream) -> list[list[str]]:
    return [[item] for item in items]


@dataclass(frozen=True)
class Stage:
    """One step of the study, declared once: what it reads, how its items are keyed, run and stored."""

    name: str
    key: Callable[[str, Upstream], StageKey]
    run: Callable[[Sequence[str], Upstream], Mapping[str, Produced]]  # one unit of items -> what each produced
    upstream: tuple[str, ...] = ()
    items: Callable[[Upstream], Sequence[str]] = _one_item
    # The upstream (stage, item)s an item reads; None: every item of every upstream stage.
    reads: Callable[[str], Iterable[tuple[str, str]]] | None = None
    units: Callable[[Sequence[str], Upstream], Sequence[Sequence[str]]] = _each_alone  # items computed together
    load: Callable[[str, Any], Any] = lambda item, stored: stored  # a stored (JSON) result -> the result
    store: str = "cache"  # which RecordStore of the engine holds its records
    cached: bool = True  # False: recomputed every run, no record (the nightly gate: tonight's history)
    # Items a failed unit had already completed (a lineage killed after its first run): results, not failures.
    salvage: Callable[[str], Produced | None] = lambda item: None
    # A record's key has changed when the item is new under another name (a run id is a content address):
    # the earlier record it replaces, to say what changed.
    predecessor: Callable[[str, StageKey], StageRecord | None] = lambda item, key: None


@dataclass(frozen=True)
class StageOutcome:
    """A stage's results (reused and recomputed alike), what was recomputed, and what failed and why."""

    results: dict[str, Any]
    recomputed: frozenset[str]
    failures: dict[str, str]


# A runner computes units of one stage and yields each unit's items as they finish: item -> Produced, or
# the exception that failed the unit. The engine stores each result before the next unit is taken.
Runner = Callable[[Stage, Sequence[Sequence[str]], Upstream], Iterator[tuple[Sequence[str], Mapping[str, Produced] | BaseException]]]


def run_inline(stage: Stage, units: Sequence[Sequence[str]], upstream: Upstream):
    """The plain runner: each unit in this process, one after another."""
    for unit in units:
        try:
            yield unit, stage.run(unit, upstream)
        except Exception as error:  # noqa: BLE001 - a failed unit is the stage's result for its items
            yield unit, error


@dataclass
class Engine:
    """The record stores of one artifacts root, the stages to refresh, and every decision made so far."""

    stores: Mapping[str, RecordStore]
    refresh: frozenset[str] = frozenset()
    log: Callable[[str], None] = print
    decisions: list[Decision] = field(default_factory=list)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)  # stage -> item -> why it has no result

    @property
    def root(self) -> Path:
        return self.stores["cache"].root

    # ------------------------------------------------------------------ one item

    def decide(self, stage: Stage | str, item: str, key: StageKey | None) -> tuple[Decision, Any]:
        """Decide for one item by its key (None: recompute, its upstream was); return the decision and,
        when reused, the stored result."""
        stage = stage if isinstance(stage, Stage) else Stage(name=stage, key=None, run=None)
        store = self.stores[stage.store]
        previous = store.load(stage.name, item)
        decision = decide(stage.name, item, key, previous, store.root, stage.name in self.refresh)
        if decision.action == "recomputed" and previous is None and decision.reason == "new":
            earlier = stage.predecessor(item, key)
            if earlier is not None:
                decision = decision.model_copy(update={"reason": key_change(earlier.key, key) or "new"})
        return decision, (previous.result if decision.action == "reused" else None)

    def record(self, decision: Decision) -> Decision:
        """Log a decision and keep it for the cache_decisions table."""
        self.decisions.append(decision)
        self.log(f"{decision.stage} {decision.item}: {decision.action} ({decision.reason})")
        return decision

    def save(self, stage: Stage | str, item: str, key: StageKey, produced: Produced) -> Any:
        """Store an item's record (its outputs hashed now); return the result as it reads back."""
        stage = stage if isinstance(stage, Stage) else Stage(name=stage, key=None, run=None)
        stored = to_jsonable_python(produced.result)  # records dumped, paths as text, containers walked
        record = self.stores[stage.store].save(stage.name, item, key, produced.outputs, stored)
        return stage.load(item, record.result)

    def stage(self, name: str, item: str, key: StageKey, compute: Callable[[], Produced],
              load: Callable[[Any], Any] = lambda stored: stored) -> Any:
        """One item computed in place (a step inside a stage's run): reused, or computed and stored."""
        declared = Stage(name=name, key=lambda item, upstream: key, run=None, load=lambda item, stored: load(stored))
        decision, stored = self.decide(declared, item, key)
        self.record(decision)
        if decision.action == "reused":
            return load(stored)
        return self.save(declared, item, key, compute())

    # ------------------------------------------------------------------ the graph

    def plan(self, stages: Sequence[Stage], upstream: Upstream | None = None) -> list[Decision]:
        """The decisions a run would make, in the order it would log them, without computing anything."""
        decisions, results, recomputed = [], dict(upstream or {}), {}
        for stage in _ordered(stages):
            items = stage.items(results)
            outcome = [self._decision(stage, item, results, recomputed) for item in items]
            decisions += [decision for decision, _ in outcome if decision is not None]
            results[stage.name] = {decision.item: stage.load(decision.item, stored) for decision, stored in outcome
                                   if decision is not None and decision.action == "reused"}
            recomputed[stage.name] = {item for item, (decision, _) in zip(items, outcome)
                                      if decision is not None and decision.action == "recomputed"}
        return decisions

    def run(self, stages: Sequence[Stage], runner: Runner | Mapping[str, Runner] = run_inline,
            upstream: Upstream | None = None,
            before: Callable[[Stage, list[Decision]], None] = lambda stage, decisions: None
            ) -> dict[str, StageOutcome]:
        """Walk the graph: decide every item of a stage, run the ones to recompute, store each as it finishes.

        `runner` is one runner, or one per stage name (`*` for the others). `before` sees a stage's
        decisions before its items run (to log a summary, or to prepare workers).
        """
        results: dict[str, dict[str, Any]] = {name: dict(items) for name, items in (upstream or {}).items()}
        recomputed: dict[str, set[str]] = {}
        outcomes: dict[str, StageOutcome] = {}
        failed = self.failures
        for stage in _ordered(stages):
            items = stage.items(results)
            stage_results, pending, failures, decisions = {}, [], {}, []
            failed[stage.name] = failures
            for item in items:
                cause = _upstream_failure(stage, item, failed)
                if cause:
                    failures[item] = cause
                    continue
                decision, stored = self._decision(stage, item, results, recomputed)
                if decision is None:
                    pending.append(item)
                    continue
                decisions.append(self.record(decision))
                if decision.action == "reused":
                    stage_results[item] = stage.load(item, stored)
                else:
                    pending.append(item)
            before(stage, decisions)
            if pending:
                chosen = runner if callable(runner) else runner.get(stage.name, runner.get("*", run_inline))
                for unit, produced in chosen(stage, stage.units(pending, results), results):
                    if isinstance(produced, BaseException):
                        cause = f"{type(produced).__name__}: {produced}"
                        produced = {item: kept for item in unit if (kept := stage.salvage(item)) is not None}
                        failures.update({item: cause for item in unit if item not in produced})
                    for item, made in produced.items():
                        stage_results[item] = self._store(stage, item, made, results)
            results[stage.name] = stage_results
            recomputed[stage.name] = set(pending) - set(failures) if stage.cached else set()
            outcomes[stage.name] = StageOutcome(results=stage_results, recomputed=frozenset(recomputed[stage.name]),
                                                failures=failures)
        return outcomes

    def _decision(self, stage: Stage, item: str, results: Upstream,
                  recomputed: Mapping[str, set[str]]) -> tuple[Decision | None, Any]:
        """An item's decision (None for a stage that is not cached), and the stored result when reused."""
        if not stage.cached:
            return None, None
        if stage.name not in self.refresh:
            changed = sorted({name for name, read in _reads(stage, item, recomputed) if read in recomputed.get(name, ())})
            if changed:  # its key would read what is being recomputed; its own files can be checked already
                store = self.stores[stage.store]
                previous = store.load(stage.name, item)
                damaged = outputs_problem(previous.outputs, store.root) if previous is not None else None
                return Decision(stage=stage.name, item=item, action="recomputed",
                                reason=f"upstream recomputed ({', '.join(changed)})"
                                       + (f"; {damaged}" if damaged else "")), None
        return self.decide(stage, item, stage.key(item, results))

    def _store(self, stage: Stage, item: str, produced: Produced, results: Upstream) -> Any:
        if not stage.cached:
            return produced.result
        return self.save(stage, item, stage.key(item, results), produced)

    def has_decided(self, stage: str, item: str) -> bool:
        """Whether this run already logged a decision for the stage item."""
        return any(decision.stage == stage and decision.item == item for decision in self.decisions)


def _reads(stage: Stage, item: str, recomputed: Mapping[str, set[str]]) -> Iterable[tuple[str, str]]:
    """What an item reads that was recomputed: the (stage, item)s it names, or any recomputed upstream item."""
    if stage.reads is not None:
        return stage.reads(item)
    return [(name, read) for name in stage.upstream for read in recomputed.get(name, ())]


def _upstream_failure(stage: Stage, item: str, failed: Mapping[str, Mapping[str, str]]) -> str | None:
    """Why an item cannot run: an item it reads failed (only a stage that names what it reads is stopped)."""
    if stage.reads is None:
        return None  # a study-wide stage runs on what succeeded; the failures are its input too
    for name, read in stage.reads(item):
        if read in failed.get(name, {}):
            return failed[name][read]
    return None


def _ordered(stages: Sequence[Stage]) -> list[Stage]:
    """The stages in an order where each comes after its upstream stages (the declared order where free)."""
    by_name = {stage.name: stage for stage in stages}
    if len(by_name) != len(stages):
        raise ValueError(f"stage names repeat: {[stage.name for stage in stages]}; expected each once")
    ordered, placed, visiting = [], set(), set()

    def place(stage: Stage) -> None:
        if stage.name in placed:
            return
        if stage.name in visiting:
            raise ValueError(f"stage {stage.name!r} depends on itself through {sorted(visiting)}")
        visiting.add(stage.name)
        for name in stage.upstream:
            if name in by_name:
                place(by_name[name])
        visiting.discard(stage.name)
        placed.add(stage.name)
        ordered.append(stage)

    for stage in stages:
        place(stage)
    return ordered
