"""How noisy the gradient experiment's measure is, before and after, and what the measure costs.

Run:   python benchmarks/gradient_measure.py BEFORE_DIR AFTER_DIR [--plateau-from 6]
       (each an artifacts folder of the gradient pair trained with several seeds, e.g.
        python flows/full_study.py --models dnn --learning-rates 0.001 --epochs 1 --gradient-epochs 10 \
            --train-subset 10000 --replicates 3 --artifacts-dir BEFORE_DIR, once with each measure's code)
Makes: benchmarks/results/gradient_measure.md (and prints it)

Noise, per model of the pair, of the first layer's (`target_layer`) gradient norm:
- epoch to epoch at the plateau: the coefficient of variation of the norm over the plateau epochs of one
  run (mean over seeds), and the largest ratio between two of those epochs;
- across seeds: the coefficient of variation over the seeds at each plateau epoch (mean over epochs).
Cost: the after-folder's measure timed on each gradient run's final model (the same probe and batch size
training uses, traced once and warm), as a share of the run's mean measured epoch, and of an epoch on
all 60,000 images (the epoch scaled by 60,000 / its training images).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common
import numpy as np
import pandas as pd

from mnist_models.study_reference import TARGET_LAYER
from mnist_models.tables import to_markdown


def gradient_runs(artifacts: Path) -> pd.DataFrame:
    """One row per gradient-pair run epoch: model, seed, epoch, the target layer's norm."""
    rows = []
    for manifest_path in sorted((artifacts / "runs").glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        parameters = manifest["parameters"]
        if not parameters["model"].startswith("resnet") or parameters["epochs"] < 2:
            continue
        gradients = pd.read_parquet(manifest_path.parent / "gradients.parquet")
        target = gradients[(gradients["layer"] == TARGET_LAYER) & (gradients["epoch"] > 0)]
        rows += [{"model": parameters["model"], "seed": parameters["seed"], "epoch": int(epoch), "norm": float(norm),
                  "folder": str(manifest_path.parent)} for epoch, norm in zip(target["epoch"], target["gradient_norm"])]
    if not rows:
        raise SystemExit(f"no gradient-pair run (resnet, resnet_plain) under {artifacts / 'runs'}")
    return pd.DataFrame(rows)


def noise(frame: pd.DataFrame, plateau_from: int) -> pd.DataFrame:
    """Per model: epoch-to-epoch and across-seed variation of the target layer's norm at the plateau."""
    plateau = frame[frame["epoch"] >= plateau_from]
    result = []
    for model, rows in plateau.groupby("model"):
        per_run = rows.groupby("seed")["norm"]
        within = (per_run.std(ddof=1) / per_run.mean()).mean()
        swing = (per_run.max() / per_run.min()).max()
        per_epoch = rows.groupby("epoch")["norm"]
        across = (per_epoch.std(ddof=1) / per_epoch.mean()).mean()
        result.append({"model": model, "seeds": rows["seed"].nunique(), "plateau epochs": rows["epoch"].nunique(),
                       "epoch-to-epoch CV": within, "largest epoch ratio": swing, "across-seed CV": across})
    return pd.DataFrame(result)


def cost(frame: pd.DataFrame) -> pd.DataFrame:
    """The measure's time on each gradient run's final model against the run's epochs."""
    import keras

    from mnist_models.data import load_split
    from mnist_models.training import GRADIENT_PROBE, _Recorder

    result = []
    for folder in sorted(set(frame["folder"])):
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        parameters = manifest["parameters"]
        train = load_split(Path(folder).parents[1] / "data" / parameters["dataset"] / "train.parquet")
        rows = np.random.default_rng(0).choice(len(train.labels), GRADIENT_PROBE, replace=False)
        model = keras.saving.load_model(Path(folder) / "model.keras")
        recorder = _Recorder(model, (train.images[rows], train.labels[rows]), parameters["batch_size"])
        recorder.gradients(0)  # traced once, as in training
        began = time.perf_counter()
        recorder.gradients(1)
        seconds = time.perf_counter() - began
        epoch = float(np.mean(manifest["epoch_seconds"]))
        full = epoch * 60_000 / manifest["train_images"]
        result.append({"run": Path(folder).name, "measure s": seconds, "epoch s": epoch,
                       "share of its epoch": seconds / epoch, "share of a 60,000-image epoch": seconds / full})
    return pd.DataFrame(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--plateau-from", type=int, default=6, help="first epoch counted as the plateau")
    options = parser.parse_args()
    before, after = gradient_runs(options.before), gradient_runs(options.after)
    facts = _common.machine_facts()
    lines = ["# The gradient experiment's measure: noise before and after, and cost", "",
             f"Measured {facts['date']} on {facts['nproc']} cores ({facts['cpu_model']}), TensorFlow "
             f"{facts['versions'].get('tensorflow-cpu') or facts['versions'].get('tensorflow')}.", "",
             "Before: one fixed batch of 256 training images after each epoch. After: the mean over a fixed probe "
             "of 2,048 training images in training-size batches (64 batches of 32).", "",
             f"## Noise of `{TARGET_LAYER}`'s gradient norm at the plateau (epochs {options.plateau_from} on)", "",
             "### Before", "", to_markdown(noise(before, options.plateau_from).round(3)), "",
             "### After", "", to_markdown(noise(after, options.plateau_from).round(3)), "",
             "## Cost of the measure (after)", "", to_markdown(cost(after).round(3)), ""]
    text = "\n".join(lines)
    (_common.RESULTS_DIR / "gradient_measure.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
