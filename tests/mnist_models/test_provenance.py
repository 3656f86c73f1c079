"""Stage keys, records and decisions: computed code closures, relative outputs, reasons a user can act on."""

from pathlib import Path

from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import (Decision, StageKey, StageRecord, StageStore, code_closure, decide, digest,
                                     key_change, library_versions)


def test_the_code_closure_follows_imports_transitively():
    training = code_closure("mnist_models.training")
    assert {"mnist_models/training.py", "mnist_models/data.py", "mnist_models/io.py",
            "mnist_models/__init__.py", "mnist_models/architectures/__init__.py"} <= set(training)
    assert "mnist_models/report.py" not in training and "mnist_models/architectures/dnn.py" not in training
    report = code_closure("tasks.report")
    assert {"tasks/report.py", "mnist_models/report.py", "mnist_models/tables.py"} <= set(report)
    assert "mnist_models/training.py" not in report
    assert all(not Path(path).is_absolute() for path in report) and all(len(value) == 64 for value in report.values())


def test_library_versions_are_major_minor():
    versions = library_versions(["tensorflow", "numpy", "no-such-distribution"])
    assert versions["tensorflow"].count(".") == 1 and versions["numpy"].count(".") == 1
    assert versions["no-such-distribution"] == "absent"


def test_key_changes_are_named():
    base = StageKey(parameters={"epochs": 10, "seed": 1}, inputs={"data": "a"}, code={"m/a.py": "1", "m/b.py": "2"},
                    versions={"tensorflow": "2.21"})
    assert key_change(base, base) is None
    changed = StageKey(parameters={"epochs": 15, "seed": 1}, inputs={"data": "b"}, code={"m/a.py": "1", "m/b.py": "3"},
                       versions={"tensorflow": "2.22"})
    assert key_change(base, changed) == ("parameters changed (epochs); data changed (data); code changed (m/b.py); "
                                         "library version changed (tensorflow 2.21 -> 2.22)")


def test_store_decide_and_tamper(tmp_path):
    store = StageStore(ArtifactsLayout.at(tmp_path))
    (tmp_path / "tables").mkdir()
    output = tmp_path / "tables" / "summary.csv"
    output.write_text("a,b\n1,2\n")
    key = StageKey(parameters={"models": ["dnn"]})
    assert decide("tables", "study", key, store.load("tables", "study"), tmp_path, False).reason == "new"
    record = store.save("tables", "study", key, [output], {"summary": "tables/summary.csv"})
    assert record.outputs == {"tables/summary.csv": digest_file(output)}
    assert StageRecord.from_json(store._path("tables", "study").read_text()) == record
    loaded = store.load("tables", "study")
    assert decide("tables", "study", key, loaded, tmp_path, False).action == "reused"
    assert decide("tables", "study", key, loaded, tmp_path, True) == Decision(
        stage="tables", item="study", action="recomputed", reason="--refresh")

    output.write_text("a,b\n1,3\n")
    assert decide("tables", "study", key, loaded, tmp_path, False).reason == "outputs modified (tables/summary.csv)"
    output.unlink()
    assert decide("tables", "study", key, loaded, tmp_path, False).reason == "outputs missing (tables/summary.csv)"

    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)
    (moved / "tables" / "summary.csv").write_text("a,b\n1,2\n")
    assert decide("tables", "study", key, StageStore(ArtifactsLayout.at(moved)).load("tables", "study"), moved, False).action == "reused"


def test_an_unreadable_record_means_recompute(tmp_path):
    store = StageStore(ArtifactsLayout.at(tmp_path))
    store._path("report", "study").parent.mkdir(parents=True)
    store._path("report", "study").write_text("{not json")
    assert store.load("report", "study") is None
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})


def digest_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
