"""The study across seeds: per cell of the learning-rate sweep the mean test accuracy, its 95% interval and whether
the study's value lies inside, which of the study's conclusions hold, the gradient pair, and what it cost.

Reads a replicated study's artifacts folder (`flows/full_study.py --profile replicated`: seeds 42, 43, 44, the
study's 10-epoch sweep and 20-epoch gradient pair on all 60,000 images) and writes
benchmarks/results/replicated_full.md and .json, with the report's own findings (`mnist_models.replicates`,
`mnist_models.findings.gradients`). With `--run` it first runs (or continues) that study: every finished epoch is
kept, so a stopped run loses at most the epoch in progress, and a finished one is reused in seconds.

    python benchmarks/replicated_profile.py --run                     # about 7 h on 2 cores, into artifacts/replicated
    python benchmarks/replicated_profile.py --artifacts-dir DIR       # only the analysis, of a study run elsewhere
"""

from __future__ import annotations

import argparse
import shlex
from collections import defaultdict
from pathlib import Path

import _common
import gradient_measure
import numpy as np
import pandas as pd

from mnist_models import replicates, table_builders
from mnist_models.findings.gradients import GradientExperiment, gradient_experiments
from mnist_models.report import factor_text
from mnist_models.study_reference import REFERENCE_LEARNING_RATE, STUDY_TABLE_2_1, STUDY_TABLE_5_1, TARGET_LAYER
from mnist_models.tables import to_markdown

OUTCOME_WORDS = {"holds": "holds", "reversed": "reversed", "within_noise": "within seed noise",
                 "too_few_seeds": "too few seeds"}


def load_tables(artifacts: Path) -> dict[str, pd.DataFrame]:
    """The tables this report is built from; one clear error when the study has not written them yet."""
    tables = {}
    for name in ("summary", "replicates", "seed_comparisons", "gradient_norms"):
        path = artifacts / "tables" / f"{name}.parquet"
        if not path.exists():
            raise SystemExit(f"{path} does not exist: the study in {artifacts} has not finished (its tables are "
                             "written after the last run); expected a replicated study's artifacts folder")
        tables[name] = pd.read_parquet(path)
    return tables


def sweep_rows(summary: pd.DataFrame, cells: pd.DataFrame) -> tuple[list[list[object]], list[dict]]:
    """One row per model and learning rate: per-seed accuracies, mean, spread, interval, the study's value."""
    sweep = table_builders.sweep_runs(summary)
    rows, records = [], []
    for cell in cells.to_dict(orient="records"):
        model, rate = cell["model"], cell["learning_rate"]
        runs = sweep[(sweep["model"] == model) & np.isclose(sweep["learning_rate"], rate)].sort_values("seed")
        study = STUDY_TABLE_5_1.get(model, {}).get(rate)
        low, high = cell["accuracy_mean_low"], cell["accuracy_mean_high"]
        inside = None if study is None or np.isnan(low) else bool(low <= study <= high)
        epochs = ",".join(str(int(value)) for value in sorted(runs["epochs"].unique()))
        records.append({"model": model, "learning_rate": rate, "epochs": epochs,
                        "seeds": [int(seed) for seed in runs["seed"]],
                        "accuracies": [round(float(value), 4) for value in runs["accuracy"]],
                        "mean": cell["accuracy_mean"], "std": cell["accuracy_std"], "low": low, "high": high,
                        "study": study, "inside": inside})
        rows.append([model, f"{rate:g}", epochs, " / ".join(f"{value:.4f}" for value in runs["accuracy"]),
                     f"{cell['accuracy_mean']:.4f}", f"{100 * cell['accuracy_std']:.2f}", f"{low:.4f}–{high:.4f}",
                     "—" if study is None else f"{study:.3f}",
                     "—" if inside is None else ("yes" if inside else "**no**")])
    return rows, records


def gradient_pair_rows(summary: pd.DataFrame) -> list[list[object]]:
    """The gradient experiment's runs (beyond the sweep's epochs): accuracy per seed and across seeds."""
    runs = table_builders.gradient_runs(summary)
    rows = []
    for (model, rate, epochs), group in runs.groupby(["model", "learning_rate", "epochs"], sort=False):
        group = group.sort_values("seed")
        mean, std, low, high = replicates.spread(group["accuracy"])
        rows.append([model, f"{rate:g}", int(epochs), " / ".join(f"{value:.4f}" for value in group["accuracy"]),
                     f"{mean:.4f}", "—" if np.isnan(std) else f"{100 * std:.2f}",
                     "—" if np.isnan(low) else f"{low:.4f}–{high:.4f}"])
    return rows


