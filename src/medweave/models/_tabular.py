"""What every classical baseline shares: the cohort's feature blocks as one matrix, the
target read from the cohort, and the fitted modality and feature lists checked again at
prediction (a model never predicts on columns it was not trained on)."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.models.survival import as_survival

__all__ = [
    "FEATURE_KINDS",
    "CohortBaseline",
    "association",
    "cohort_features",
    "informative_columns",
    "outcome",
    "screen_features",
    "select_modalities",
]

#: the block kinds that hold a feature matrix
FEATURE_KINDS: tuple[str, ...] = ("tabular", "omics", "exposure")


def cohort_features(
    cohort: Cohort,
    modalities: Sequence[str] | None = None,
    *,
    kinds: Sequence[str] = FEATURE_KINDS,
) -> tuple[np.ndarray, list[str]]:
    """The cohort's feature blocks side by side: (n_patients, n_features) float32 and the
    names ``"modality:feature"``.

    ``modalities`` picks blocks by name (in that order); by default every block whose kind
    is in ``kinds``, in the cohort's order. Rows of patients who lack a modality are NaN in
    its columns, whatever the block holds there.
    """
    names = select_modalities(cohort, modalities, kinds=kinds)
    columns: list[np.ndarray] = []
    feature_names: list[str] = []
    for name in names:
        block = cohort.modalities[name]
        x = np.array(block.x, dtype=np.float32, copy=True)
        x[~block.present] = np.nan
        columns.append(x)
        feature_names.extend(f"{name}:{f}" for f in block.feature_names)
    if not feature_names:
        raise InputError(
            f"the modalities {names} hold no features; a baseline needs tabular, omics or "
            "exposure features"
        )
    return np.concatenate(columns, axis=1), feature_names


def select_modalities(
    cohort: Cohort, modalities: Sequence[str] | None, *, kinds: Sequence[str]
) -> list[str]:
    if isinstance(modalities, str):
        modalities = [modalities]
    if modalities is None:
        chosen = [n for n, b in cohort.modalities.items() if b.kind in kinds]
        if not chosen:
            have = {n: b.kind for n, b in cohort.modalities.items()}
            raise InputError(
                f"the cohort has no modality of kind {', '.join(kinds)} (it has {have}); "
                "a baseline needs feature blocks"
            )
        return chosen
    chosen = []
    for name in modalities:
        if name not in cohort.modalities:
            close = difflib.get_close_matches(name, list(cohort.modalities), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"it has {list(cohort.modalities)}"
            raise InputError(f"modalities: the cohort has no modality {name!r}; {hint}")
        kind = cohort.modalities[name].kind
        if kind not in kinds:
            raise InputError(
                f"modalities: {name!r} is {kind} data; baselines use features of kind "
                f"{', '.join(kinds)}"
            )
        if name in chosen:
            raise InputError(f"modalities: {name!r} is listed twice")
        chosen.append(name)
    return chosen


def outcome(cohort: Cohort, y: Any, *, survival: bool) -> Any:
    """The target: given, a column of ``cohort.patients``, or the cohort's own outcome."""
    if survival:
        if y is None:
            missing = {"time", "event"} - set(cohort.patients.columns)
            if missing:
                raise InputError(
                    f"survival: the cohort has no {' and '.join(sorted(missing))} column; "
                    "pass y (time, event)"
                )
            y = cohort.patients[["time", "event"]]
        target = as_survival(y, require_event=False)
        if len(target) != cohort.n:
            raise InputError(f"y has {len(target)} patients but the cohort {cohort.n}")
        return target
    if y is None:
        y = "outcome"
    if isinstance(y, str):
        if y not in cohort.patients.columns:
            raise InputError(
                f"y: the cohort's patients table has no column {y!r} (it has "
                f"{list(cohort.patients.columns)}); pass y as an array or a column name"
            )
        y = cohort.patients[y].to_numpy()
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != cohort.n:
        raise InputError(f"y has shape {arr.shape}; expected ({cohort.n},), one per patient")
    return arr


