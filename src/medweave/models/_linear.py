"""Elastic-net peers on the concatenated features: logistic (binary) and Cox (survival).

The models a reviewer expects beside a multimodal network: a penalised linear model on
every feature block side by side, its penalty chosen by cross-validation inside the
training cohort. Both share one preparation, learned on the training cohort only
(:class:`LinearPrep`): per feature the median fills NaN; a missing-value indicator is
added per distinct missingness pattern (a modality absent for a patient gives one
indicator, not one per feature); then every column is standardised so that the penalty
treats them alike. A bundle is ``model.safetensors`` (arrays) and ``bundle.json``
(parameters, feature schema, the chosen penalty) — no pickle; the fitted and the reloaded
model predict through the same arithmetic, so their predictions are identical.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from medweave._atomic import atomic_dir
from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.models._bundle import jsonable, read_bundle_meta
from medweave.models._coxnet import RiskSets, choose_penalty, fit_path
from medweave.models._tabular import FEATURE_KINDS, CohortBaseline, outcome
from medweave.models.survival import as_survival
from medweave.models.tasks import BinaryTask, Task, c_index

__all__ = ["CoxNetBaseline", "ElasticNetBaseline", "LinearPrep"]

ELASTICNET_FORMAT = "medweave-elasticnet/1"
COXNET_FORMAT = "medweave-coxnet/1"
#: how the logistic model's inner cross-validation scores a penalty (scikit-learn's names)
SCORINGS = ("neg_log_loss", "roc_auc", "neg_brier_score")


class LinearPrep:
    """Median imputation, deduplicated missing-value indicators and standardisation of the
    concatenated features, learned on the training rows.

    ``keep`` are the feature columns used (observed at least once, within each modality's
    ``max_features`` most variable); ``indicators`` index kept columns whose missingness
    pattern is new; ``columns`` name the design's columns after constant ones are dropped.
    """

    def __init__(self, arrays: dict[str, np.ndarray], columns: list[str]) -> None:
        self.keep = arrays["keep"].astype(np.int64)
        self.medians = arrays["medians"].astype(np.float64)
        self.indicators = arrays["indicators"].astype(np.int64)
        self.used = arrays["used"].astype(bool)
        self.mean = arrays["mean"].astype(np.float64)
        self.scale = arrays["scale"].astype(np.float64)
        self.columns = columns

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        names: Sequence[str],
        modalities: Sequence[str],
        *,
        max_features: int | None,
        missing_indicators: bool,
    ) -> LinearPrep:
        x = x.astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            var = np.nanvar(x, axis=0)
        observed = ~np.isnan(var)
        modality = np.array([n.split(":", 1)[0] for n in names])
        keep_parts: list[np.ndarray] = []
        for name in modalities:
            idx = np.flatnonzero((modality == name) & observed)
            if max_features is not None and idx.size > max_features:
                idx = np.sort(idx[np.argsort(-var[idx], kind="stable")[:max_features]])
            keep_parts.append(idx)
        keep = np.concatenate(keep_parts) if keep_parts else np.zeros(0, dtype=np.int64)
        kept = x[:, keep]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(kept, axis=0) if kept.shape[1] else np.zeros(0)
        missing = np.isnan(kept)
        indicators = np.zeros(0, dtype=np.int64)
        if missing_indicators and missing.any():
            cols = np.flatnonzero(missing.any(axis=0))
            _, first = np.unique(missing[:, cols].T, axis=0, return_index=True)
            indicators = cols[np.sort(first)]
        kept_names = [names[int(i)] for i in keep]
        indicator_names = [
            _indicator_name(kept_names, missing, int(i), modality[keep]) for i in indicators
        ]
        full = _expand(kept, medians, indicators)
        mean, scale = full.mean(axis=0), full.std(axis=0)
        used = scale > 1e-12
        columns = [n for n, u in zip(kept_names + indicator_names, used, strict=True) if u]
        if not columns:
            raise InputError("the features are all constant in the training cohort")
        arrays = {
            "keep": keep,
            "medians": medians,
            "indicators": indicators,
            "used": used,
            "mean": mean[used],
            "scale": scale[used],
        }
        return cls(arrays, columns)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """The standardised design (n, len(columns)) of the full feature matrix ``x``."""
        full = _expand(x[:, self.keep].astype(np.float64), self.medians, self.indicators)
        return (full[:, self.used] - self.mean) / self.scale

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "keep": self.keep,
            "medians": self.medians,
            "indicators": self.indicators,
            "used": self.used.astype(np.uint8),
            "mean": self.mean,
            "scale": self.scale,
        }


def _expand(kept: np.ndarray, medians: np.ndarray, indicators: np.ndarray) -> np.ndarray:
    missing = np.isnan(kept)
    filled = np.where(missing, medians[np.newaxis, :], kept)
    return np.concatenate([filled, missing[:, indicators].astype(np.float64)], axis=1)


def _indicator_name(names: list[str], missing: np.ndarray, i: int, modality: np.ndarray) -> str:
    """``"omics (missing)"`` when every kept feature of the modality shares the pattern
    (the modality absent), else ``"labs:crp (missing)"``."""
    same = (missing == missing[:, [i]]).all(axis=0)
    own = modality == modality[i]
    return f"{modality[i]} (missing)" if same[own].all() else f"{names[i]} (missing)"


def _write_bundle(
    path: str | os.PathLike[str],
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    *,
    overwrite: bool,
) -> Path:
    from safetensors.numpy import save_file

    out = Path(path)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_file(
            {k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / "model.safetensors")
        )
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=2))
    return out


def _read_bundle(
    path: str | os.PathLike[str], *, fmt: str, what: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    meta = read_bundle_meta(path, fmt=fmt, what=what)
    tensors = Path(path) / "model.safetensors"
    if not tensors.is_file():
        raise InputError(f"{path}: the {what} bundle has no model.safetensors")
    return meta, dict(load_file(str(tensors)))


class _LinearBaseline(CohortBaseline):
    """Shared: the preparation, the design of a cohort, and the fitted-state check."""

    max_features: int | None
    missing_indicators: bool
    inner_folds: int
    l1_ratios: Sequence[float]

    def _check_params(self) -> None:
        name = type(self).__name__
        if self.max_features is not None and self.max_features < 1:
            raise InputError(f"{name}: max_features must be >= 1 or null, got {self.max_features}")
        if self.inner_folds < 2:
            raise InputError(f"{name}: inner_folds must be >= 2, got {self.inner_folds}")
        for r in self.l1_ratios:
            if not 0.0 <= r <= 1.0:
                raise InputError(f"{name}: l1_ratios must lie in [0, 1], got {r}")

    def _fit_design(self, cohort: Cohort) -> np.ndarray:
        x = self._fit_features(cohort)
        try:
            self.prep_ = LinearPrep.fit(
                x,
                self.feature_names_,
                self.modalities_,
                max_features=self.max_features,
                missing_indicators=self.missing_indicators,
            )
        except InputError as exc:
            raise InputError(f"{type(self).__name__}: {exc}") from None
        self.columns_ = list(self.prep_.columns)
        return self.prep_.transform(x)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(cohort) first")

    def transform(self, cohort: Cohort) -> np.ndarray:
        """The model's standardised design matrix for ``cohort`` (columns ``columns_``)."""
        self._check_fitted()
        return self.prep_.transform(self._features(cohort))

    def _inner_folds(self, smallest: int, *, what: str) -> int:
        """As many inner folds as asked, or as the smaller class (or events) allows."""
        folds = min(self.inner_folds, smallest)
        if folds < 2:
            raise InputError(
                f"{type(self).__name__}: the training cohort has {smallest} {what}; choosing "
                "the penalty by cross-validation needs at least 2"
            )
        return folds

    def _meta(self, fmt: str) -> dict[str, Any]:
        return {
            "format": fmt,
            "params": jsonable(self.get_params()),
            "modalities": list(self.modalities_),
            "feature_names": list(self.feature_names_),
            "columns": list(self.columns_),
            "chosen": {"l1_ratio": self.l1_ratio_, "penalty": self.penalty_},
        }

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.modalities_ = list(meta["modalities"])
        self.feature_names_ = list(meta["feature_names"])
        self.n_features_in_ = len(self.feature_names_)
        self.prep_ = LinearPrep(arrays, list(meta["columns"]))
        self.columns_ = list(meta["columns"])
        self.l1_ratio_ = float(meta["chosen"]["l1_ratio"])
        self.penalty_ = float(meta["chosen"]["penalty"])
        self.coef_ = arrays["coef"].astype(np.float64)


