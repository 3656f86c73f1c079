"""A run's test-set predictions: computed from a model, kept as a table with a stamp saying what made them.

Training predicts the test split for each run it finishes, while the model is in memory: loading it
again in a fresh process costs more than the prediction itself. Evaluation uses those predictions
only when their stamp matches the run's model file, the test split and the code that predicts
(`stamp_matches`), and predicts again otherwise. This module needs NumPy, pandas and pyarrow only
(TensorFlow is imported by `predict` alone), so that training does not depend on the metrics code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mnist_models.atomic_files import atomic_path
from mnist_models.data import Split
from mnist_models.feeding import Feeder
from mnist_models.hashing import file_sha256
from mnist_models.layout import RunFolder

NUM_CLASSES = 10
PREDICT_BATCH = 1000  # predictions do not depend on the batch size; larger batches cost less per image
PROBABILITY_COLUMNS = [f"prob_{digit}" for digit in range(NUM_CLASSES)]
# Softmax outputs in float32 sum to 1 within ~1e-6; anything further off is not a probability row.
ROW_SUM_TOLERANCE = 1e-3
STAMP_KEY = b"mnist_models.prediction_stamp"  # in the Parquet file's key-value metadata


def predict(model, images: np.ndarray) -> np.ndarray:
    """Softmax probabilities (n, 10) of `model` on `images`, in batches of PREDICT_BATCH; chance where undefined."""
    return chance_where_undefined(model.predict(Feeder(images).batches(PREDICT_BATCH), verbose=0))


def chance_where_undefined(probabilities: np.ndarray) -> np.ndarray:
    """Rows that are not numbers (a diverged model's NaN outputs) become uniform: the model knows nothing there.

    Such a model is then scored at chance level (its argmax is class 0, ties going to the first class)
    instead of failing the evaluation; finite rows are returned as they are, bit for bit.
    """
    undefined = ~np.isfinite(probabilities).all(axis=1)
    if not undefined.any():
        return probabilities
    probabilities = np.array(probabilities, copy=True)
    probabilities[undefined] = 1.0 / probabilities.shape[1]
    return probabilities


def write_predictions(path: str | os.PathLike[str], labels: np.ndarray, probabilities: np.ndarray,
                      stamp: Mapping[str, str]) -> None:
    """Write the predictions table (`predictions_frame`) atomically, with `stamp` in its metadata."""
    table = pa.Table.from_pandas(predictions_frame(labels, probabilities), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), STAMP_KEY: json.dumps(dict(stamp))})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


@dataclass(frozen=True)
class KeepPredictions:
    """Training's `after_run`: keep the test split's predictions in the run's folder, stamped with `stamp` and the
    hash of the model file just written: the last validation pass's `probabilities` (equal to `predict`'s, see
    mnist_models.validation), or, where none were given, a prediction with the model in memory."""

    stamp: Mapping[str, str]

    def __call__(self, folder: RunFolder, model, test: Split, log: Callable[[str], None],
                 probabilities: np.ndarray | None = None) -> None:
        probabilities = predict(model, test.images) if probabilities is None else chance_where_undefined(probabilities)
        try:
            write_predictions(folder.predictions, test.labels, probabilities,
                              {**self.stamp, "model": file_sha256(folder.model)})
        except ValueError as error:  # not probabilities (a diverged run's NaNs): evaluation will say so
            log(f"no test predictions kept ({error}); evaluation predicts again")


def read_stamp(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The stamp a predictions file was written with; None if it has none or cannot be read."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        return json.loads(metadata[STAMP_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def stamp_matches(path: str | os.PathLike[str], expected: Mapping[str, str]) -> bool:
    """Whether the predictions at `path` were made from exactly what `expected` names."""
    return read_stamp(path) == dict(expected)


def predictions_frame(labels: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """Tabulate labels, argmax predictions and class probabilities as `label`, `predicted`, `prob_0`..`prob_9`."""
    labels, probabilities = validate_predictions(labels, probabilities)
    frame = pd.DataFrame(
        {
            "label": labels.astype(np.uint8),
            "predicted": probabilities.argmax(axis=1).astype(np.uint8),
        }
    )
    probability_frame = pd.DataFrame(probabilities.astype(np.float32), columns=PROBABILITY_COLUMNS)
    return pd.concat([frame, probability_frame], axis=1)


def probabilities_from_frame(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Recover (labels, probabilities of shape (n, 10)) from a frame made by `predictions_frame`."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame from predictions_frame, got {type(frame).__name__}")
    missing = [column for column in ["label", *PROBABILITY_COLUMNS] if column not in frame.columns]
    if missing:
        raise ValueError(
            f"predictions frame lacks columns {missing}; expected 'label' and 'prob_0'..'prob_9' "
            f"as written by predictions_frame, got {list(frame.columns)}"
        )
    labels = frame["label"].to_numpy()
    probabilities = frame[PROBABILITY_COLUMNS].to_numpy(dtype=np.float32)
    labels, probabilities = validate_predictions(labels, probabilities)
    return labels.astype(np.uint8), probabilities.astype(np.float32)



def validate_predictions(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    if labels.ndim != 1:
        hint = "; pass labels.argmax(axis=1) for one-hot labels" if labels.ndim == 2 else ""
        raise ValueError(f"labels must be a 1-D vector of class indices, got shape {labels.shape}{hint}")
    if labels.size == 0:
        raise ValueError("labels is empty; expected at least one test image")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"labels must be integer class indices 0..{NUM_CLASSES - 1}, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise ValueError(f"labels must be whole numbers 0..{NUM_CLASSES - 1}, got non-integer values")
    out_of_range = (labels < 0) | (labels >= NUM_CLASSES)
    if out_of_range.any():
        bad = np.unique(labels[out_of_range])[:5].tolist()
        raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}, got {bad} at {int(out_of_range.sum())} positions")
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"probabilities must have shape (n, {NUM_CLASSES}) with one column per digit, got {probabilities.shape}"
        )
    if probabilities.shape[0] != labels.size:
        raise ValueError(
            f"labels has {labels.size} entries but probabilities has {probabilities.shape[0]} rows; "
            "expected one probability row per label"
        )
    if not np.issubdtype(probabilities.dtype, np.number) or np.issubdtype(probabilities.dtype, np.complexfloating):
        raise ValueError(f"probabilities must be real numbers, got dtype {probabilities.dtype}")
    probabilities = probabilities.astype(np.float64)
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < 0.0 or probabilities.max() > 1.0:
        raise ValueError("probabilities must be finite values in [0, 1] (softmax outputs, not logits)")
    row_sums = probabilities.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > ROW_SUM_TOLERANCE:
        raise ValueError(
            f"each probability row must sum to 1 (softmax outputs); row {worst} sums to {row_sums[worst]:.6g}"
        )
    return labels.astype(np.int64), probabilities
