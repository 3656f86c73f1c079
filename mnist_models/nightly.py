"""The nightly gate: a seed per night, the accuracy history, and the noise-aware decision on each champion.

Each night trains the sweep with a new seed and appends one history row per sweep run. Per model, `gate`
sets tonight's representative run beside its champion (McNemar's test on the same test images) and beside
the past nights of the history (their prediction bound), and returns the one decision type,
`records.ChampionDecision`. The champions themselves are `mnist_models.champions`; what each night used and
what retention keeps, `mnist_models.retention`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mnist_models import metrics
from mnist_models.records import ChampionDecision
from mnist_models.replicates import ALPHA, CONFIDENCE, check_level, spread

HISTORY_COLUMNS = ["date", "flow_run_id", "model", "learning_rate", "epochs", "seed", "accuracy",
                   "accuracy_low", "accuracy_high", "map", "run_id"]
_RUN_COLUMNS = HISTORY_COLUMNS[2:]


def nightly_seed(date: dt.date) -> int:
    """A new, reproducible seed for each night: the date as YYYYMMDD."""
    return int(date.strftime("%Y%m%d"))



# ---- the history --------------------------------------------------------------------------------------------

def history_rows(sweep: pd.DataFrame, date: dt.date, flow_run_id: str) -> pd.DataFrame:
    """One history row per run of tonight's learning-rate sweep (summary rows; other roles are left out)."""
    missing = [column for column in [*_RUN_COLUMNS, "role"] if column not in sweep.columns]
    if missing:
        raise ValueError(f"sweep runs lack the column(s) {', '.join(missing)}; expected the summary table's "
                         f"columns {', '.join([*_RUN_COLUMNS, 'role'])}")
    rows = sweep.loc[sweep["role"] == "sweep", _RUN_COLUMNS].reset_index(drop=True)
    rows.insert(0, "flow_run_id", flow_run_id)
    rows.insert(0, "date", date.isoformat())
    return rows


def append_history(existing: pd.DataFrame | None, new_rows: pd.DataFrame) -> pd.DataFrame:
    """History with tonight's rows in, in date order; a rerun of a night replaces that night's rows of its models."""
    if existing is None or existing.empty:
        return new_rows.reset_index(drop=True)
    tonight = pd.MultiIndex.from_frame(new_rows[["date", "model"]])
    kept = existing[~pd.MultiIndex.from_frame(existing[["date", "model"]]).isin(tonight)]
    return pd.concat([kept, new_rows], ignore_index=True).sort_values("date", kind="stable", ignore_index=True)


def past_accuracies(history: pd.DataFrame | None, model: str, learning_rate: float, epochs: int,
                    before: dt.date) -> pd.Series:
    """One accuracy per night before `before` of `model` at this learning rate and epoch count, indexed by date,
    oldest first: the run the gate tested that night, else the lower median of the night's runs."""
    if history is None or history.empty:
        history = pd.DataFrame(columns=HISTORY_COLUMNS)
    rows = history[(history["model"] == model) & np.isclose(history["learning_rate"], learning_rate)
                   & (history["epochs"] == epochs) & (history["date"].astype(str) < before.isoformat())]
    values = {date: _night_value(night) for date, night in rows.groupby(rows["date"].astype(str), sort=True)}
    return pd.Series(list(values.values()), index=pd.Index(list(values), dtype=object, name="date"), dtype=float,
                     name="accuracy")