class CohortBaseline(BaseEstimator):
    """Shared: feature extraction with the fitted modality and feature lists."""

    modalities: Sequence[str] | None
    kinds: Sequence[str]

    def _fit_features(self, cohort: Cohort) -> np.ndarray:
        self.modalities_ = select_modalities(cohort, self.modalities, kinds=self.kinds)
        x, names = cohort_features(cohort, self.modalities_, kinds=self.kinds)
        self.feature_names_ = names
        self.n_features_in_ = len(names)
        return x

    def _features(self, cohort: Cohort) -> np.ndarray:
        if not hasattr(self, "feature_names_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(cohort) first")
        x, names = cohort_features(cohort, self.modalities_, kinds=self.kinds)
        if names != self.feature_names_:
            extra = sorted(set(names) - set(self.feature_names_))
            lost = sorted(set(self.feature_names_) - set(names))
            raise InputError(
                f"{type(self).__name__}: the cohort's features differ from the training "
                f"cohort's ({len(lost)} missing, e.g. {lost[:3]}; {len(extra)} new, e.g. "
                f"{extra[:3]}); build both cohorts from the same cohort.yaml"
                if extra or lost
                else f"{type(self).__name__}: the cohort's features are in another order "
                "than the training cohort's"
            )
        return x


def informative_columns(x: np.ndarray, *, min_observed: int) -> np.ndarray:
    """Indices of the columns a tree can split on: observed in at least ``min_observed``
    rows, and not one value everywhere (a column with one observed value and NaN elsewhere
    is kept: its missingness, e.g. a modality's absence, is the information)."""
    observed = ~np.isnan(x)
    n_obs = observed.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        spread = np.nanmax(x, axis=0) - np.nanmin(x, axis=0)
    varies = (spread > 0) | (n_obs < x.shape[0])
    return np.flatnonzero((n_obs >= max(min_observed, 1)) & varies)


def association(x: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """Per column, |Spearman-like correlation| of its observed values with ``signal``
    (the outcome, or martingale residuals for survival), times sqrt(observed - 1): a
    z-score, so that a column seen in few patients needs a stronger association.

    Ranks make it invariant to monotone transforms (raw counts and log expression alike);
    NaN rows are left out column by column. O(n p log n)."""
    from scipy.stats import rankdata

    x = x.astype(np.float64)
    observed = ~np.isnan(x)
    n_obs = observed.sum(axis=0).astype(np.float64)
    ranks = rankdata(x, axis=0, nan_policy="omit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        ranks = ranks - np.nanmean(ranks, axis=0)
    ranks = np.where(observed, ranks, 0.0)
    s = np.asarray(signal, dtype=np.float64)
    s_sum, s_sq = observed.T @ s, observed.T @ (s * s)
    s_var = s_sq - np.divide(s_sum**2, n_obs, out=np.zeros_like(s_sum), where=n_obs > 0)
    denom = np.sqrt((ranks**2).sum(axis=0) * np.maximum(s_var, 0.0))
    corr = np.divide(ranks.T @ s, denom, out=np.zeros(x.shape[1]), where=denom > 0)
    return np.abs(corr) * np.sqrt(np.maximum(n_obs - 1.0, 0.0))


def screen_features(
    x: np.ndarray,
    names: Sequence[str],
    modalities: Sequence[str],
    *,
    signal: np.ndarray | None,
    max_features: int | None,
    min_observed: int,
) -> np.ndarray:
    """Indices (sorted) of the columns a tree model is given, learned on training rows: the
    informative ones (:func:`informative_columns`), and of a modality with more than
    ``max_features`` of them its ``max_features`` most associated with ``signal``
    (:func:`association`; the most variable ones when ``signal`` is None)."""
    keep = informative_columns(x, min_observed=min_observed)
    if max_features is None:
        return keep
    modality = np.array([n.split(":", 1)[0] for n in names])[keep]
    if any(int((modality == m).sum()) > max_features for m in modalities):
        if signal is not None:
            score = association(x[:, keep], signal)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                score = np.nanvar(x[:, keep].astype(np.float64), axis=0)
        parts = []
        for m in modalities:
            idx = np.flatnonzero(modality == m)
            if idx.size > max_features:
                idx = idx[np.argsort(-score[idx], kind="stable")[:max_features]]
            parts.append(keep[idx])
        keep = np.sort(np.concatenate(parts)) if parts else keep[:0]
    return keep