# --- elastic-net logistic regression ---------------------------------------------------------
class ElasticNetBaseline(_LinearBaseline):
    """Elastic-net logistic regression (scikit-learn's ``LogisticRegressionCV``, saga) on the
    prepared features; binary.

    ``C`` (inverse penalty strength, scikit-learn's scale) and ``l1_ratio`` are chosen among
    ``Cs`` × ``l1_ratios`` by ``inner_folds``-fold stratified cross-validation inside the
    training cohort, scored by ``scoring`` (log loss by default), then refitted on it all.
    ``max_features`` caps each modality at its most variable features (for wide omics);
    ``tol`` and ``max_iter`` are saga's: ``tol`` is loose by default, for on the demo's
    cohort a tenfold tighter one costs ten times the time for no better AUROC (0.707 against
    0.710, 5 folds). Deterministic for a given ``random_state``.
    """

    def __init__(
        self,
        *,
        modalities: Sequence[str] | None = None,
        kinds: Sequence[str] = FEATURE_KINDS,
        Cs: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
        l1_ratios: Sequence[float] = (0.1, 0.5, 0.9),
        inner_folds: int = 5,
        scoring: str = "neg_log_loss",
        max_features: int | None = None,
        missing_indicators: bool = True,
        class_weight: dict[Any, float] | str | None = None,
        tol: float = 1e-2,
        max_iter: int = 1000,
        random_state: int = 0,
    ) -> None:
        self.modalities = modalities
        self.kinds = kinds
        self.Cs = Cs
        self.l1_ratios = l1_ratios
        self.inner_folds = inner_folds
        self.scoring = scoring
        self.max_features = max_features
        self.missing_indicators = missing_indicators
        self.class_weight = class_weight
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, cohort: Cohort, y: Any = None) -> ElasticNetBaseline:
        """Fit on every patient of ``cohort``; ``y`` is an array, a column name of
        ``cohort.patients`` or None (the ``outcome`` column)."""
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        self._check_params()
        if not self.Cs or any(c <= 0 for c in self.Cs):
            raise InputError(f"ElasticNetBaseline: Cs must be positive numbers, got {self.Cs}")
        if self.scoring not in SCORINGS:
            raise InputError(
                f"ElasticNetBaseline: scoring {self.scoring!r} is not one of {', '.join(SCORINGS)}"
            )
        target = outcome(cohort, y, survival=False)
        task = BinaryTask()
        task.fit_target(target)
        encoded = task.encode_target(target).numpy().astype(np.int64)
        z = self._fit_design(cohort)
        folds = self._inner_folds(
            int(np.bincount(encoded, minlength=2).min()), what="patients in its smaller class"
        )
        model = LogisticRegressionCV(
            Cs=[float(c) for c in self.Cs],
            l1_ratios=[float(r) for r in self.l1_ratios],
            solver="saga",
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state),
            scoring=self.scoring,
            class_weight=self.class_weight,
            tol=self.tol,
            max_iter=self.max_iter,
            random_state=self.random_state,
            use_legacy_attributes=False,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(z, encoded)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            warnings.warn(
                f"ElasticNetBaseline: saga stopped at max_iter={self.max_iter} before "
                f"converging (tol={self.tol}) for some penalties; the model is usable, raise "
                "max_iter or tol to silence this",
                stacklevel=2,
            )
        self.task_: Task = task
        self.coef_ = np.asarray(model.coef_, dtype=np.float64).ravel()
        self.intercept_ = float(np.asarray(model.intercept_).ravel()[0])
        self.C_ = float(model.C_)
        self.l1_ratio_ = float(model.l1_ratio_)
        self.penalty_ = 1.0 / (self.C_ * z.shape[0])  # the same as glmnet's lambda
        return self

    def _proba(self, cohort: Cohort) -> np.ndarray:
        self._check_fitted()
        logit = self.prep_.transform(self._features(cohort)) @ self.coef_ + self.intercept_
        return np.asarray(expit(logit), dtype=np.float64)

    def predict_output(self, cohort: Cohort) -> dict[str, np.ndarray]:
        """``proba`` (of the positive class) and ``label``."""
        p = self._proba(cohort)
        return {"proba": p, "label": self.classes_[(p >= 0.5).astype(np.int64)]}

    def predict_proba(self, cohort: Cohort) -> np.ndarray:
        """(n, 2) class probabilities, columns in the order of ``classes_``."""
        p = self._proba(cohort)
        return np.column_stack([1.0 - p, p])

    def predict(self, cohort: Cohort) -> np.ndarray:
        """Class labels."""
        return self.predict_output(cohort)["label"]

    @property
    def classes_(self) -> np.ndarray:
        self._check_fitted()
        task = self.task_
        assert isinstance(task, BinaryTask)
        return np.asarray(task.classes)

    def score(self, cohort: Cohort, y: Any = None) -> float:
        """AUROC on ``cohort``."""
        self._check_fitted()
        return self.task_.score(self.predict_output(cohort), outcome(cohort, y, survival=False))

    @property
    def coefficients(self) -> Any:
        """The fitted coefficients per design column (standardised scale), as a Series."""
        import pandas as pd

        self._check_fitted()
        return pd.Series(self.coef_, index=self.columns_, name="coef")

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``model.safetensors`` (preparation, coefficients) and ``bundle.json``."""
        self._check_fitted()
        meta = self._meta(ELASTICNET_FORMAT)
        meta["task"] = {"name": "binary", "state": self.task_.get_state()}
        meta["chosen"]["C"] = self.C_
        arrays = {
            **self.prep_.arrays(),
            "coef": self.coef_,
            "intercept": np.array([self.intercept_]),
        }
        return _write_bundle(path, meta, arrays, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ElasticNetBaseline:
        """Rebuild a model written by :meth:`save`; predictions are identical."""
        meta, arrays = _read_bundle(path, fmt=ELASTICNET_FORMAT, what="elastic-net")
        est = cls(**meta["params"])
        est._restore(meta, arrays)
        est.task_ = Task.from_state(meta["task"]["name"], meta["task"]["state"])
        est.intercept_ = float(arrays["intercept"][0])
        est.C_ = float(meta["chosen"]["C"])
        return est


# --- elastic-net Cox regression --------------------------------------------------------------
class CoxNetBaseline(_LinearBaseline):
    """Elastic-net Cox regression (Breslow ties, coordinate descent as in glmnet; see
    ``models/_coxnet.py``) on the prepared features; survival.

    For each of ``l1_ratios`` a path of ``n_penalties`` penalties runs from the largest
    useful one (every coefficient zero) down to ``min_ratio`` times it; the pair with the
    best cross-validated partial likelihood over ``inner_folds`` folds (stratified by event)
    inside the training cohort is refitted on it all. ``max_features`` caps each modality
    at its most variable features. Deterministic for a given ``random_state``.
    """

    def __init__(
        self,
        *,
        modalities: Sequence[str] | None = None,
        kinds: Sequence[str] = FEATURE_KINDS,
        l1_ratios: Sequence[float] = (0.1, 0.5, 0.9),
        n_penalties: int = 20,
        min_ratio: float = 0.01,
        inner_folds: int = 5,
        max_features: int | None = None,
        missing_indicators: bool = True,
        max_iter: int = 50,
        tol: float = 1e-5,
        random_state: int = 0,
    ) -> None:
        self.modalities = modalities
        self.kinds = kinds
        self.l1_ratios = l1_ratios
        self.n_penalties = n_penalties
        self.min_ratio = min_ratio
        self.inner_folds = inner_folds
        self.max_features = max_features
        self.missing_indicators = missing_indicators
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, cohort: Cohort, y: Any = None) -> CoxNetBaseline:
        """Fit on every patient of ``cohort``; ``y`` is anything :func:`as_survival`
        accepts, or None (the cohort's ``time`` and ``event`` columns)."""
        self._check_params()
        if not self.l1_ratios:
            raise InputError("CoxNetBaseline: l1_ratios is empty; give at least one in [0, 1]")
        if self.n_penalties < 1 or not 0.0 < self.min_ratio < 1.0:
            raise InputError(
                f"CoxNetBaseline: n_penalties must be >= 1 and min_ratio in (0, 1), got "
                f"{self.n_penalties} and {self.min_ratio}"
            )
        target = as_survival(outcome(cohort, y, survival=True))
        z = self._fit_design(cohort)
        events = target.event.astype(np.int64)
        folds = self._inner_folds(
            int(min(events.sum(), (1 - events).sum())), what="events (or censored patients)"
        )
        choice = choose_penalty(
            z,
            target.time,
            events,
            l1_ratios=[float(r) for r in self.l1_ratios],
            n_penalties=self.n_penalties,
            min_ratio=self.min_ratio,
            folds=folds,
            seed=self.random_state,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        row, last = choice.index
        path = choice.path[row]
        risk = RiskSets.of(target.time, events)
        betas, converged = fit_path(
            z,
            risk,
            path[: last + 1],
            l1_ratio=choice.l1_ratio,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        if not (converged and choice.converged):
            warnings.warn(
                f"CoxNetBaseline: some fits stopped at max_iter={self.max_iter} before "
                "converging; the model is usable, raise max_iter to silence this",
                stacklevel=2,
            )
        self.coef_ = betas[-1]
        self.l1_ratio_, self.penalty_ = choice.l1_ratio, choice.penalty
        self.cv_scores_ = choice.score
        self.baseline_times_, self.baseline_cumhaz_ = risk.baseline(z @ self.coef_)
        return self

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """The linear predictor (log relative hazard; higher = higher risk)."""
        self._check_fitted()
        return np.asarray(self.prep_.transform(self._features(cohort)) @ self.coef_)

    def predict(self, cohort: Cohort) -> np.ndarray:
        """Same as :meth:`predict_risk`."""
        return self.predict_risk(cohort)

    def predict_output(self, cohort: Cohort) -> dict[str, np.ndarray]:
        """``risk``: the linear predictor."""
        return {"risk": self.predict_risk(cohort)}

    def predict_survival(self, cohort: Cohort, times: Sequence[float]) -> np.ndarray:
        """(n_patients, n_times) survival probabilities S(t) at ``times`` (days), from the
        Breslow baseline hazard of the training cohort."""
        t = np.asarray(times, dtype=np.float64)
        at = np.searchsorted(self.baseline_times_, t, side="right")
        h0 = np.concatenate([[0.0], self.baseline_cumhaz_])[at]
        return np.exp(-np.outer(np.exp(self.predict_risk(cohort)), h0))

    def score(self, cohort: Cohort, y: Any = None) -> float:
        """Harrell's C-index on ``cohort``."""
        return c_index(self.predict_risk(cohort), outcome(cohort, y, survival=True))

    @property
    def coefficients(self) -> Any:
        """The fitted log hazard ratios per design column (standardised scale)."""
        import pandas as pd

        self._check_fitted()
        return pd.Series(self.coef_, index=self.columns_, name="coef")

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``model.safetensors`` (preparation, coefficients, Breslow baseline hazard)
        and ``bundle.json``."""
        self._check_fitted()
        arrays = {
            **self.prep_.arrays(),
            "coef": self.coef_,
            "baseline_times": self.baseline_times_,
            "baseline_cumhaz": self.baseline_cumhaz_,
        }
        return _write_bundle(path, self._meta(COXNET_FORMAT), arrays, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CoxNetBaseline:
        """Rebuild a model written by :meth:`save`; risks and survival curves are identical."""
        meta, arrays = _read_bundle(path, fmt=COXNET_FORMAT, what="elastic-net Cox")
        est = cls(**meta["params"])
        est._restore(meta, arrays)
        est.baseline_times_ = arrays["baseline_times"].astype(np.float64)
        est.baseline_cumhaz_ = arrays["baseline_cumhaz"].astype(np.float64)
        return est
