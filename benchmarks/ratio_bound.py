"""The lowest training-speed ratio any pipeline can reach on this machine with the study's arithmetic.

Run:   python benchmarks/ratio_bound.py [--models dnn,convnet,resnet] [--epochs 3]
Time:  about 12 minutes on 2 cores (all 60,000 training images, 3 epochs per measurement).
Makes: benchmarks/results/ratio_bound.{json,md}

benchmarks/training_speed.py compares the whole pipeline with the plain sequential script. This
script asks what the best pipeline could do: per model, the seconds of one epoch (all 60,000 images,
then validation on the 10,000 test images, batch 32, Adam; the first epoch, which traces, left out)

- plain: Keras `fit` from NumPy arrays, TensorFlow's default threading, one process alone; exactly
  the per-epoch work of `plain_keras_study.py`;
- bare, side by side: nothing but the training arithmetic, fed the pipeline's way
  (`feeding.Feeder`, steps_per_execution 16, validation batch 1000, op determinism), one thread per
  process, two processes started together, as the pipeline trains on 2 cores; no callback, no
  recorder, no TensorBoard, no saving, no prediction, no Prefect. Its effective epoch is the pair's
  mean divided by 2;
- bare, one process on every core: the same, alone, with TensorFlow's default threading (the other
  layout the pipeline could use);
- as shipped, side by side: the bare settings plus what the pipeline adds per epoch inside `fit`
  (TensorBoard histograms and the gradient-norm/histogram recorder), two processes together.

From these, for a study shape (epochs per run, with the 20-epoch gradient ResNet continuing the
10-epoch sweep ResNet as the pipeline does), the bound is

    sum over runs of epochs x bare effective epoch  /  sum over runs of epochs x plain epoch,

the ratio of a pipeline with no start-up, no tracing, no scheduling gap and no evaluation, against a
plain script with the same exemption. If the bound is above a target, no change that keeps the
study's arithmetic (model, batch, optimizer, float32, every epoch's validation) can meet it here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import _common
import training_levers

BARE = {"feeder": True, "steps_per_execution": 16, "validation_batch": 1000, "histograms": False,
        "recorder": False, "threads": 1}
CONFIGS = {
    "plain": {"validation_batch": 32, "histograms": False, "recorder": False, "determinism": False,
              "threads": None},
    "bare, side by side": BARE,
    "bare, one process on every core": {**BARE, "threads": None},
    "as shipped, side by side": {**BARE, "histograms": True, "recorder": True},
}
SIDE_BY_SIDE = {"bare, side by side", "as shipped, side by side"}
GRADIENT_MODELS = ("resnet_plain", "resnet")


def study_epochs(models: list[str], learning_rates: int, epochs: int, gradient_epochs: int,
                 continued: bool) -> dict[str, int]:
    """Epochs trained per architecture: the sweep, then the gradient pair at the sweep's learning rate.

    With `continued`, the gradient ResNet continues the sweep ResNet's run at the same learning rate
    (as the pipeline does), so only its extra epochs are trained. The pair is part of the shape only
    when the sweep has the ResNet.
    """
    trained = {model: learning_rates * epochs for model in models}
    for model in GRADIENT_MODELS if "resnet" in models else ():
        extra = gradient_epochs - epochs if continued and model in models else gradient_epochs
        trained[model] = trained.get(model, 0) + extra
    return trained


def bound(plain: dict[str, float], effective: dict[str, float], shape: dict) -> dict:
    """Seconds of training arithmetic for `shape`, plain against the pipeline's best, and their ratio."""
    plain_epochs = study_epochs(continued=False, **shape)
    pipeline_epochs = study_epochs(continued=True, **shape)
    plain_seconds = sum(epochs * plain[model] for model, epochs in plain_epochs.items())
    pipeline_seconds = sum(epochs * effective[model] for model, epochs in pipeline_epochs.items())
    return {"plain_epochs": plain_epochs, "pipeline_epochs": pipeline_epochs,
            "plain_seconds": round(plain_seconds, 1), "pipeline_seconds": round(pipeline_seconds, 1),
            "ratio": round(pipeline_seconds / plain_seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="dnn,convnet,resnet")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement; all but the first are timed")
    parser.add_argument("--data-dir", default=str(_common.REPO_ROOT / "artifacts" / "data" / "mnist"))
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from results/ratio_bound.json (e.g. after a new training_speed.py run)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.report_only:
        saved = json.loads((_common.RESULTS_DIR / "ratio_bound.json").read_text())
        write_results(saved["seconds_per_epoch"], saved["epochs"], saved["machine"])
        return
    if options.one:
        seconds = training_levers.measure(options.one[0], CONFIGS[options.one[1]], 60000, options.data_dir,
                                          epochs=options.epochs)
        print(json.dumps(seconds))
        return
    if options.epochs < 2:
        parser.error(f"--epochs {options.epochs}: expected at least 2 (the first epoch is not timed)")
    environment = _common.subprocess_environment()
    _common.ensure_parquet(Path(options.data_dir).parents[1], environment)
    models = options.models.split(",")
    if "resnet" in models:
        models.insert(models.index("resnet"), "resnet_plain")  # the gradient pair's control, trained as often

    def run(model: str, config: str) -> list[float]:
        """Mean seconds of the timed epochs, one value per process (two when the config is side by side)."""
        command = [sys.executable, __file__, "--epochs", str(options.epochs), "--data-dir", options.data_dir,
                   "--one", model, config]
        return _common.measure_together(command, 2 if config in SIDE_BY_SIDE else 1, environment,
                                        f"{model} ({config})")

    measured: dict[str, dict[str, list[float]]] = {}
    for model in models:
        for config in CONFIGS:
            measured.setdefault(model, {})[config] = run(model, config)
            print(f"{model:12s} {config:34s} {measured[model][config]} s per epoch", flush=True)
    write_results(measured, options.epochs)


def effective_epoch(seconds: list[float]) -> float:
    """Seconds per epoch of the machine: the processes' mean epoch over their number (they train at once)."""
    return statistics.mean(seconds) / len(seconds)


SHAPES = {
    "reduced (3 sweep epochs, 6 gradient epochs: training_speed.py's mode)":
        {"learning_rates": 4, "epochs": 3, "gradient_epochs": 6},
    "full profile (10 sweep epochs, 20 gradient epochs)": {"learning_rates": 4, "epochs": 10, "gradient_epochs": 20},
}


def against_target(shapes: dict) -> list[str]:
    """The bound beside training_speed.py's target and its measured whole-pipeline ratios, if any."""
    target, measured = 0.5, []
    for speed in sorted(_common.RESULTS_DIR.glob("**/training_speed.json")):
        result = json.loads(speed.read_text())
        target = result["targets"]["training_ratio_at_most"]
        settings, training = result["settings"], result["training"]
        measured.append(f"- {speed.relative_to(_common.RESULTS_DIR)}: {training['ratio']:.2f} "
                        f"({training['pipeline_wall_s']:.1f} s against {training['plain_wall_s']:.1f} s; "
                        f"{settings['epochs']} sweep / {settings['gradient_epochs']} gradient epochs, "
                        f"{result['machine']['date']})")
    best = min(result["ratio"] for by_shape in shapes.values() for result in by_shape.values())
    lines = ["## Against the target", "",
             f"Target: at most {target}. Lowest bound above: {best:.3f}, "
             + ("below the target: overheads, not arithmetic, stand between the pipeline and it."
                if best <= target else
                "above the target: a pipeline that keeps the study's arithmetic cannot meet it on this machine.")]
    if measured:
        lines += ["", "The whole pipeline, measured by training_speed.py against the plain script in one run:", "",
                  *measured]
    return lines + [""]


def write_results(measured: dict, epochs: int, machine: dict | None = None) -> None:
    """Write results/ratio_bound.{md,json} from per-epoch seconds (machine facts: now, unless given)."""
    machine = machine or _common.machine_facts()
    plain = {model: effective_epoch(configs["plain"]) for model, configs in measured.items()}
    sweep_models = [model for model in measured if model != "resnet_plain"]
    shapes = {}
    for config in ("bare, side by side", "bare, one process on every core", "as shipped, side by side"):
        effective = {model: effective_epoch(configs[config]) for model, configs in measured.items()}
        shapes[config] = {name: bound(plain, effective, {"models": sweep_models, **shape})
                          for name, shape in SHAPES.items()}
    rows = [[model, *(" and ".join(f"{s:.2f}" for s in configs[config]) for config in CONFIGS),
             f"{plain[model] / effective_epoch(configs['bare, side by side']):.2f}"]
            for model, configs in measured.items()]
    lines = [
        "# The lowest ratio a pipeline can reach here: training arithmetic alone, plain against bare",
        "",
        f"Date {machine['date']}; machine: {machine['nproc']} cores, {machine['cpu_model']}, "
        f"{machine['memory_gib']} GiB; Python {machine['python']}; "
        + ", ".join(f"{name} {version}" for name, version in machine["versions"].items()) + ".",
        "",
        f"Seconds per epoch (60,000 training images, then validation on the 10,000 test images), the mean of "
        f"epochs 2 to {epochs} of each process; side-by-side configurations list both processes. "
        "What each configuration is: the docstring of benchmarks/ratio_bound.py.",
        "",
        _common.markdown_table(["model", *CONFIGS, "plain / bare effective"], rows),
        "",
        "## Bounds",
        "",
        "Training arithmetic only (no start-up, tracing, evaluation or scheduling gap on either side); the "
        "pipeline's epochs count the gradient ResNet's continuation from the sweep's.",
        "",
        _common.markdown_table(
            ["pipeline configuration", "study shape", "plain s", "pipeline s", "ratio bound"],
            [[config, name, result["plain_seconds"], result["pipeline_seconds"], f"{result['ratio']:.3f}"]
             for config, by_shape in shapes.items() for name, result in by_shape.items()]),
        "",
        *against_target(shapes),
    ]
    _common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (_common.RESULTS_DIR / "ratio_bound.md").write_text("\n".join(lines))
    _common.write_json(_common.RESULTS_DIR / "ratio_bound.json",
                       {"machine": machine, "epochs": epochs, "configs": CONFIGS,
                        "seconds_per_epoch": measured, "plain_epoch": plain, "bounds": shapes})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
