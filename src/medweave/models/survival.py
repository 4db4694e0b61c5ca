"""The survival target: time (days from the index date, >= 0) and event (True = event seen).

Every survival input goes through :func:`as_survival`, the one validator: models, tasks,
baselines and metrics all call it, so an array, a DataFrame or a tuple is checked the same
way everywhere. Constructing :class:`SurvivalTarget` directly runs the same checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medweave.errors import InputError

__all__ = ["SurvivalTarget", "as_survival"]

_ACCEPTED = (
    "a SurvivalTarget, a record array or DataFrame with fields 'time' and 'event', "
    "an (n, 2) array [time, event], or a tuple (time, event)"
)


@dataclass(frozen=True, eq=False)
class SurvivalTarget:
    """Right-censored survival outcomes of ``n`` patients.

    ``time`` is float64 days (finite, >= 0): time to the event, or to censoring when
    ``event`` is False. ``event`` is bool.
    """

    time: np.ndarray
    event: np.ndarray

    def __post_init__(self) -> None:
        time, event = _check(self.time, self.event, what="survival target")
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "event", event)

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def __getitem__(self, rows: Any) -> SurvivalTarget:
        """The target of a subset of patients (positions, a slice or a boolean mask)."""
        return SurvivalTarget(time=self.time[rows], event=self.event[rows])

    def __repr__(self) -> str:
        return f"SurvivalTarget({len(self)} patients, {self.n_events} events)"

    @property
    def n_events(self) -> int:
        return int(self.event.sum())

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame with columns ``time`` and ``event``."""
        return pd.DataFrame({"time": self.time, "event": self.event})

    def to_structured(self) -> np.ndarray:
        """A record array with fields ``event`` (bool) and ``time`` (float64), as
        scikit-survival expects."""
        out = np.empty(len(self), dtype=[("event", bool), ("time", np.float64)])
        out["event"] = self.event
        out["time"] = self.time
        return out


def as_survival(y: Any, *, require_event: bool = True) -> SurvivalTarget:
    """Validate ``y`` and return it as a :class:`SurvivalTarget`.

    Accepts a :class:`SurvivalTarget`; a structured/record array, DataFrame or mapping with
    fields ``time`` and ``event`` (other fields ignored); an (n, 2) array whose columns are
    [time, event]; or a tuple ``(time, event)``. Raises :class:`InputError` naming the
    problem: negative, infinite or missing times, an event indicator that is not 0/1 or
    true/false, time and event of different lengths, no patients, or (with
    ``require_event``, the default) no event at all, from which no survival model can learn.
    """
    if isinstance(y, SurvivalTarget):
        target = y
    else:
        time, event = _split(y)
        target = SurvivalTarget(time=time, event=event)
    if require_event and target.n_events == 0:
        raise InputError(
            f"survival target: no events among {len(target)} patients (every time is "
            "censored); a survival model needs at least one observed event"
        )
    return target


def _split(y: Any) -> tuple[Any, Any]:
    """Pull time and event out of any accepted form (checked later by ``_check``)."""
    if isinstance(y, tuple):
        if len(y) != 2:
            raise InputError(f"survival target: a tuple must be (time, event), got {len(y)} items")
        return y[0], y[1]
    if isinstance(y, pd.DataFrame):
        cols = _time_event_names(list(map(str, y.columns)), kind="DataFrame columns")
        return y.iloc[:, cols[0]].to_numpy(), y.iloc[:, cols[1]].to_numpy()
    if isinstance(y, Mapping):
        keys = [str(k) for k in y]
        cols = _time_event_names(keys, kind="keys")
        values = list(y.values())
        return values[cols[0]], values[cols[1]]
    if isinstance(y, str | bytes) or y is None:
        raise InputError(f"survival target: got {type(y).__name__}; expected {_ACCEPTED}")
    arr = np.asarray(y)
    if arr.dtype.names is not None:
        cols = _time_event_names(list(arr.dtype.names), kind="record fields")
        return arr[arr.dtype.names[cols[0]]], arr[arr.dtype.names[cols[1]]]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(
            f"survival target: array of shape {arr.shape}; expected (n, 2) columns "
            f"[time, event], or {_ACCEPTED}"
        )
    return arr[:, 0], arr[:, 1]


def _time_event_names(names: list[str], *, kind: str) -> tuple[int, int]:
    lower = [n.lower() for n in names]
    missing = [f for f in ("time", "event") if f not in lower]
    if missing:
        raise InputError(
            f"survival target: {kind} {names} lack {' and '.join(map(repr, missing))}; "
            "name the columns 'time' (days) and 'event' (0/1)"
        )
    return lower.index("time"), lower.index("event")


def _check(time: Any, event: Any, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The checks behind every SurvivalTarget: returns (time float64, event bool)."""
    t = _as_days(time, what=what)
    e_raw = np.asarray(event)
    if t.ndim != 1:
        raise InputError(f"{what}: time must be one value per patient, got shape {t.shape}")
    if e_raw.ndim != 1:
        raise InputError(f"{what}: event must be one value per patient, got shape {e_raw.shape}")
    if t.shape[0] != e_raw.shape[0]:
        raise InputError(
            f"{what}: time has {t.shape[0]} values but event has {e_raw.shape[0]}; "
            "they must be the same patients"
        )
    if t.shape[0] == 0:
        raise InputError(f"{what}: no patients")
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{what}: time has {int(bad.sum())} missing or infinite values (first at "
            f"position {i}: {t[i]}); every patient needs a time to event or censoring"
        )
    neg = t < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise InputError(
            f"{what}: time has {int(neg.sum())} negative values (first at position {i}: "
            f"{t[i]}); times are days from the index date and must be >= 0"
        )
    return t, _as_event(e_raw, what=what)


def _as_days(time: Any, *, what: str) -> np.ndarray:
    arr = np.asarray(time)
    if arr.dtype.kind == "m":  # timedelta: convert to days
        return arr.astype("timedelta64[ns]").astype(np.float64) / 86_400e9
    if arr.dtype.kind not in "biuf":
        try:
            return np.asarray(pd.to_numeric(pd.Series(arr.ravel()))).astype(np.float64)
        except (ValueError, TypeError):
            raise InputError(
                f"{what}: time must be numeric days, got values like {arr.ravel()[:3].tolist()}"
            ) from None
    return arr.astype(np.float64)


def _as_event(e: np.ndarray, *, what: str) -> np.ndarray:
    if e.dtype == bool:
        return e.copy()
    if e.dtype.kind in "iuf":
        ok = np.isin(e, (0, 1))
    else:
        ok = np.array([_is_binary(v) for v in e.tolist()], dtype=bool)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise InputError(
            f"{what}: event has {int((~ok).sum())} values that are not 0/1 or true/false "
            f"(first at position {i}: {_scalar(e[i])!r}); event is 1 when the event was observed, "
            "0 when censored"
        )
    return e.astype(np.float64).astype(bool)


def _is_binary(v: Any) -> bool:
    if isinstance(v, bool | np.bool_):
        return True
    return isinstance(v, int | float | np.number) and v in (0, 1)


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
