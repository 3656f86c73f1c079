"""Section 3's findings: target_layer's gradient with over without the shortcut, also per seed."""

from __future__ import annotations

import pandas as pd
import pytest

from mnist_models.findings import compute_findings
from tests.mnist_models.findings.tables import SEEDS, gradient_rows, replicated_tables, summary_table


def test_gradient_ratio_of_the_target_layer_with_over_without_shortcut():
    table = pd.DataFrame(
        gradient_rows("resnet", {"target_layer": [0.006, 0.012], "shortcut": [0.5, 0.5], "dense": [1.0, 3.0]})
        + gradient_rows("resnet_plain", {"target_layer": [0.002, 0.004], "dense": [1.0, 1.0]}))
    gradient = compute_findings({"gradient_norms": table}).gradient
    assert gradient.models == ("resnet_plain", "resnet")  # the plain variant first, whatever the table's order
    assert (gradient.plain_model, gradient.shortcut_model) == ("resnet_plain", "resnet")
    assert (gradient.first_epoch, gradient.last_epoch) == (0, 1)
    assert gradient.target_without == pytest.approx(0.003) and gradient.target_with == pytest.approx(0.009)
    assert gradient.ratio == pytest.approx(3.0) and gradient.effect == "increased"
    assert (gradient.typical_ratio, gradient.interval_over, gradient.replicates) == (pytest.approx(3.0), "epochs", 2)
    layers = {layer.layer: layer for layer in gradient.layers}
    assert list(layers) == ["target_layer", "shortcut", "dense"]
    assert layers["shortcut"].mean_norms == (None, 0.5) and layers["shortcut"].with_over_without is None
    assert layers["dense"].with_over_without == pytest.approx(2.0)


def test_gradient_without_a_pair_or_with_a_zero_gradient_has_no_ratio():
    alone = compute_findings({"gradient_norms": pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.1]}))})
    assert (alone.gradient.plain_model, alone.gradient.ratio, alone.gradient.effect) == (None, None, None)
    zero = pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.1]}) + gradient_rows("resnet_plain", {"target_layer": [0.0]}))
    gradient = compute_findings({"gradient_norms": zero}).gradient
    assert (gradient.target_without, gradient.ratio, gradient.effect) == (0.0, None, None)


def test_a_shortcut_that_lowers_the_gradient():
    table = pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.01, 0.011, 0.009]})
                         + gradient_rows("resnet_plain", {"target_layer": [0.02, 0.021, 0.019]}))
    gradient = compute_findings({"gradient_norms": table}).gradient
    assert gradient.effect == "lowered" and gradient.ratio_high < 1


def test_one_measurement_gives_no_interval_and_no_verdict():
    table = pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.01]}) + gradient_rows("resnet_plain", {"target_layer": [0.02]}))
    gradient = compute_findings({"gradient_norms": table}).gradient
    assert (gradient.ratio, gradient.effect, gradient.ratio_low) == (0.5, None, None)


def test_noisy_epochs_whose_interval_holds_one_are_no_effect():
    """The old verdict, a ratio of two means, would say "increased" here; the interval says it cannot tell."""
    table = pd.DataFrame(gradient_rows("resnet", {"target_layer": [0.05, 0.01, 0.04, 0.012]})
                         + gradient_rows("resnet_plain", {"target_layer": [0.01, 0.03, 0.011, 0.02]}))
    gradient = compute_findings({"gradient_norms": table}).gradient
    assert gradient.ratio > 1 and gradient.effect == "unchanged"
    assert gradient.ratio_low < 1 < gradient.ratio_high


def test_with_several_seeds_the_gradient_ratio_is_given_per_seed():
    gradient = compute_findings(replicated_tables()).gradient
    assert gradient.seeds == 3
    assert gradient.target_without == pytest.approx(0.005) and gradient.ratio == pytest.approx(0.010 / 0.005)
    per_seed = gradient.per_seed
    assert per_seed.seeds == SEEDS and per_seed.ratios == pytest.approx((2.75, 2.0, 1.5))
    assert (per_seed.lowest, per_seed.highest, per_seed.increased) == (pytest.approx(1.5), pytest.approx(2.75), 3)
    # Over 3 seeds (t with 2 degrees of freedom) the interval of ratios 2.75, 2.0 and 1.5 still holds 1.
    assert (gradient.interval_over, gradient.replicates, gradient.effect) == ("seeds", 3, "unchanged")
    assert gradient.typical_ratio == pytest.approx((2.75 * 2.0 * 1.5) ** (1 / 3))


def test_a_deep_pair_is_recognised_by_its_plain_variant():
    table = pd.DataFrame(gradient_rows("resnet_deep8", {"target_layer": [0.02, 0.021, 0.019]})
                         + gradient_rows("resnet_plain_deep8", {"target_layer": [0.001, 0.0011, 0.0009]}))
    gradient = compute_findings({"gradient_norms": table}).gradient
    assert (gradient.plain_model, gradient.shortcut_model) == ("resnet_plain_deep8", "resnet_deep8")
    assert gradient.effect == "increased" and gradient.ratio_low > 10
    assert gradient.depth == 8


