"""The study's open question, measured: at which depth, on which data set, does the first layer's gradient without
shortcuts fall significantly below the one with them, and what does that do to accuracy.

Runs the study once per data set with the gradient pair at several depths (`flows/full_study.py --gradient-depth
2,4,8,16`: resnet_plain_deepN and resnet_deepN, N blocks of two 3x3 convolutions without and with identity shortcuts),
3 seeds, on a stratified training subset, and writes benchmarks/results/gradient_depth.md, .json and .png from the
runs' tables with the report's own findings (`mnist_models.findings.gradients`). Each study's report
(`<artifacts>/report/report.md`, section "Gradient vanishing with depth") says the same in words. A rerun reuses
every trained run, so rewriting the results costs seconds.

    python benchmarks/gradient_depth.py      # MNIST at depths 2,4,8,16 and Fashion-MNIST at 2,4,8 (as measured)
    python benchmarks/gradient_depth.py --studies mnist:4,8 --epochs 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common
import pandas as pd

from mnist_models import table_builders
from mnist_models.findings.gradients import GradientExperiment, depth_comparison, gradient_experiments
from mnist_models.report import factor_text

SWEEP = ["--models", "dnn", "--learning-rates", "0.001", "--epochs", "1"]  # the smallest sweep a study run takes


def run_study(dataset: str, depths: str, args: argparse.Namespace) -> tuple[Path, float]:
    """Train (or reuse) the pairs on `dataset`; the artifacts folder and the wall time in seconds."""
    artifacts = args.artifacts_dir / dataset
    offline = _common.REPO_ROOT / ".." / "shared" / "datasets" / dataset
    arguments = ["--dataset", dataset, *SWEEP, "--gradient-depth", depths, "--gradient-epochs", str(args.epochs),
                 "--train-subset", str(args.train_subset), "--replicates", str(args.replicates),
                 "--artifacts-dir", str(artifacts), *(["--mirror", str(offline.resolve())] if offline.is_dir() else [])]
    return artifacts, _common.run_study(arguments, f"gradient_depth_{dataset}.log", f"the study on {dataset}")


def interval(phase) -> str:
    if phase is None:
        return "—"
    if phase.ratio_low is None:
        return f"{factor_text(phase.typical_ratio)} (one measurement)"
    return f"{factor_text(phase.typical_ratio)} ({factor_text(phase.ratio_low)}–{factor_text(phase.ratio_high)})"


def outcome_cells(experiment: GradientExperiment) -> list[str]:
    cells = []
    for outcome in experiment.outcomes:
        per_seed = ", ".join("—" if accuracy is None else f"{accuracy:.4f}" for accuracy in outcome.accuracies)
        cells.append(f"{outcome.mean_accuracy:.4f} ({per_seed})" if outcome.mean_accuracy is not None else "—")
    chance = " / ".join(str(len(outcome.chance_seeds)) for outcome in experiment.outcomes)
    return [*cells, f"{chance} of {experiment.seeds}"]


def training_wall_seconds(artifacts: Path) -> float:
    """The training grid's wall time when the runs were trained: first start to last end, from their manifests."""
    manifests = _common.run_manifests(artifacts)
    return max(manifest["finished_unix"] for manifest in manifests) - min(manifest["started_unix"]
                                                                           for manifest in manifests)


def initial_norms(gradients: pd.DataFrame) -> pd.DataFrame:
    """target_layer's gradient norm at initialisation per model, seed by seed."""
    start = gradients[(gradients["layer"] == "target_layer") & (gradients["epoch"] == gradients["epoch"].min())]
    norms = start.pivot_table(index="model", columns="seed", values="gradient_norm")
    order = list(dict.fromkeys(start["model"]))  # the table's order: pair by pair, shallowest first
    return norms.reindex(sorted(norms.index, key=order.index))


