"""benchmarks/timeline.py on a small synthetic study: a log, one run folder with its manifest, predictions and
validation event files, whose parts are known to the tenth of a second."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "timeline.py"
MIDNIGHT = 1796169600.0  # 2026-12-02T00:00:00Z: the synthetic log's clock is UTC
RUN_ID = "dnn-lr0.01-e2-s42-n2000-abcdef12"
TASK = "train dnn lr=0.01 s=42"
OTHER = "train convnet lr=0.01 s=42"  # its run folder is missing: known from the log alone
NEXT = "train dnn lr=0.001 s=42"  # the same process's next lineage, no run folder either

# (log time, source, message): a study of 28.0 s from start to exit, with two workers: a 2-epoch dnn lineage
# on one, a 1-epoch convnet run then a 1-epoch dnn run on the other.
LOG = [
    ("10:00:00.000", "timeline", "process started: python flows/full_study.py --profile quick"),
    ("10:00:02.000", "prefect", "Starting temporary server on http://127.0.0.1:8233"),
    ("10:00:06.000", "Flow run 'main-flow'", "Beginning flow run 'main-flow' for flow 'full-study'"),
    ("10:00:07.000", "Task run 'normalize train.parquet'", "Finished in state Completed()"),
    ("10:00:08.000", "Flow run 'main-flow'", f"train {RUN_ID}: recomputed (new)"),
    ("10:00:08.200", "Flow run 'main-flow'", "2 run(s) at once on 1 thread(s) each: 2 core(s)"),
    ("10:00:08.500", "Flow run 'grid-flow'", "Beginning subflow run 'grid-flow' for flow 'train-grid'"),
    ("10:00:08.600", f"Task run '{TASK}'", f"{RUN_ID}: training dnn at learning rate 0.01 to epoch(s) 2 on 1 "
                                           "thread(s), in process 100"),
    ("10:00:08.600", f"Task run '{OTHER}'", "convnet-lr0.01-e1-s42-n2000-0badc0de: training convnet at learning "
                                            "rate 0.01 to epoch(s) 1 on 1 thread(s), in process 101"),
    ("10:00:13.000", f"Task run '{OTHER}'", "convnet-lr0.01-e1-s42-n2000-0badc0de: epoch 1/1 loss 1.0 accuracy 0.6 "
                                            "val_accuracy 0.7 (2.0 s)"),
    ("10:00:14.000", f"Task run '{OTHER}'", "Finished in state Completed()"),
    ("10:00:14.200", f"Task run '{NEXT}'", "dnn-lr0.001-e1-s42-n2000-0ddba11a: training dnn at learning rate 0.001 to "
                                           "epoch(s) 1 on 1 thread(s), in process 101"),
    ("10:00:16.000", f"Task run '{NEXT}'", "dnn-lr0.001-e1-s42-n2000-0ddba11a: epoch 1/1 loss 1.0 accuracy 0.6 "
                                           "val_accuracy 0.7 (1.0 s)"),
    ("10:00:16.500", f"Task run '{NEXT}'", "Finished in state Completed()"),
    ("10:00:15.000", f"Task run '{TASK}'", f"{RUN_ID}: epoch 1/2 loss 1.0 accuracy 0.6 val_accuracy 0.7 (3.0 s)"),
    ("10:00:18.000", f"Task run '{TASK}'", f"{RUN_ID}: epoch 2/2 loss 0.5 accuracy 0.8 val_accuracy 0.9 (2.0 s)"),
    ("10:00:19.600", f"Task run '{TASK}'", "Finished in state Completed()"),
    ("10:00:20.000", "Flow run 'grid-flow'", "Finished in state Completed()"),
    ("10:00:21.000", "Flow run 'main-flow'", f"evaluate {RUN_ID}: recomputed (upstream recomputed (train))"),
    ("10:00:21.500", "Task run 'evaluate dnn lr=0.01 e=2'", "Finished in state Completed()"),
    ("10:00:22.000", "Flow run 'main-flow'", "tables study: recomputed (upstream recomputed (evaluate, train))"),
    ("10:00:23.000", "Task run 'write_study_tables-abc'", "Finished in state Completed()"),
    ("10:00:23.100", "Flow run 'main-flow'", "figures study: recomputed (upstream recomputed (evaluate, train))"),
    ("10:00:25.000", "Task run 'render_figures-abc'", "Finished in state Completed()"),
    ("10:00:25.100", "Flow run 'main-flow'", "report study: recomputed (upstream recomputed (figures, tables))"),
    ("10:00:26.000", "Task run 'render_report-abc'", "Finished in state Completed()"),
    ("10:00:26.100", "Flow run 'main-flow'", "cache: 0 reused, 4 recomputed (tables/cache_decisions.md says why)"),
    ("10:00:27.000", "Task run 'publish_artifacts-abc'", "Finished in state Completed()"),
    ("10:00:27.500", "Flow run 'main-flow'", "Finished in state Completed()"),
    ("10:00:27.600", "prefect", "Stopping temporary server on http://127.0.0.1:8233"),
    ("10:00:28.000", "timeline", "process exited (status 0)"),
]


def _at(seconds_after_ten: float) -> float:
    return MIDNIGHT + 36000 + seconds_after_ten


def _varint(number: int) -> bytes:
    out = b""
    while True:
        out += bytes([(number & 0x7F) | (0x80 if number > 0x7F else 0)])
        number >>= 7
        if not number:
            return out


def _record(wall_time: float, step: int = 0, tag: str | None = None) -> bytes:
    """One TFRecord-framed Event: wall_time, step, and a file_version (no tag) or a one-value summary."""
    body = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if tag is None:
        body += b"\x1a" + _varint(13) + b"brain.Event:2"
    else:
        value = b"\x0a" + _varint(len(tag)) + tag.encode()
        summary = b"\x0a" + _varint(len(value)) + value
        body += b"\x2a" + _varint(len(summary)) + summary
    return struct.pack("<Q", len(body)) + b"\0" * 4 + body + b"\0" * 4


def _study(root: Path) -> tuple[Path, Path]:
    """The synthetic log and artifacts folder: fits 12.0-15.0 s and 16.0-18.0 s after 10:00, validation from
    14.x to 14.8 and 17.x to 17.9, the run's manifest taken at 18.5, its predictions written at 19.5."""
    log = root / "study.log"
    log.write_text("".join(f"{stamp} | INFO    | {source} - {message}\n" for stamp, source, message in LOG)
                   + "WARNING:tensorflow: a line without a timestamp\n")
    folder = root / "artifacts" / "runs" / RUN_ID
    (folder / "tensorboard" / "validation").mkdir(parents=True)
    manifest = {"run_id": RUN_ID, "parameters": {"model": "dnn", "epochs": 2}, "epoch_seconds": [3.0, 2.0],
                "started_unix": _at(12.0), "finished_unix": _at(18.5), "continued_from": None}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "predictions.parquet").write_bytes(b"stand-in")
    os.utime(folder / "predictions.parquet", (_at(19.5), _at(19.5)))
    for epoch, (opened, ended) in enumerate([(14, 14.8), (17, 17.9)]):
        records = [_record(_at(opened)), _record(_at(ended), 63, "evaluation_accuracy_vs_iterations"),
                   _record(_at(ended) + 0.01, epoch, "epoch_accuracy")]
        (folder / "tensorboard" / "validation" / f"events.out.tfevents.{epoch}.v2").write_bytes(b"".join(records))
    return log, root / "artifacts"


