"""Stage keys, records and decisions: computed code closures, relative outputs, reasons a user can act on."""

import json
import os
import subprocess
import sys
from pathlib import Path

from mnist_models.layout import ArtifactsLayout
from mnist_models.provenance import (Decision, StageKey, StageRecord, StageStore, code_closure, decide, digest,
                                     key_change, library_versions, numerics_environment, source_hash)


def test_the_code_closure_follows_imports_transitively():
    training = code_closure("mnist_models.training")
    assert {"mnist_models/training.py", "mnist_models/data.py", "mnist_models/atomic_files.py",
            "mnist_models/__init__.py", "mnist_models/architectures/__init__.py"} <= set(training)
    assert "mnist_models/report.py" not in training and "mnist_models/architectures/dnn.py" not in training
    report = code_closure("tasks.report")
    assert {"tasks/report.py", "mnist_models/report.py", "mnist_models/tables.py"} <= set(report)
    assert "mnist_models/training.py" not in report
    assert all(not Path(path).is_absolute() for path in report) and all(len(value) == 64 for value in report.values())


def test_library_versions_are_major_minor_keyed_by_the_installed_distribution():
    from importlib import metadata

    versions = library_versions(["tensorflow", "numpy", "no-such-distribution"])
    # The distribution whose files hold tensorflow/__init__.py here (tensorflow-cpu in this environment).
    (provider,) = [name for name in ("tensorflow", "tensorflow-cpu") if _ships(name, "tensorflow/__init__.py")]
    assert set(versions) == {provider, "numpy", "no-such-distribution"}
    assert versions[provider] == ".".join(metadata.version(provider).split(".")[:2])
    assert versions["numpy"].count(".") == 1 and versions["no-such-distribution"] == "absent"


def test_a_cpu_build_and_the_full_build_of_one_module_are_different_keys(tmp_path):
    """`tensorflow` and `tensorflow-cpu` install the same module: which one is installed is keyed."""
    script = ("import json; from mnist_models.provenance import library_versions; "
              "print(json.dumps(library_versions(['fakeflow'])))")

    def versions_with(distribution: str, version: str) -> dict[str, str]:
        site = tmp_path / distribution
        (site / "fakeflow").mkdir(parents=True)
        (site / "fakeflow" / "__init__.py").write_text("")
        info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        (info / "RECORD").write_text(f"fakeflow/__init__.py,,\n{info.name}/METADATA,,\n")
        path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": path},
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    assert versions_with("fakeflow-cpu", "2.21.0") == {"fakeflow-cpu": "2.21"}
    assert versions_with("fakeflow", "2.21.0") == {"fakeflow": "2.21"}


def test_onednn_is_keyed_by_its_effective_value():
    def effective(value: str | None) -> str:
        return numerics_environment({} if value is None else {"TF_ENABLE_ONEDNN_OPTS": value})["TF_ENABLE_ONEDNN_OPTS"]

    assert effective(None) == "1"  # TensorFlow's default on x86-64: on
    assert effective("0") == effective("False") == "0"
    assert effective("true") == effective("maybe") == "1"  # TensorFlow ignores a value it cannot read
    on, off = (StageKey(versions={"numpy": "2.3", **numerics_environment(env)})
               for env in ({}, {"TF_ENABLE_ONEDNN_OPTS": "0"}))
    assert key_change(on, off) == "environment changed (TF_ENABLE_ONEDNN_OPTS 1 -> 0)"


MODULE = '''"""Doc."""

SCALE = 255


def scale(x):
    """Scale."""
    return x / SCALE
'''


def test_code_counts_by_its_syntax_tree_not_its_comments_docstrings_or_layout(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(MODULE)
    original = source_hash(module)
    same = {"comment": MODULE.replace("SCALE = 255", "SCALE = 255  # the pixel range"),
            "docstrings": MODULE.replace("Doc.", "Another doc.").replace("Scale.", "Scale x into [0, 1]."),
            "layout": "SCALE = (255)\n\n\n\ndef scale(x): return (x /\n    SCALE)\n"}
    for name, text in same.items():
        module.write_text(text)
        assert source_hash(module) == original, name
    for text in (MODULE.replace("255", "256"), MODULE.replace("x / SCALE", "x / SCALE * 1")):
        module.write_text(text)
        assert source_hash(module) != original


REGISTRY = '''MODELS = {"a": ("pkg.a", "build_a"), "b": ("pkg.b", "build_b")}


def build(name):
    return name
'''


def test_a_registry_entry_counts_alone(tmp_path):
    registry = tmp_path / "registry.py"
    registry.write_text(REGISTRY)
    of_a = source_hash(registry, ("MODELS", "a"))
    registry.write_text(REGISTRY.replace("}", ',\n    "c": ("pkg.c", "build_c"),\n}'))
    assert source_hash(registry, ("MODELS", "a")) == of_a  # a model added: a's code is unchanged
    assert source_hash(registry) != source_hash(registry, ("MODELS", "a"))
    for edited in (REGISTRY.replace("build_a", "build_a2"),  # its own entry
                   REGISTRY.replace("return name", "return [name]")):  # the code that uses the entry
        registry.write_text(edited)
        assert source_hash(registry, ("MODELS", "a")) != of_a


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


def _ships(distribution: str, file: str) -> bool:
    from importlib import metadata

    try:
        return any(str(path) == file for path in metadata.distribution(distribution).files or ())
    except metadata.PackageNotFoundError:
        return False


def digest_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
