"""Section 2, Models: each model's size, and the study's parameter formula for every convolution."""

from __future__ import annotations

import pandas as pd

from mnist_models.records import Record


class ModelSize(Record):
    """A model's layer count (its total row not counted) and its trainable parameters."""

    model: str
    layers: int
    parameters: int


class ConvolutionCheck(Record):
    """One convolution layer's parameter count by the study's formula beside Keras's."""

    model: str
    layer: str
    output_shape: str
    study_formula: str
    formula_parameters: int
    keras_parameters: int
    agrees: bool


def model_sizes(summary: pd.DataFrame) -> tuple[ModelSize, ...]:
    """Per model of the model_summary table: its layer count and trainable parameters."""
    sizes = []
    for model, rows in summary.groupby("model", sort=False):
        is_total = rows["layer"].astype(str) == "(total)"
        total = rows.loc[is_total, "parameters"]
        parameters = int(total.iloc[0]) if len(total) else int(rows.loc[~is_total, "parameters"].sum())
        sizes.append(ModelSize(model=str(model), layers=int((~is_total).sum()), parameters=parameters))
    return tuple(sizes)


def convolutions(summary: pd.DataFrame) -> tuple[ConvolutionCheck, ...]:
    """Every convolution layer of the model_summary table, the study's formula beside Keras's count."""
    layers = summary[summary["formula_parameters"].notna() & (summary["layer"].astype(str) != "(total)")]
    return tuple(
        ConvolutionCheck(model=str(row.model), layer=str(row.layer), output_shape=str(row.output_shape),
                         study_formula=str(row.study_formula), formula_parameters=int(row.formula_parameters),
                         keras_parameters=int(row.parameters), agrees=int(row.formula_parameters) == int(row.parameters))
        for row in layers.itertuples())