# target_layer's norms measured at depth 8 on MNIST (benchmarks/results/gradient_depth.md), epochs 0-5, seeds 42-44:
# without shortcuts ~1,100x smaller at initialisation; seed 42's plain network never trains (0 from epoch 1 on).
DEEP8 = {
    "resnet_deep8": {42: [0.728, 0.655, 0.856, 0.425, 0.340, 0.664], 43: [0.942, 0.877, 0.527, 0.284, 0.266, 0.281],
                     44: [0.612, 0.419, 0.388, 0.287, 0.204, 0.382]},
    "resnet_plain_deep8": {42: [0.000681, 0, 0, 0, 0, 0], 43: [0.000687, 0.529, 0.677, 0.604, 0.465, 0.413],
                           44: [0.000601, 1.56, 0.638, 0.618, 0.579, 0.795]},
}
DEEP8_ACCURACY = {"resnet_deep8": [0.9532, 0.9691, 0.9650], "resnet_plain_deep8": [0.1135, 0.9606, 0.9449]}


def deep_tables(norms: dict = DEEP8, accuracies: dict = DEEP8_ACCURACY) -> dict[str, pd.DataFrame]:
    rows = [row for model, seeds in norms.items() for seed, values in seeds.items()
            for row in gradient_rows(model, {"target_layer": values}, seed=seed)]
    summary = pd.concat([summary_table((model, 0.001, accuracy, "gradient", 5)).assign(seed=seed)
                         for model, values in accuracies.items() for seed, accuracy in zip(SEEDS_42, values)])
    return {"gradient_norms": pd.DataFrame(rows), "summary": summary}


SEEDS_42 = (42, 43, 44)


def test_the_verdict_is_given_at_initialisation_apart_from_the_trained_epochs():
    gradient = compute_findings(deep_tables()).gradient
    start, trained = gradient.at_initialisation, gradient.during_training
    # Before training: ratios 1,069, 1,371 and 1,018 in the three seeds; their interval lies far above 1.
    assert (start.first_epoch, start.last_epoch, start.interval_over, start.replicates) == (0, 0, "seeds", 3)
    assert start.typical_ratio == pytest.approx(1143, rel=0.01) and start.effect == "increased"
    assert 700 < start.ratio_low < 800 and 1600 < start.ratio_high < 1800
    # Once trained the two escaped plain networks carry gradients like the residual ones: no significant difference;
    # the stuck seed's zero norms enter no ratio, so the interval is over 2 seeds.
    assert (trained.first_epoch, trained.last_epoch, trained.replicates) == (1, 5, 2)
    assert trained.effect == "unchanged"
    without, with_ = gradient.outcomes
    assert (without.model, without.silent_seeds, with_.silent_seeds) == ("resnet_plain_deep8", (42,), ())
    assert without.accuracies == pytest.approx((0.1135, 0.9606, 0.9449)) and without.lowest_accuracy == 0.1135
    assert with_.mean_accuracy == pytest.approx((0.9532 + 0.9691 + 0.9650) / 3)


def test_pairs_of_several_depths_are_compared_and_the_first_vanishing_depth_named():
    shallow = {model.replace("deep8", "deep2"): {seed: [value * 2 if "plain" in model else value for value in values]
                                                 for seed, values in seeds.items()}
               for model, seeds in DEEP8.items()}
    for seeds in shallow.values():  # at 2 blocks, nothing stuck and the norms nearly equal at initialisation
        for seed, values in seeds.items():
            seeds[seed] = [values[0] if values[0] > 0.1 else 0.7 + seed / 1000] + [value or 0.5 for value in values[1:]]
    tables = deep_tables({**shallow, **DEEP8})
    findings = compute_findings(tables)
    depths = findings.depths
    assert [experiment.depth for experiment in depths.experiments] == [2, 8]
    assert findings.gradient == depths.experiments[0]  # the section's first pair is the shallowest
    assert depths.experiments[0].at_initialisation.effect == "unchanged"
    assert (depths.vanishes_at_initialisation_from, depths.vanishes_during_training_from) == (8, None)
    assert depths.untrained_without_from == 8  # seed 42's plain network ends at chance (0.1135); no residual one does
    assert depths.experiments[1].outcomes[0].chance_seeds == (42,)
    shallow_outcomes = depths.experiments[0].outcomes  # the summary has no runs of this pair: no accuracy to state
    assert [(outcome.silent_seeds, outcome.mean_accuracy) for outcome in shallow_outcomes] == [((), None), ((), None)]


def test_one_pair_makes_no_depth_comparison():
    assert compute_findings(deep_tables()).depths is None