def conclusion_rows(cells: pd.DataFrame, comparisons: pd.DataFrame) -> list[list[object]]:
    """Each pair of models at each learning rate: the claim (the study's ranking where it has one), across seeds."""
    across = replicates.conclusions_across_seeds(cells, comparisons)
    rows = []
    for conclusion in across.conclusions:
        interval = ("—" if conclusion.difference_low is None else
                    f"{100 * conclusion.difference_low:+.2f} to {100 * conclusion.difference_high:+.2f}")
        rows.append([f"{conclusion.learning_rate:g}", f"{conclusion.better} > {conclusion.worse}",
                     "study" if conclusion.from_study else "this run (study ties or lacks it)",
                     f"{100 * conclusion.difference:+.2f}", interval,
                     "—" if conclusion.p_value is None else f"{conclusion.p_value:.2g}",
                     f"{conclusion.mcnemar_for} / {conclusion.mcnemar_against} of {conclusion.seeds}",
                     OUTCOME_WORDS[conclusion.outcome]])
    return rows


def measure_noise(gradients: pd.DataFrame, plateau_from: int) -> tuple[pd.DataFrame, str]:
    """The gradient measure's own noise in these runs (gradient_measure.noise): target_layer's norm at the plateau,
    epoch to epoch within a run and across seeds; and the table as Markdown, or why there is none."""
    target = gradients[(gradients["layer"] == TARGET_LAYER) & (gradients["epoch"] > 0)]
    if target.empty or target["epoch"].max() <= plateau_from:
        return pd.DataFrame(), f"No gradient run has two epochs from epoch {plateau_from} on: no plateau to measure."
    table = gradient_measure.noise(target.rename(columns={"gradient_norm": "norm"}), plateau_from)
    return table, to_markdown(table, float_format="{:.3g}")


def gradient_sentence(experiment: GradientExperiment | None) -> str:
    if experiment is None or experiment.typical_ratio is None:
        return "No gradient experiment in these tables."
    interval = ("" if experiment.ratio_low is None else
                f" (95% interval {factor_text(experiment.ratio_low)}–{factor_text(experiment.ratio_high)} over "
                f"{experiment.replicates} {experiment.interval_over})")
    verdict = {"increased": "the shortcut significantly increases it", "lowered": "the shortcut significantly lowers it",
               "unchanged": "no significant effect of the shortcut", None: "no interval"}[experiment.effect]
    return (f"Gradient pair ({experiment.shortcut_model} ÷ {experiment.plain_model}, epochs {experiment.first_epoch}–"
            f"{experiment.last_epoch}, {experiment.seeds} seed(s)): target_layer's gradient norm with ÷ without the "
            f"shortcut is {factor_text(experiment.typical_ratio)}{interval}: {verdict}.")


def table_2_1_sentence(records: list[dict]) -> str:
    """The study's table 2.1 (its other figure for the same runs at LR 0.001) against the same intervals."""
    parts = []
    for record in records:
        study = STUDY_TABLE_2_1.get(record["model"])
        if study is None or not np.isclose(record["learning_rate"], REFERENCE_LEARNING_RATE) or np.isnan(record["low"]):
            continue
        parts.append(f"{record['model']} {study:.3f} {'inside' if record['low'] <= study <= record['high'] else 'outside'}")
    return f"The study's table 2.1 (LR {REFERENCE_LEARNING_RATE:g}): {', '.join(parts)}." if parts else ""


