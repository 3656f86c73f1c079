"""Section 2's findings: model sizes and the study's parameter formula for each convolution."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mnist_models.findings import compute_findings
from mnist_models.findings.models import ConvolutionCheck, ModelSize


def test_model_sizes_and_the_convolution_formula():
    summary = pd.DataFrame(
        [("cnn", "conv", "Conv2D", "(None, 26, 26, 4)", 40, "3x3x4x1+4", 40.0),
         ("cnn", "wide", "Conv2D", "(None, 24, 24, 8)", 999, "3x3x8x4+8", 296.0),
         ("cnn", "dense", "Dense", "(None, 10)", 46090, "", np.nan),
         ("cnn", "(total)", "", "", 47129, "", np.nan)],
        columns=["model", "layer", "type", "output_shape", "parameters", "study_formula", "formula_parameters"])
    findings = compute_findings({"model_summary": summary})
    assert findings.model_sizes == (ModelSize(model="cnn", layers=3, parameters=47129),)
    assert [(check.layer, check.agrees) for check in findings.convolutions] == [("conv", True), ("wide", False)]
    assert findings.convolutions[1] == ConvolutionCheck(
        model="cnn", layer="wide", output_shape="(None, 24, 24, 8)", study_formula="3x3x8x4+8",
        formula_parameters=296, keras_parameters=999, agrees=False)