def _night_value(night: pd.DataFrame) -> float:
    gated = night[night["decision"].notna()] if "decision" in night.columns else night.iloc[:0]
    accuracies = sorted((gated if len(gated) else night)["accuracy"].astype(float))
    return accuracies[(len(accuracies) - 1) // 2]


# ---- the noise-aware gate -----------------------------------------------------------------------------------

MIN_HISTORY_NIGHTS = 3  # fewer nights give no usable prediction interval
HISTORY_WINDOW = 30  # a night is set beside at most this many recent nights (a slow drift moves the interval along)
PROMOTION_WINDOW = 7  # the champion is set beside at most this many recent nights since its promotion


def prediction_bound(accuracies: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """Lower end of the two-sided prediction interval for one more night: mean − t·std·√(1 + 1/N); None below
    MIN_HISTORY_NIGHTS nights."""
    from scipy import stats  # imported where used: a cached rerun computes no statistic

    check_level(confidence, "confidence")
    values = _history_values(accuracies)
    if values.size < MIN_HISTORY_NIGHTS:
        return None
    quantile = stats.t.ppf(1 - (1 - confidence) / 2, values.size - 1)
    return float(values.mean() - quantile * values.std(ddof=1) * math.sqrt(1 + 1 / values.size))


def gate(model: str, tonight_correct: np.ndarray, champion_correct: np.ndarray | None,
         history_accuracies: Sequence[float], tolerance: float, alpha: float = ALPHA,
         nights_since_champion: int = 0) -> ChampionDecision:
    """Decide on tonight's run against its champion (McNemar on the same test images) and the past nights.

    Two kinds of noise, two tests: McNemar's test tells whether tonight's model and the champion differ on these
    test images; the past nights tell how far a model moves with the training seed alone. With d = tonight's
    accuracy − the champion's and p McNemar's p-value:
    - MIN_HISTORY_NIGHTS past nights or more (the last HISTORY_WINDOW count): the night fails when tonight is
      below their prediction bound AND d < 0 with p < alpha. Fewer: when d < −tolerance with p < alpha.
    - The champion is replaced when d > 0 with p < alpha AND the champion is below the prediction bound of the
      nights since its promotion (the last PROMOTION_WINDOW of them, at least MIN_HISTORY_NIGHTS): the runs
      now trained are better than it. A significant gain alone would ratchet the champion up to the luckiest
      seed of many nights, and ordinary nights would then look like drops.
    A drop that one test sees and the other does not is a warning: the night passes. No champion yet: tonight's
    run is the first. `history_accuracies` are the past nights, oldest first, tonight not included; the last
    `nights_since_champion` of them came after the champion's promotion.
    """
    check_level(alpha, "alpha")
    if isinstance(tolerance, bool) or not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise ValueError(f"tolerance must be an accuracy drop in [0, 1) (e.g. 0.005 for half a point), "
                         f"got {tolerance!r}")
    values = _history_values(history_accuracies)
    if isinstance(nights_since_champion, bool) or not 0 <= nights_since_champion <= values.size:
        raise ValueError(f"nights_since_champion must count some of the {values.size} past nights (0 to "
                         f"{values.size}), got {nights_since_champion!r}")
    tonight = _correct_vector(tonight_correct, "tonight_correct")
    accuracy = float(tonight.mean())
    history = _history(values[-HISTORY_WINDOW:])
    if champion_correct is None:
        return ChampionDecision(model=model, new_accuracy=accuracy, champion_accuracy=None, promoted=True,
                                regressed=False, **history, rule="no champion yet: tonight's run becomes the first",
                                message=f"{model}: first champion, accuracy {accuracy:.4f}{_past_text(history)}")
    champion = _correct_vector(champion_correct, "champion_correct")
    result = metrics.mcnemar_test(tonight, champion)
    difference = (result.only_a_correct - result.only_b_correct) / tonight.size  # exact, unlike a − b in floats
    significant = result.p_value < alpha
    since = values[values.size - min(nights_since_champion, PROMOTION_WINDOW):]
    champion_bound = prediction_bound(since)
    by_interval = history["interval_low"] is not None
    low = accuracy < history["interval_low"] if by_interval else difference < -tolerance
    regressed = difference < 0 and significant and low
    decision = ChampionDecision(
        model=model, new_accuracy=accuracy, champion_accuracy=float(champion.mean()),
        promoted=difference > 0 and significant and champion_bound is not None and champion.mean() < champion_bound,
        regressed=regressed, warning=difference < 0 and not regressed and (significant or low),
        p_value=result.p_value, difference=difference, only_new_correct=result.only_a_correct,
        only_champion_correct=result.only_b_correct, **history, champion_bound=champion_bound,
        rule=_rule(by_interval, tolerance, alpha), message="")
    verdict = _verdict_text(decision, significant, low, since.size, by_interval, tolerance)
    message = f"{model}: {verdict}; {_test_text(decision)}{_history_text(history)}"
    return decision.model_copy(update={"message": message})


def _rule(by_interval: bool, tolerance: float, alpha: float) -> str:
    promote = (f"promote on a significant gain when the champion is below what the nights since it predict "
               f"(at least {MIN_HISTORY_NIGHTS})")
    if by_interval:
        return (f"fail when below the past nights' {CONFIDENCE:.0%} prediction bound and significantly below the "
                f"champion (McNemar p < {alpha:g}); {promote}")
    return (f"fewer than {MIN_HISTORY_NIGHTS} past nights: fail on a significant drop (McNemar p < {alpha:g}) of "
            f"more than {tolerance * 100:.2f} points; {promote}")


def _verdict_text(decision: ChampionDecision, significant: bool, low: bool, since: int, by_interval: bool,
                  tolerance: float) -> str:
    beyond, within = (("below what the past nights predict", "within what the past nights predict") if by_interval
                      else (f"more than {tolerance * 100:.2f} points lower",
                            f"within the {tolerance * 100:.2f}-point tolerance"))
    if decision.promoted:
        return (f"new champion, significantly better, and the champion {decision.champion_accuracy:.4f} is below the "
                f"{decision.champion_bound:.4f} that the {since} nights since it predict")
    if decision.regressed:
        return f"champion kept; REGRESSION: {beyond} and significantly worse than the champion"
    if decision.warning:
        return (f"champion kept; WARNING: {beyond}, but not significantly worse than the champion" if low else
                f"champion kept; significantly worse than the champion, but {within}")
    if decision.difference > 0 and significant:
        if decision.champion_bound is None:
            return (f"champion kept; significantly better tonight, but {since} night(s) since the champion are too "
                    "few to tell a better model from a lucky seed")
        return (f"champion kept; significantly better tonight, but the champion is within the {since} nights since it "
                f"(bound {decision.champion_bound:.4f}): a lucky seed, not a better model")
    return "champion kept, not significantly better" if decision.difference > 0 else "champion kept, not more accurate"


def _test_text(decision: ChampionDecision) -> str:
    return (f"accuracy {decision.new_accuracy:.4f} vs champion {decision.champion_accuracy:.4f}, "
            f"{decision.difference * 100:+.2f} points, McNemar p={decision.p_value:.2g} (right only tonight on "
            f"{decision.only_new_correct} images, only the champion on {decision.only_champion_correct})")


def _history_values(accuracies: Sequence[float]) -> np.ndarray:
    values = np.asarray(accuracies, dtype=float)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError(f"history_accuracies must be a 1-D sequence of finite past accuracies, got {values!r}")
    return values


def _history(values: np.ndarray) -> dict:
    """The nights' count, mean, spread and prediction bound, as ChampionDecision fields."""
    if values.size == 0:
        return {"nights": 0, "history_mean": None, "history_std": None, "interval_low": None}
    mean, deviation = spread(values)[:2]
    return {"nights": int(values.size), "history_mean": mean,
            "history_std": None if math.isnan(deviation) else deviation, "interval_low": prediction_bound(values)}


def _history_text(history: Mapping) -> str:
    if history["nights"] < MIN_HISTORY_NIGHTS:
        return f"; {history['nights']} past night(s), fewer than {MIN_HISTORY_NIGHTS}: the tolerance rule decides"
    return f"{_past_text(history)} predict at least {history['interval_low']:.4f}"


def _past_text(history: Mapping) -> str:
    if not history["nights"]:
        return ""
    deviation = f" ± {history['history_std']:.4f}" if history["history_std"] is not None else ""
    return f"; past {history['nights']} night(s) {history['history_mean']:.4f}{deviation}"


def promotion_reason(decision: ChampionDecision) -> str:
    """Why a promoted run became champion, as the champion's record keeps it."""
    if decision.champion_accuracy is None:
        return "first champion"
    return (f"significantly better: {decision.difference * 100:+.2f} points, McNemar p={decision.p_value:.2g}; the "
            f"champion's {decision.champion_accuracy:.4f} is below the {decision.champion_bound:.4f} that the nights "
            "since it predict")


def _correct_vector(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype != np.bool_ or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D boolean vector (label == predicted per test image), "
                         f"got dtype {array.dtype} with shape {array.shape}")
    return array
