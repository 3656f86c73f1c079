"""The artifacts layout: every path of the contract from one root, and relative paths that survive a move."""

from pathlib import Path

from mnist_models.layout import ArtifactsLayout


def test_every_contract_path_derives_from_the_root(tmp_path):
    layout = ArtifactsLayout.at(tmp_path / "artifacts")
    run = layout.run("dnn-lr0.001-e10-s42-abcd1234")
    assert run.model == tmp_path / "artifacts/runs/dnn-lr0.001-e10-s42-abcd1234/model.keras"
    assert [path.name for path in run.training_files] == [
        "model.keras", "history.parquet", "gradients.parquet", "kernel_histograms.parquet", "tensorboard",
        "manifest.json"]
    assert run.predictions.name == "predictions.parquet" and run.run_id == "dnn-lr0.001-e10-s42-abcd1234"
    assert layout.data("mnist").split("train") == tmp_path / "artifacts/data/mnist/train.parquet"
    assert layout.data("mnist").raw_file("a.gz") == tmp_path / "artifacts/data/mnist/raw/a.gz"
    assert layout.table("summary") == {fmt: tmp_path / f"artifacts/tables/summary.{fmt}" for fmt in ("parquet", "csv", "md")}
    assert layout.figure("roc_dnn") == tmp_path / "artifacts/figures/roc_dnn.png"
    assert (layout.report_markdown.name, layout.report_html.name) == ("report.md", "report.html")
    assert layout.champions_dir == tmp_path / "artifacts/models/champion"


def test_relative_paths_follow_the_root_when_it_moves(tmp_path):
    old, new = ArtifactsLayout.at(tmp_path / "old"), ArtifactsLayout.at(tmp_path / "new")
    relative = old.relative(old.table("summary")["parquet"])
    assert relative == Path("tables/summary.parquet")
    assert new.absolute(relative) == new.table("summary")["parquet"]


def test_a_relative_root_is_made_absolute_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ArtifactsLayout.at("artifacts").root == tmp_path / "artifacts"
