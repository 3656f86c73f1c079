"""The stage engine's reuse rules, on a graph of tiny stub stages (files of a few bytes), in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_models.engine import STUDY, Engine, Produced, Stage, run_inline
from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import StageKey, StageStore

pytestmark = pytest.mark.unit


class Toy:
    """A two-stage study: `square` writes one file per number, `total` sums them into one file."""

    def __init__(self, root: Path, numbers=(1, 2, 3), code: str = "v1", fail: frozenset[str] = frozenset()) -> None:
        self.root, self.numbers, self.code, self.fail = root, numbers, code, fail
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def stages(self) -> list[Stage]:
        def square(unit, upstream):
            self.calls.append(("square", tuple(unit)))
            made = {}
            for item in unit:
                if item in self.fail:
                    raise RuntimeError(f"square {item} crashed")
                path = self.root / "squares" / f"{item}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(str(int(item) ** 2))
                made[item] = Produced(int(item) ** 2, [path])
            return made

        def total(unit, upstream):
            self.calls.append(("total", tuple(unit)))
            path = self.root / "total.txt"
            value = sum(upstream["square"].values())
            path.write_text(str(value))
            return {STUDY: Produced(value, [path])}

        return [
            Stage(name="square", items=lambda upstream: [str(number) for number in self.numbers],
                  key=lambda item, upstream: StageKey(parameters={"n": item}, code={"square.py": self.code}),
                  run=square, units=lambda items, upstream: [list(items)]),
            Stage(name="total", upstream=("square",),
                  key=lambda item, upstream: StageKey(inputs=dict(sorted((n, str(v)) for n, v in
                                                                        upstream["square"].items()))),
                  run=total),
        ]


def engine(root: Path, refresh=(), lines: list[str] | None = None) -> Engine:
    log = (lines.append if lines is not None else lambda line: None)
    return Engine({"cache": StageStore(ArtifactsLayout.at(root))}, frozenset(refresh), log)


def actions(decisions) -> dict[tuple[str, str], str]:
    return {(decision.stage, decision.item): decision.action for decision in decisions}


def test_a_second_run_reuses_everything_and_says_why(tmp_path):
    toy = Toy(tmp_path)
    first = engine(tmp_path).run(toy.stages())
    assert first["total"].results[STUDY] == 14 and first["square"].recomputed == {"1", "2", "3"}
    toy.calls.clear()
    again = engine(tmp_path)
    outcome = again.run(toy.stages())
    assert toy.calls == [] and outcome["total"].results[STUDY] == 14
    assert {decision.reason for decision in again.decisions} == {"inputs, code and outputs unchanged"}


def test_a_b_a_reuses_a_after_b(tmp_path):
    engine(tmp_path).run(Toy(tmp_path, numbers=(1, 2)).stages())
    engine(tmp_path).run(Toy(tmp_path, numbers=(3,)).stages())
    back = Toy(tmp_path, numbers=(1, 2))
    outcome = engine(tmp_path).run(back.stages())
    # The squares of A are reused; the total was last written for B, so its file no longer matches A's record.
    assert [call for call in back.calls if call[0] == "square"] == []
    assert outcome["total"].results[STUDY] == 5 and (tmp_path / "total.txt").read_text() == "5"


def test_an_edit_recomputes_the_stage_and_everything_that_reads_it(tmp_path):
    engine(tmp_path).run(Toy(tmp_path).stages())
    lines: list[str] = []
    edited = Toy(tmp_path, code="v2")
    engine(tmp_path, lines=lines).run(edited.stages())
    assert edited.calls == [("square", ("1", "2", "3")), ("total", (STUDY,))]
    assert "square 1: recomputed (code changed (square.py))" in lines
    assert "total study: recomputed (upstream recomputed (square))" in lines


@pytest.mark.parametrize("damage", ["delete", "modify"])
def test_a_deleted_or_modified_output_is_made_again(tmp_path, damage):
    engine(tmp_path).run(Toy(tmp_path).stages())
    target = tmp_path / "squares" / "2.txt"
    target.unlink() if damage == "delete" else target.write_text("5")
    lines: list[str] = []
    toy = Toy(tmp_path)
    engine(tmp_path, lines=lines).run(toy.stages())
    assert toy.calls[0] == ("square", ("2",)) and target.read_text() == "4"
    word = "missing" if damage == "delete" else "modified"
    assert f"square 2: recomputed (outputs {word} (squares/2.txt))" in lines


def test_refresh_recomputes_the_named_stage(tmp_path):
    engine(tmp_path).run(Toy(tmp_path).stages())
    toy = Toy(tmp_path)
    lines: list[str] = []
    engine(tmp_path, refresh={"total"}, lines=lines).run(toy.stages())
    assert toy.calls == [("total", (STUDY,))] and "total study: recomputed (--refresh)" in lines


def test_a_failed_unit_is_not_recorded_and_only_it_runs_again(tmp_path):
    crashing = Toy(tmp_path, fail=frozenset({"3"}))
    stages = crashing.stages()
    stages[0] = Stage(**{**stages[0].__dict__, "units": lambda items, upstream: [[item] for item in items]})
    outcome = engine(tmp_path).run(stages)
    assert outcome["square"].failures == {"3": "RuntimeError: square 3 crashed"}
    assert outcome["total"].results[STUDY] == 5  # a study-wide stage runs on what succeeded
    fixed = Toy(tmp_path)
    engine(tmp_path).run(fixed.stages())
    assert fixed.calls == [("square", ("3",)), ("total", (STUDY,))]


def test_a_failed_unit_keeps_the_items_it_completed(tmp_path):
    toy = Toy(tmp_path, fail=frozenset({"3"}))
    stages = toy.stages()

    def kept(item):  # what a lineage killed after its first run wrote: a complete result
        path = tmp_path / "squares" / f"{item}.txt"
        return Produced(int(path.read_text()), [path]) if path.exists() else None

    stages[0] = Stage(**{**stages[0].__dict__, "salvage": kept})
    outcome = engine(tmp_path).run(stages)
    assert set(outcome["square"].results) == {"1", "2"} and set(outcome["square"].failures) == {"3"}
    assert StageStore(ArtifactsLayout.at(tmp_path)).load("square", "1") is not None


def test_an_item_that_reads_a_failed_item_fails_with_its_cause(tmp_path):
    toy = Toy(tmp_path, fail=frozenset({"2"}))
    square, _ = toy.stages()
    square = Stage(**{**square.__dict__, "units": lambda items, upstream: [[item] for item in items]})
    double = Stage(name="double", upstream=("square",), items=lambda upstream: ["1", "2"],
                   reads=lambda item: [("square", item)], key=lambda item, upstream: StageKey(parameters={"n": item}),
                   run=lambda unit, upstream: {item: Produced(2 * upstream["square"][item]) for item in unit})
    outcome = engine(tmp_path).run([square, double])
    assert outcome["double"].results == {"1": 2}
    assert outcome["double"].failures == {"2": "RuntimeError: square 2 crashed"}


def test_the_plan_is_the_runs_decisions_and_writes_nothing(tmp_path):
    engine(tmp_path).run(Toy(tmp_path).stages())
    edited = Toy(tmp_path, numbers=(1, 2, 4))
    before = sorted(path for path in tmp_path.rglob("*"))
    planned = engine(tmp_path).plan(edited.stages())
    assert edited.calls == [] and sorted(path for path in tmp_path.rglob("*")) == before
    running = engine(tmp_path)
    running.run(edited.stages())
    assert planned == running.decisions
    assert actions(planned) == {("square", "1"): "reused", ("square", "2"): "reused", ("square", "4"): "recomputed",
                                ("total", STUDY): "recomputed"}


def test_stages_run_after_what_they_read_and_a_cycle_is_refused(tmp_path):
    square, total = Toy(tmp_path).stages()
    outcome = engine(tmp_path).run([total, square])  # declared out of order
    assert outcome["total"].results[STUDY] == 14
    loop = Stage(name="square", upstream=("total",), key=square.key, run=square.run)
    with pytest.raises(ValueError, match="depends on itself"):
        engine(tmp_path).run([loop, total])


def test_a_stage_without_a_record_runs_every_time(tmp_path):
    runs = []
    nightly = Stage(name="gate", cached=False, key=lambda item, upstream: StageKey(),
                    run=lambda unit, upstream: runs.append(unit) or {STUDY: Produced("decided")})
    for _ in range(2):
        ledger = engine(tmp_path)
        assert ledger.run([nightly], run_inline)["gate"].results == {STUDY: "decided"} and ledger.decisions == []
    assert len(runs) == 2


def test_an_item_recomputed_for_its_upstream_also_names_its_own_damaged_files(tmp_path):
    engine(tmp_path).run(Toy(tmp_path).stages())
    (tmp_path / "total.txt").unlink()
    lines: list[str] = []
    engine(tmp_path, lines=lines).run(Toy(tmp_path, code="v2").stages())
    assert "total study: recomputed (upstream recomputed (square); outputs missing (total.txt))" in lines