def figure(results: dict[str, tuple[GradientExperiment, ...]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=(6.4, 4.2))
    for offset, (dataset, experiments) in zip((-0.04, 0.04), results.items()):
        for phase, marker in (("at_initialisation", "o"), ("during_training", "s")):
            points = [(experiment.depth or 1, getattr(experiment, phase)) for experiment in experiments
                      if getattr(experiment, phase) is not None and getattr(experiment, phase).ratio_low is not None]
            if not points:
                continue
            depths = [depth * (1 + offset) for depth, _ in points]
            center = [value.typical_ratio for _, value in points]
            errors = [[value.typical_ratio - value.ratio_low for _, value in points],
                      [value.ratio_high - value.typical_ratio for _, value in points]]
            label = f"{dataset}, {'at initialisation' if phase == 'at_initialisation' else 'trained epochs'}"
            axes.errorbar(depths, center, yerr=errors, marker=marker, capsize=3, label=label,
                          linestyle="-" if phase == "at_initialisation" else ":")
    axes.axhline(1, color="grey", linewidth=0.8)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_ylim(0.1, 1e8)  # an interval over two seeds can span 90 orders of magnitude: it leaves the frame
    depths = sorted({experiment.depth or 1 for experiments in results.values() for experiment in experiments})
    axes.set_xticks(depths, [str(depth) for depth in depths])
    axes.minorticks_off()
    axes.set_xlabel("blocks of two 3×3 convolutions")
    axes.set_ylabel("target_layer gradient, with ÷ without shortcuts")
    axes.set_title("Where the first layer's gradient vanishes without shortcuts\n(geometric mean, 95% interval "
                   "across seeds)", fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", nargs="+", default=["mnist:2,4,8,16", "fashion-mnist:2,4,8"],
                        help="DATASET:DEPTHS, one study each (depths: blocks of the pairs, comma-separated)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each gradient run")
    parser.add_argument("--train-subset", type=int, default=5000, help="stratified training images")
    parser.add_argument("--replicates", type=int, default=3, help="seeds 42, 43, ...")
    parser.add_argument("--artifacts-dir", type=Path, default=_common.REPO_ROOT / "artifacts" / "gradient_depth")
    parser.add_argument("--output", type=Path, default=_common.RESULTS_DIR / "gradient_depth")
    args = parser.parse_args()
    machine = _common.machine_facts()

    results, sections, record = {}, [], {"machine": machine, "settings": vars(args) | {
        "artifacts_dir": str(args.artifacts_dir), "output": str(args.output)}, "datasets": {}}
    for study in args.studies:
        dataset, _, depths = study.partition(":")
        artifacts, seconds = run_study(dataset, depths or "2,4,8", args)
        tables = artifacts / "tables"
        gradients = pd.read_parquet(tables / "gradient_norms.parquet")
        summary = pd.read_parquet(tables / "summary.parquet")
        experiments = gradient_experiments(gradients, summary)
        comparison = depth_comparison(experiments)
        results[dataset] = experiments
        gradient_runs = table_builders.gradient_runs(summary)
        record["datasets"][dataset] = {
            "wall_seconds": round(seconds, 1), "training_wall_seconds": round(training_wall_seconds(artifacts), 1),
            "train_seconds": round(float(gradient_runs["train_seconds"].sum()), 1),
            "experiments": [experiment.model_dump(mode="json") for experiment in experiments],
            "vanishes_at_initialisation_from": comparison and comparison.vanishes_at_initialisation_from,
            "vanishes_during_training_from": comparison and comparison.vanishes_during_training_from,
        }
        rows = [[experiment.depth or 1, interval(experiment.at_initialisation), interval(experiment.during_training),
                 *outcome_cells(experiment)] for experiment in experiments]
        norms = initial_norms(gradients)
        sections.append("\n".join([
            f"## {dataset} (depths {depths})",
            "",
            f"Training took {training_wall_seconds(artifacts) / 60:.1f} min of wall time (first run's start to last "
            f"run's end, two runs at once), {float(gradient_runs['train_seconds'].sum()):,.0f} s summed over the "
            f"gradient runs; this invocation took {seconds / 60:.1f} min (reused runs are not retrained). The report: "
            f"`{artifacts.relative_to(_common.REPO_ROOT) if artifacts.is_relative_to(_common.REPO_ROOT) else artifacts}"
            "/report/report.md`.",
            "",
            _common.markdown_table(
                ["blocks", "with ÷ without at initialisation (95% interval)",
                 f"epochs 1–{args.epochs} (95% interval)", "test accuracy without shortcuts: mean (per seed)",
                 "with shortcuts", "at chance, below 0.2 (without / with)"], rows),
            "",
            "target_layer's gradient norm at initialisation, per seed:",
            "",
            _common.markdown_table(["model", *[f"seed {seed}" for seed in norms.columns]],
                                   [[model, *[f"{value:.3g}" for value in norms.loc[model]]] for model in norms.index]),
            "",
            answer(dataset, comparison),
        ]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure(results, args.output.with_suffix(".png"))
    _common.write_json(args.output.with_suffix(".json"), record)
    header = [
        "# The study's open question: at which depth do gradients vanish without shortcuts?",
        "",
        f"Measured {machine['date']} on {machine['nproc']} cores ({machine['cpu_model']}) with "
        f"`python benchmarks/gradient_depth.py --studies {' '.join(args.studies)} --epochs {args.epochs} "
        f"--train-subset {args.train_subset} --replicates {args.replicates}`.",
        "",
        "Settings: per data set and depth N, `resnet_plain_deepN` and `resnet_deepN` (the study's first layer "
        "`target_layer`, 3x3 with 32 filters, a 2x2 pooling, then N blocks of two 3x3 convolutions of 32 filters "
        "without and with identity shortcuts, no batch normalisation), Adam at LR 0.001, batch 32, "
        f"{args.epochs} epochs on a stratified {args.train_subset:,}-image training subset, seeds "
        f"{', '.join(str(42 + offset) for offset in range(args.replicates))}, scored on all 10,000 test images. "
        "The gradient norm is the mean over a fixed probe of 2,048 training images in batches of 32, measured before "
        "training (epoch 0) and after every epoch. Ratios are geometric means of with ÷ without over the seeds, with "
        "a 95% t-interval on their logarithm across seeds; a seed whose plain network never trains (its gradient 0 "
        "after epoch 0) enters no ratio of the trained epochs and is counted apart.",
        "",
        f"![with ÷ without per depth]({args.output.with_suffix('.png').name})",
        "",
    ]
    args.output.with_suffix(".md").write_text("\n".join(header + ["\n\n".join(sections), ""]))
    print(args.output.with_suffix(".md").read_text())


def answer(dataset: str, comparison) -> str:
    if comparison is None:
        return f"One depth only on {dataset}: nothing to compare."
    start, trained = comparison.vanishes_at_initialisation_from, comparison.vanishes_during_training_from
    if start is None:
        text = f"**{dataset}:** at no depth is the gradient without shortcuts significantly smaller at initialisation"
    else:
        during = ("and over the trained epochs from the same depth" if trained == start else
                  f"and over the trained epochs from {trained} blocks" if trained is not None else
                  "and at no depth over the trained epochs (the networks that train escape it)")
        factors = ", ".join(f"{factor_text(experiment.at_initialisation.typical_ratio)} at {experiment.depth or 1}"
                            for experiment in comparison.experiments if experiment.at_initialisation is not None)
        text = (f"**{dataset}:** the first layer's gradient without shortcuts is significantly smaller from {start} "
                f"blocks on at initialisation, {during}; the factor grows with depth ({factors})")
    if comparison.untrained_without_from is None:
        return text + "; no network without shortcuts ended at chance."
    return (text + f"; from {comparison.untrained_without_from} blocks on, networks without shortcuts end at chance "
            "in some seeds while every network with shortcuts trains.")


if __name__ == "__main__":
    main()