def lineage_cost(artifacts: Path) -> tuple[dict[str, float], float, int]:
    """Epoch-seconds per model (each lineage counted once, by its longest run's per-epoch times), the total, and
    the number of lineages; an epoch interrupted by a stop and trained again counts once."""
    longest: dict[str, dict] = {}
    for manifest in _common.run_manifests(artifacts):
        kept = longest.get(manifest["lineage"])
        if kept is None or len(manifest["epoch_seconds"]) > len(kept["epoch_seconds"]):
            longest[manifest["lineage"]] = manifest
    per_model: dict[str, float] = defaultdict(float)
    for manifest in longest.values():
        per_model[manifest["parameters"]["model"]] += sum(manifest["epoch_seconds"])
    return dict(per_model), sum(per_model.values()), len(longest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", type=Path, default=_common.REPO_ROOT / "artifacts" / "replicated")
    parser.add_argument("--run", action="store_true", help="run (or continue) the study into --artifacts-dir first")
    parser.add_argument("--profile-args", default="--profile replicated",
                        help="the study's options, as one string (default: %(default)s)")
    parser.add_argument("--plateau-from", type=int, default=6,
                        help="the first epoch of the gradient measure's plateau (default %(default)s, as in "
                             "results/gradient_measure.md)")
    parser.add_argument("--output", type=Path, default=_common.RESULTS_DIR / "replicated_full")
    args = parser.parse_args()
    seconds = _common.run_study([*shlex.split(args.profile_args), "--artifacts-dir", str(args.artifacts_dir)],
                                "replicated_profile.log", "the replicated study", append=True) if args.run else None
    tables = load_tables(args.artifacts_dir)
    summary, cells = tables["summary"], tables["replicates"]
    rows, records = sweep_rows(summary, cells)
    experiments = gradient_experiments(tables["gradient_norms"], summary)
    per_model, lane_seconds, lineages = lineage_cost(args.artifacts_dir)
    noise, noise_text = measure_noise(tables["gradient_norms"], args.plateau_from)
    machine = _common.machine_facts()
    inside = [record for record in records if record["inside"] is not None]
    lines = [
        "# The study across seeds: every cell's mean, its 95% interval, and the study's value",
        "",
        f"Analysed {machine['date']} from `{args.artifacts_dir}` (`flows/full_study.py {args.profile_args}`), by "
        f"`python benchmarks/replicated_profile.py`: {len(summary)} runs, seeds "
        f"{', '.join(str(int(seed)) for seed in sorted(summary['seed'].unique()))}. Test accuracy is on all 10,000 "
        "test images after the run's last epoch; the interval is the 95% t-interval of the mean across seeds "
        "(t with n − 1 degrees of freedom: 4.303 for 3 seeds).",
        "",
        "## The learning-rate sweep (the study's table 5.1)",
        "",
        _common.markdown_table(["model", "LR", "epochs", "per seed", "mean", "std (points)", "95% interval",
                                "study", "study inside"], rows),
        "",
        f"The study's value lies inside the interval in {sum(record['inside'] for record in inside)} of "
        f"{len(inside)} cells. {table_2_1_sentence(records)}",
        "",
        "## The gradient pair",
        "",
        _common.markdown_table(["model", "LR", "epochs", "per seed", "mean", "std (points)", "95% interval"],
                               gradient_pair_rows(summary)),
        "",
        *[gradient_sentence(experiment) for experiment in experiments],
        "",
        f"The measure's own noise (`benchmarks/gradient_measure.py`'s statistics of target_layer's norm from epoch "
        f"{args.plateau_from} on): the coefficient of variation from epoch to epoch within a run (mean over seeds), the "
        "largest ratio between two of a run's plateau epochs, and the coefficient of variation across seeds (mean over "
        "epochs).",
        "",
        noise_text,
        "",
        "## Which conclusions hold across seeds",
        "",
        "Each pair of models at each learning rate: the claim is the study's ranking in its table 5.1 where the study "
        "separates the two, else this run's ranking of the means. Difference: mean over seeds of the per-seed "
        "accuracy difference, in points, with its 95% t-interval and the paired t-test's p; McNemar: seeds in "
        "which McNemar's test on the 10,000 test images finds the claim / its reverse significant.",
        "",
        _common.markdown_table(["LR", "claim", "from", "difference (points)", "95% interval", "paired t p",
                                "McNemar for / against", "across seeds"],
                               conclusion_rows(cells, tables["seed_comparisons"])),
        "",
        "## Cost",
        "",
        f"{lane_seconds:,.0f} s ({lane_seconds / 3600:.2f} h) of training epochs summed over {lineages} lineages "
        "(each lineage once, by its longest run's per-epoch wall times, which include validation and the epoch "
        "records): " + ", ".join(f"{model} {value:,.0f} s" for model, value in sorted(per_model.items(),
                                                                                  key=lambda item: -item[1]))
        + ". Two lineages train at once on 2 cores, each on one thread."
        + ("" if seconds is None else f" This invocation took {seconds / 60:.1f} min."),
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    _common.write_json(args.output.with_suffix(".json"), {
        "machine": machine, "artifacts_dir": str(args.artifacts_dir), "profile_args": args.profile_args,
        "cells": records, "gradient": [experiment.model_dump(mode="json") for experiment in experiments],
        "gradient_measure_noise": noise.to_dict(orient="records"),
        "epoch_seconds_per_model": per_model, "epoch_seconds": lane_seconds, "lineages": lineages,
        "invocation_seconds": seconds})
    args.output.with_suffix(".md").write_text("\n".join(lines))
    print(args.output.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
