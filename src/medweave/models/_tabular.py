"""What every classical baseline shares: the cohort's feature blocks as one matrix, the
target read from the cohort, and the fitted modality and feature lists checked again at
prediction (a model never predicts on columns it was not trained on)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.models.survival import as_survival

__all__ = ["FEATURE_KINDS", "CohortBaseline", "cohort_features", "outcome", "select_modalities"]

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
