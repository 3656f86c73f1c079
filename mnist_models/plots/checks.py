"""The checks every plot function makes of its input: a ValueError that names the table, the column and what
was expected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def require_mapping(mapping: Mapping[str, pd.DataFrame], what: str, key_name: str) -> None:
    """Raise ValueError unless `mapping` is a non-empty dict of `key_name` -> DataFrame."""
    if not isinstance(mapping, Mapping) or len(mapping) == 0:
        raise ValueError(f"{what}: expected a non-empty dict of {key_name} -> DataFrame; got {type(mapping).__name__}")


def refuse_repeated_rows(table: pd.DataFrame, keys: Sequence[str], where: str) -> None:
    """Raise ValueError naming the first row whose `keys` appear more than once (one row per key expected)."""
    duplicated = table.duplicated(list(keys))
    if duplicated.any():
        first = table[duplicated].iloc[0]
        named = ", ".join(f"{key} {first[key]!r}" if isinstance(first[key], str) else f"{key} {first[key]}"
                          for key in keys)
        raise ValueError(f"{where}: {named} appears more than once; expected one row per ({', '.join(keys)})")


def require_frame(frame: pd.DataFrame, columns: Sequence[str], where: str) -> pd.DataFrame:
    """`frame`, checked: a non-empty DataFrame with every one of `columns` (ValueError naming `where` if not)."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame; got {type(frame).__name__}")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{where}: missing columns {missing}; expected {list(columns)}, got {[str(c) for c in frame.columns]}"
        )
    if frame.empty:
        raise ValueError(f"{where}: the table is empty; expected at least one row with columns {list(columns)}")
    return frame


def numeric_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """`column` as floats, every one finite (ValueError naming `where` if not)."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{where}: column {column!r} must hold finite numbers; found missing or non-numeric values")
    return values


def integer_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """`column` as non-negative whole numbers (ValueError naming `where` if not)."""
    values = numeric_column(frame, column, where)
    if np.any(values != np.round(values)) or np.any(values < 0):
        raise ValueError(f"{where}: column {column!r} must hold non-negative whole numbers")
    return values.astype(np.int64)
