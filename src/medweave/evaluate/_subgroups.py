"""Metrics within subgroups of patients (age band, sex, site, ...), with bootstrap intervals."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from medweave.errors import InputError
from medweave.evaluate._bootstrap import TASK_METRICS, metric_table
from medweave.evaluate._metrics import default_horizons

__all__ = ["age_bands", "subgroup_table"]

MISSING_LEVEL = "missing"


def subgroup_table(
    task: str,
    groups: pd.DataFrame,
    arrays: Mapping[str, np.ndarray],
    *,
    min_n: int = 30,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    context: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every metric of ``task`` within each level of each grouping variable.

    ``groups`` has one column per grouping variable and one row per patient, in the order
    of ``arrays`` (see :func:`~medweave.evaluate.metric_table`). Returns one entry per
    (variable, level): ``{"variable", "level", "n", "n_events", "metrics": {metric:
    {"estimate", "ci_low", "ci_high"}}}``. No level is dropped: a level with fewer than
    ``min_n`` patients is listed with every metric None, and metrics undefined within a
    level (e.g. AUROC without events) are None. Missing values form the level "missing".
    Levels follow a categorical column's order, else sorted order.

    For survival, the horizons and censoring distribution are fixed from all patients
    (unless given in ``context``), so every level is evaluated at the same times.
    """
    if task not in TASK_METRICS:
        raise InputError(
            f"subgroup_table: unknown task {task!r}; expected one of {sorted(TASK_METRICS)}"
        )
    if not isinstance(groups, pd.DataFrame):
        raise InputError(
            f"subgroup_table: groups must be a pandas DataFrame (one column per grouping "
            f"variable), got {type(groups).__name__}"
        )
    outcome = "y" if task == "binary" else "event"
    if outcome not in arrays:
        raise InputError(f"subgroup_table: arrays lack {outcome!r} for a {task} task")
    events = np.asarray(arrays[outcome]).astype(bool)
    n = len(events)
    if len(groups) != n:
        raise InputError(
            f"subgroup_table: groups has {len(groups)} rows but arrays have {n} patients; "
            "they must be the same patients in the same order"
        )
    ctx = dict(context or {})
    if task == "survival":
        ctx = _fixed_survival_context(arrays, ctx)
    rows: list[dict[str, Any]] = []
    for variable in groups.columns:
        column = groups[variable]
        for label, mask in _levels(column):
            size = int(mask.sum())
            entry: dict[str, Any] = {
                "variable": str(variable),
                "level": label,
                "n": size,
                "n_events": int(events[mask].sum()),
            }
            if size < min_n:
                entry["metrics"] = _empty(TASK_METRICS[task])
            else:
                subset = {k: np.asarray(v)[mask] for k, v in arrays.items()}
                entry["metrics"] = metric_table(
                    task, subset, n_boot=n_boot, level=level, seed=seed, context=ctx
                )
            rows.append(entry)
    return rows


def age_bands(
    age_years: npt.ArrayLike, *, edges: Sequence[int] = (50, 65, 80)
) -> pd.Categorical[str]:
    """Age bands as ordered labels: with the default edges "<50", "50-64", "65-79", "80+".

    An age falls in the band whose lower edge it reaches (64.9 is "50-64"); missing ages
    stay missing (NaN), which :func:`subgroup_table` reports as the level "missing".
    """
    age = np.asarray(age_years, dtype=np.float64)
    cuts = [int(e) for e in edges]
    if not cuts or any(b <= a for a, b in itertools.pairwise(cuts)):
        raise InputError(f"age_bands: edges must be increasing integers, got {list(edges)}")
    labels = [f"<{cuts[0]}"]
    labels += [f"{a}-{b - 1}" for a, b in itertools.pairwise(cuts)]
    labels += [f"{cuts[-1]}+"]
    codes = np.searchsorted(np.asarray(cuts, dtype=np.float64), age, side="right")
    codes = np.where(np.isnan(age), -1, codes)
    return pd.Categorical.from_codes(codes, categories=pd.Index(labels), ordered=True)


def _levels(column: pd.Series) -> list[tuple[str, np.ndarray]]:
    missing = column.isna().to_numpy()
    if isinstance(column.dtype, pd.CategoricalDtype):
        values = list(column.cat.categories)
    else:
        values = sorted(column[~missing].unique().tolist(), key=_sort_key)
    out = [(str(v), (column == v).to_numpy() & ~missing) for v in values]
    if missing.any():
        out.append((MISSING_LEVEL, missing))
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float | np.number) else (1, str(value))


def _fixed_survival_context(
    arrays: Mapping[str, np.ndarray], ctx: dict[str, Any]
) -> dict[str, Any]:
    """Horizons and censoring data of the whole cohort, unless the caller fixed them."""
    for key in ("time", "event"):
        if key not in arrays:
            raise InputError(f"subgroup_table: arrays lack {key!r} for a survival task")
    if "times" not in ctx:
        ctx["times"] = default_horizons(arrays["time"], arrays["event"])
    if "train_time" not in ctx and "train_event" not in ctx:
        ctx["train_time"], ctx["train_event"] = arrays["time"], arrays["event"]
    return ctx


def _empty(names: Sequence[str]) -> dict[str, dict[str, float | None]]:
    return {name: {"estimate": None, "ci_low": None, "ci_high": None} for name in names}
