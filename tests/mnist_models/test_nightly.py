"""Nightly retraining logic on synthetic rows: seed, history, champions and the regression gate."""

import datetime as dt
import json

import pandas as pd
import pytest

from mnist_models import nightly


def run(model, accuracy, tmp_path, run_id=None, role="sweep"):
    run_id = run_id or f"{model}-{accuracy}"
    run_dir = tmp_path / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "model.keras").write_bytes(f"weights of {run_id}".encode())
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": run_id}))
    return {"model": model, "accuracy": accuracy, "accuracy_low": accuracy - 0.01, "accuracy_high": accuracy + 0.01,
            "map": accuracy, "learning_rate": 0.001, "epochs": 10, "seed": 1, "run_id": run_id,
            "run_dir": str(run_dir), "role": role}


def test_seed_is_derived_from_the_date():
    assert nightly.nightly_seed(dt.date(2026, 11, 27)) == 20261127
    assert nightly.nightly_seed(dt.date(2026, 11, 28)) != nightly.nightly_seed(dt.date(2026, 11, 27))


def test_history_appends_nights_and_replaces_a_rerun_of_the_same_flow_run(tmp_path):
    first = nightly.history_rows([run("dnn", 0.96, tmp_path), run("resnet", 0.99, tmp_path, role="gradient")],
                                 dt.date(2026, 11, 26), "flow-a")
    assert len(first) == 1 and first.loc[0, "date"] == "2026-11-26"
    second = nightly.history_rows([run("dnn", 0.97, tmp_path)], dt.date(2026, 11, 27), "flow-b")
    history = nightly.append_history(nightly.append_history(None, first), second)
    assert history["accuracy"].tolist() == [0.96, 0.97]
    again = nightly.history_rows([run("dnn", 0.975, tmp_path, run_id="dnn-again")], dt.date(2026, 11, 27), "flow-b")
    history = nightly.append_history(history, again)
    assert history["accuracy"].tolist() == [0.96, 0.975]


@pytest.mark.parametrize(
    ("new", "champion", "promoted", "regressed"),
    [
        (0.990, None, True, False),      # first night: the model becomes champion
        (0.991, 0.990, True, False),     # better: replaces it
        (0.990, 0.990, True, False),     # as accurate: replaces it
        (0.987, 0.990, False, False),    # 0.3 points worse: kept, within the 0.5-point tolerance
        (0.984, 0.990, False, True),     # 0.6 points worse: regression
    ],
)
def test_champion_decisions(new, champion, promoted, regressed):
    decision = nightly.decide("convnet", new, champion, tolerance=0.005)
    assert (decision.promoted, decision.regressed) == (promoted, regressed)


def test_regression_message_names_model_champion_and_new_accuracy():
    message = nightly.decide("resnet", 0.95, 0.99, tolerance=0.005).describe(0.005)
    assert "resnet" in message and "0.9900" in message and "0.9500" in message and "REGRESSION" in message


def test_promotion_copies_model_and_manifest_and_a_worse_run_keeps_the_champion(tmp_path):
    champions = tmp_path / "champion"
    assert nightly.read_champion(champions, "dnn") is None
    good = run("dnn", 0.97, tmp_path, run_id="dnn-good")
    nightly.promote(champions, good)
    record = nightly.read_champion(champions, "dnn")
    assert record["accuracy"] == 0.97 and record["run_id"] == "dnn-good"
    assert (champions / "dnn.keras").read_bytes() == b"weights of dnn-good"
    worse = nightly.decide("dnn", 0.90, record["accuracy"], 0.005)
    assert not worse.promoted and worse.regressed
    assert (champions / "dnn.keras").read_bytes() == b"weights of dnn-good"