def _timeline(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("timeline")
    log, artifacts = _study(root)
    completed = _timeline("--log", str(log), "--artifacts", str(artifacts), "--output", str(root / "out"))
    assert completed.returncode == 0, completed.stderr
    assert (root / "out.md").exists() and (root / "out.png").stat().st_size > 0
    return json.loads((root / "out.json").read_text())


def test_parts_add_up_to_the_wall_time(report):
    assert report["wall_s"] == pytest.approx(28.0)
    assert sum(row["wall_s"] for row in report["parts"]) == pytest.approx(28.0, abs=0.01)
    assert set(report["lanes"]) == {"main process", "worker 1", "worker 2"} and report["workers"] == 2
    for lane, span in (("main process", 28.0), ("worker 1", 11.5), ("worker 2", 11.5)):  # a worker: the grid
        assert sum(segment["end"] - segment["start"] for segment in report["lanes"][lane]) == pytest.approx(span)
    wall = {row["part"]: row["wall_s"] for row in report["parts"]}
    assert wall["training"] == pytest.approx((3.0 + 2.0 + 1.0) / 2) and wall["waiting for grid"] == 0


def test_each_part_is_where_the_evidence_puts_it(report):
    seconds = {row["part"]: row["lane_s"] for row in report["parts"]}
    assert seconds == pytest.approx({
        "start-up": 2.0, "server start": 4.0, "data stage": 1.0, "grid start": 0.5,
        "worker start + TF import": 3.4 + 2.4,  # 'in process' line to the first fit
        "tracing (est.)": 1.0,  # dnn's first epoch 3.0 s over its later 2.0 s, all before validation; none for convnet
        "run setup": 0.8,  # process 101 reused: no TensorFlow import; the dnn's 1.0 s epoch is no slower: no tracing
        "training": 3.0 + 2.0 + 1.0, "validation": 0.7, "epoch records": 1.8, "test prediction": 1.0,
        "after training, unsplit": 1.0 + 0.5,  # no run folder to say where the prediction begins
        "hand-over": 0.2 + 0.1 + 0.2, "idle worker": 0.4 + 3.5, "waiting for grid": 11.5, "between stages": 3.3,
        "evaluation": 0.5, "tables": 1.0, "figures": 1.9, "report": 0.9, "publishing": 0.9, "exit": 0.5,
    }, abs=0.01)
    assert [(job["lane"], job["epochs"], job["manifest"]) for job in report["jobs"]] == [
        ("worker 1", [1, 2], True), ("worker 2", [1], False), ("worker 2", [1], False)]


def test_a_log_without_timestamped_lines_is_refused(tmp_path):
    log = tmp_path / "study.log"
    log.write_text("Report: /tmp/x/report.html\n")
    (tmp_path / "artifacts" / "runs").mkdir(parents=True)
    completed = _timeline("--log", str(log), "--artifacts", str(tmp_path / "artifacts"), "--output",
                          str(tmp_path / "out"))
    assert completed.returncode == 2
    assert "holds no 'HH:MM:SS.mmm" in completed.stderr
    assert not (tmp_path / "out.json").exists()


def test_a_baseline_timeline_is_shown_part_by_part_beside_this_run(report, tmp_path):
    earlier = {**report, "commit": "0123abc", "wall_s": 30.0,
               "parts": [*({**row, "wall_s": row["wall_s"] + 1.0} if row["part"] == "tables" else row
                           for row in report["parts"] if row["part"] != "report"),
                         {"part": "gone", "wall_s": 1.0, "share": 0.0, "lane_s": 1.0, "lanes": 1, "holds": ""}]}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    log, artifacts = _study(tmp_path)
    completed = _timeline("--log", str(log), "--artifacts", str(artifacts), "--output", str(tmp_path / "out"),
                          "--baseline", str(tmp_path / "earlier.json"))
    assert completed.returncode == 0, completed.stderr
    text = (tmp_path / "out.md").read_text()
    assert "commit 0123abc, 30.0 s on the same kind of run: this run took -2.0 s (-6.7%)" in text
    rows = {cells[0]: cells[1:4] for line in text.splitlines() if line.startswith("| ")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}
    assert rows["tables"] == ["1.0", "2.0", "-1.0"] and rows["report"] == ["0.9", "0.0", "+0.9"]
    assert rows["gone"] == ["0.0", "1.0", "-1.0"]  # a part only the baseline had
    assert rows["total"][:2] == ["28.0", "29.1"]  # 28.0 + 1.0 (tables) - 0.9 (report) + 1.0 (gone)
    assert json.loads((tmp_path / "out.json").read_text())["baseline"]["commit"] == "0123abc"

    broken = _timeline("--log", str(log), "--artifacts", str(artifacts), "--output", str(tmp_path / "again"),
                       "--baseline", str(log))
    assert broken.returncode == 2 and "expected a timeline .json" in broken.stderr
    assert not (tmp_path / "again.json").exists()
