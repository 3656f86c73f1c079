"""Numbers a table may lack: NaN becomes None, so that findings round-trip through JSON."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from pydantic import BeforeValidator


def none_if_missing(value: object) -> object:
    """None for a missing value (None or NaN), else the value itself."""
    return None if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else value


# A number a table may lack: NaN becomes None.
Number = Annotated[float | None, BeforeValidator(none_if_missing)]
Whole = Annotated[int | None, BeforeValidator(none_if_missing)]


def signed_gap(accuracy: object, other: object) -> float | None:
    """accuracy − other (the study's, the champion's), or None when either is missing."""
    accuracy, other = none_if_missing(accuracy), none_if_missing(other)
    return None if accuracy is None or other is None else float(accuracy) - float(other)
