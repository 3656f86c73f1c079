"""Section 3's findings: target_layer's gradient with over without the shortcut, also per seed."""

from __future__ import annotations

import pandas as pd
import pytest

from mnist_models.findings import compute_findings
from tests.mnist_models.findings.tables import SEEDS, gradient_rows, replicated_tables


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
