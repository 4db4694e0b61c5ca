"""Classical baselines that multimodal models are compared against.

Each works on the cohort's feature blocks (tabular, omics, exposures) concatenated into one
matrix, patients absent from a modality having NaN in its columns:

* :class:`LightGBMBaseline` — gradient boosting on the concatenated features (the HAIM
  approach), missing values handled natively; binary, multiclass or regression.
* :class:`CoxPHBaseline` — a penalised Cox model (lifelines) with median imputation and
  missing-value indicators learned on the training cohort; survival.
* :class:`ElasticNetBaseline` (binary) and :class:`CoxNetBaseline` (survival) — elastic-net
  logistic and Cox regression on the imputed, standardised features, the penalty chosen by
  cross-validation inside the training cohort (``models/_linear.py``).

They follow scikit-learn's conventions (parameters stored by the constructor,
``get_params`` / ``set_params`` / ``clone``, learned state ending in ``_``) with a
:class:`~medweave.cohort.Cohort` in place of ``X``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

from medweave._atomic import atomic_dir
from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.models._bundle import jsonable, read_bundle_meta
from medweave.models._linear import CoxNetBaseline, ElasticNetBaseline
from medweave.models._tabular import FEATURE_KINDS, CohortBaseline, cohort_features, outcome
from medweave.models.survival import SurvivalTarget, as_survival
from medweave.models.tasks import TASKS, BinaryTask, MulticlassTask, Task, c_index

__all__ = [
    "FEATURE_KINDS",
    "CoxNetBaseline",
    "CoxPHBaseline",
    "ElasticNetBaseline",
    "LightGBMBaseline",
    "cohort_features",
]


# --- LightGBM --------------------------------------------------------------------------------
LIGHTGBM_FORMAT = "medweave-lightgbm/1"


class LightGBMBaseline(CohortBaseline):
    """Gradient boosting (LightGBM) on the concatenated features of the cohort's feature
    blocks; NaN (a missing modality or measurement) is handled natively by the trees.

    ``task`` is ``"binary"``, ``"multiclass"`` or ``"regression"``. For survival use
    :class:`CoxPHBaseline`. Training is deterministic for a given ``random_state``
    (``deterministic=True`` and row-wise histograms), whatever ``num_threads``.
    ``lgbm_params`` passes further LightGBM parameters.
    """

    def __init__(
        self,
        *,
        task: str = "binary",
        modalities: Sequence[str] | None = None,
        kinds: Sequence[str] = FEATURE_KINDS,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        max_depth: int = -1,
        min_child_samples: int = 20,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        reg_alpha: float = 0.0,
        reg_lambda: float = 0.0,
        class_weight: dict[Any, float] | str | None = None,
        random_state: int = 0,
        num_threads: int | None = None,
        deterministic: bool = True,
        lgbm_params: dict[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.modalities = modalities
        self.kinds = kinds
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_alpha = reg_alpha
        self.reg_lambda = reg_lambda
        self.class_weight = class_weight
        self.random_state = random_state
        self.num_threads = num_threads
        self.deterministic = deterministic
        self.lgbm_params = lgbm_params

    def _check_task(self) -> None:
        if self.task in ("survival", "cox", "discrete_hazard"):
            raise InputError(
                f"LightGBMBaseline does not fit survival (task={self.task!r}); use "
                "CoxPHBaseline for the survival baseline"
            )
        if self.task not in ("binary", "multiclass", "regression"):
            raise InputError(
                f"LightGBMBaseline: task {self.task!r} is not one of binary, multiclass, "
                "regression (for survival use CoxPHBaseline)"
            )

    def _make_model(self) -> Any:
        import lightgbm as lgb

        params: dict[str, Any] = {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            "subsample_freq": 1 if self.subsample < 1.0 else 0,
            "colsample_bytree": self.colsample_bytree,
            "reg_alpha": self.reg_alpha,
            "reg_lambda": self.reg_lambda,
            "random_state": self.random_state,
            "n_jobs": self.num_threads,
            "deterministic": self.deterministic,
            "force_row_wise": True,
            "verbose": -1,
            **(self.lgbm_params or {}),
        }
        if self.task == "regression":
            return lgb.LGBMRegressor(**params)
        return lgb.LGBMClassifier(class_weight=self.class_weight, **params)

    def fit(self, cohort: Cohort, y: Any = None) -> LightGBMBaseline:
        """Fit on every patient of ``cohort``; ``y`` is an array, a column name of
        ``cohort.patients`` or None (the ``outcome`` column)."""
        self._check_task()
        target = outcome(cohort, y, survival=False)
        task = TASKS.get(self.task)()
        task.fit_target(target)
        x = self._fit_features(cohort)
        model = self._make_model()
        if self.task == "regression":
            model.fit(x, np.asarray(target, dtype=np.float64))
        else:
            encoded = task.encode_target(target).numpy().astype(np.int64)
            model.fit(x, encoded)
        self.task_: Task = task
        self.model_ = model
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("LightGBMBaseline is not fitted; call fit(cohort) first")

    def predict_output(self, cohort: Cohort) -> dict[str, np.ndarray]:
        """The task's predictions: ``proba`` and ``label`` (classification) or ``value``."""
        self._check_fitted()
        x = self._features(cohort)
        if self.task == "regression":
            return {"value": np.asarray(self.model_.predict(x), dtype=np.float64)}
        proba = np.asarray(self.model_.predict_proba(x), dtype=np.float64)
        label = self.classes_[proba.argmax(axis=1)]
        if self.task == "binary":
            return {"proba": proba[:, 1], "label": label}
        return {"proba": proba, "label": label}

    def predict(self, cohort: Cohort) -> np.ndarray:
        """Class labels (classification) or values (regression)."""
        pred = self.predict_output(cohort)
        return pred["value"] if self.task == "regression" else pred["label"]

    def predict_proba(self, cohort: Cohort) -> np.ndarray:
        """(n, n_classes) class probabilities, columns in the order of ``classes_``."""
        if self.task == "regression":
            raise InputError("LightGBMBaseline(task='regression') has no probabilities")
        self._check_fitted()
        return np.asarray(self.model_.predict_proba(self._features(cohort)), dtype=np.float64)

    @property
    def classes_(self) -> np.ndarray:
        self._check_fitted()
        if self.task == "regression":
            raise AttributeError("a regression model has no classes")
        task = self.task_
        assert isinstance(task, BinaryTask | MulticlassTask)
        return np.asarray(task.classes)

    def score(self, cohort: Cohort, y: Any = None) -> float:
        """AUROC (binary), accuracy (multiclass) or R² (regression) on ``cohort``."""
        self._check_fitted()
        target = outcome(cohort, y, survival=False)
        return self.task_.score(self.predict_output(cohort), target)

    # --- bundles -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a bundle: ``model.txt`` (LightGBM's own text model format) and
        ``bundle.json`` (parameters, task, modalities, feature schema) — no pickle."""
        self._check_fitted()
        meta = {
            "format": LIGHTGBM_FORMAT,
            "params": jsonable(self.get_params()),
            "task": {"name": self.task, "state": self.task_.get_state()},
            "modalities": list(self.modalities_),
            "feature_names": list(self.feature_names_),
        }
        out = Path(path)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            self.model_.booster_.save_model(str(tmp / "model.txt"))
            (tmp / "bundle.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LightGBMBaseline:
        """Rebuild a baseline written by :meth:`save`; predictions are identical."""
        import lightgbm as lgb

        root = Path(path)
        meta = read_bundle_meta(root, fmt=LIGHTGBM_FORMAT, what="LightGBM")
        est = cls(**meta["params"])
        est.task_ = Task.from_state(meta["task"]["name"], meta["task"]["state"])
        est.modalities_ = list(meta["modalities"])
        est.feature_names_ = list(meta["feature_names"])
        est.n_features_in_ = len(est.feature_names_)
        est.model_ = _Booster(lgb.Booster(model_file=str(root / "model.txt")), task=est.task)
        return est

    def feature_importances(self, *, importance_type: str = "gain") -> pd.Series:
        """Importance per feature ("modality:feature"), largest first."""
        self._check_fitted()
        values = self.model_.booster_.feature_importance(importance_type=importance_type)
        return pd.Series(values, index=self.feature_names_, name=importance_type).sort_values(
            ascending=False
        )


class _Booster:
    """A loaded LightGBM booster behind the part of the scikit-learn wrapper's API that
    :class:`LightGBMBaseline` uses (``predict``, ``predict_proba``, ``booster_``)."""

    def __init__(self, booster: Any, *, task: str) -> None:
        self.booster_, self.task = booster, task

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster_.predict(x))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.asarray(self.booster_.predict(x), dtype=np.float64)
        return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p


# --- Cox proportional hazards ---------------------------------------------------------------
COXPH_FORMAT = "medweave-coxph/1"


class _CoxModel:
    """A loaded Cox model behind the part of lifelines' ``CoxPHFitter`` API that
    :class:`CoxPHBaseline` uses, with lifelines' formulas: the log partial hazard
    ``(x - mean) @ coef`` and ``S(t) = exp(-H0(t) exp(lph))``, H0 linearly interpolated."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.params_ = pd.Series(meta["coef"], index=meta["columns"], dtype=np.float64)
        self.norm_mean = np.asarray(meta["norm_mean"], dtype=np.float64)
        self.times = np.asarray(meta["baseline_times"], dtype=np.float64)
        self.cumhaz = np.asarray(meta["baseline_cumhaz"], dtype=np.float64)

    def predict_log_partial_hazard(self, frame: pd.DataFrame) -> pd.Series:
        x = frame[list(self.params_.index)].to_numpy(dtype=np.float64) - self.norm_mean
        return pd.Series(x @ self.params_.to_numpy(), index=frame.index)

    def predict_survival_function(self, frame: pd.DataFrame, times: np.ndarray) -> pd.DataFrame:
        h0 = np.interp(times, self.times, self.cumhaz)
        hazard = np.exp(self.predict_log_partial_hazard(frame).to_numpy())
        return pd.DataFrame(np.exp(-np.outer(h0, hazard)), index=times, columns=frame.index)


class CoxPHBaseline(CohortBaseline):
    """A penalised Cox proportional-hazards model (lifelines ``CoxPHFitter``, Efron ties)
    on the concatenated features.

    Learned on the training cohort: per feature the median (used to fill NaN) and, for
    features with missing values, a missing-value indicator (``missing_indicators``);
    columns without any value, and columns constant after imputation, are dropped. With
    ``max_features``, a modality with more features than that keeps only its
    ``max_features`` most variable ones (for wide inputs such as omics). ``penalizer`` and
    ``l1_ratio`` are lifelines' elastic-net penalty on the standardised coefficients.
    """

    def __init__(
        self,
        *,
        modalities: Sequence[str] | None = None,
        kinds: Sequence[str] = FEATURE_KINDS,
        penalizer: float = 0.1,
        l1_ratio: float = 0.0,
        max_features: int | None = None,
        missing_indicators: bool = True,
    ) -> None:
        self.modalities = modalities
        self.kinds = kinds
        self.penalizer = penalizer
        self.l1_ratio = l1_ratio
        self.max_features = max_features
        self.missing_indicators = missing_indicators

    def fit(self, cohort: Cohort, y: Any = None) -> CoxPHBaseline:
        """Fit on every patient of ``cohort``; ``y`` is anything :func:`as_survival`
        accepts, or None (the cohort's ``time`` and ``event`` columns)."""
        from lifelines import CoxPHFitter
        from lifelines.exceptions import ConvergenceError

        if self.max_features is not None and self.max_features < 1:
            raise InputError(f"CoxPHBaseline: max_features must be >= 1, got {self.max_features}")
        target = as_survival(outcome(cohort, y, survival=True))
        x = self._fit_features(cohort)
        self.keep_ = self._choose_features(x)
        kept = x[:, self.keep_].astype(np.float64)
        self.medians_ = np.nanmedian(kept, axis=0)
        has_nan = np.isnan(kept).any(axis=0)
        self.indicators_ = (
            np.flatnonzero(has_nan) if self.missing_indicators else np.zeros(0, dtype=np.int64)
        )
        full, full_names = self._expand(kept)
        self.columns_mask_ = np.ptp(full, axis=0) > 0
        self.columns_ = [n for n, k in zip(full_names, self.columns_mask_, strict=True) if k]
        if not self.columns_:
            raise InputError("CoxPHBaseline: every feature is constant in the training cohort")
        frame = self._frame(full[:, self.columns_mask_], target)
        model = CoxPHFitter(penalizer=self.penalizer, l1_ratio=self.l1_ratio)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(frame, duration_col="__time__", event_col="__event__")
        except ConvergenceError as exc:
            raise InputError(
                f"CoxPHBaseline: lifelines did not converge ({str(exc).splitlines()[0]}); "
                "raise penalizer or lower max_features"
            ) from None
        self.model_ = model
        return self

    def _choose_features(self, x: np.ndarray) -> np.ndarray:
        """Indices of the features used: not all-NaN, and within each modality's cap."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            var = np.nanvar(x.astype(np.float64), axis=0)
        observed = ~np.isnan(var)
        modality = np.array([n.split(":", 1)[0] for n in self.feature_names_])
        keep: list[np.ndarray] = []
        for name in self.modalities_:
            idx = np.flatnonzero((modality == name) & observed)
            if self.max_features is not None and idx.size > self.max_features:
                order = np.argsort(-var[idx], kind="stable")[: self.max_features]
                idx = np.sort(idx[order])
            keep.append(idx)
        return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)

    def _expand(self, kept: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Imputed values and missing indicators, before dropping constant columns."""
        missing = np.isnan(kept)
        filled = np.where(missing, self.medians_[np.newaxis, :], kept)
        indicators = missing[:, self.indicators_].astype(np.float64)
        names = [self.feature_names_[i] for i in self.keep_]
        names += [f"{names[i]} (missing)" for i in self.indicators_]
        return np.concatenate([filled, indicators], axis=1), names

    def _frame(self, values: np.ndarray, target: SurvivalTarget | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(values, columns=self.columns_)
        if target is not None:
            frame["__time__"] = target.time
            frame["__event__"] = target.event.astype(np.int64)
        return frame

    def transform(self, cohort: Cohort) -> pd.DataFrame:
        """The model's design matrix for ``cohort`` (imputed features and indicators)."""
        if not hasattr(self, "model_"):
            raise NotFittedError("CoxPHBaseline is not fitted; call fit(cohort) first")
        kept = self._features(cohort)[:, self.keep_].astype(np.float64)
        full, _ = self._expand(kept)
        return self._frame(full[:, self.columns_mask_])

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """The log partial hazard (higher = higher risk), centred as lifelines reports it."""
        frame = self.transform(cohort)
        return np.asarray(self.model_.predict_log_partial_hazard(frame), dtype=np.float64)

    def predict(self, cohort: Cohort) -> np.ndarray:
        """Same as :meth:`predict_risk`."""
        return self.predict_risk(cohort)

    def predict_survival(self, cohort: Cohort, times: Sequence[float]) -> np.ndarray:
        """(n_patients, n_times) survival probabilities S(t) at ``times`` (days)."""
        frame = self.transform(cohort)
        surv = self.model_.predict_survival_function(frame, times=np.asarray(times, dtype=float))
        return np.asarray(surv, dtype=np.float64).T

    # --- bundles -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``bundle.json``: parameters, feature schema, imputation, and the fitted
        model (coefficients, centring, Breslow baseline cumulative hazard) — no pickle."""
        if not hasattr(self, "model_"):
            raise NotFittedError("CoxPHBaseline is not fitted; call fit(cohort) first")
        model = self.model_
        baseline = model.baseline_cumulative_hazard_
        meta = {
            "format": COXPH_FORMAT,
            "params": jsonable(self.get_params()),
            "modalities": list(self.modalities_),
            "feature_names": list(self.feature_names_),
            "keep": self.keep_.tolist(),
            "medians": self.medians_.tolist(),
            "indicators": np.asarray(self.indicators_).tolist(),
            "columns_mask": np.asarray(self.columns_mask_).tolist(),
            "columns": list(self.columns_),
            "coef": model.params_.to_numpy().tolist(),
            "norm_mean": model._norm_mean.to_numpy().tolist(),
            "baseline_times": baseline.index.to_numpy(dtype=float).tolist(),
            "baseline_cumhaz": baseline.to_numpy(dtype=float)[:, 0].tolist(),
        }
        out = Path(path)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            (tmp / "bundle.json").write_text(json.dumps(meta))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CoxPHBaseline:
        """Rebuild a model written by :meth:`save`; risks and survival curves are identical."""
        meta = read_bundle_meta(path, fmt=COXPH_FORMAT, what="Cox PH")
        est = cls(**meta["params"])
        est.modalities_ = list(meta["modalities"])
        est.feature_names_ = list(meta["feature_names"])
        est.n_features_in_ = len(est.feature_names_)
        est.keep_ = np.asarray(meta["keep"], dtype=np.int64)
        est.medians_ = np.asarray(meta["medians"], dtype=np.float64)
        est.indicators_ = np.asarray(meta["indicators"], dtype=np.int64)
        est.columns_mask_ = np.asarray(meta["columns_mask"], dtype=bool)
        est.columns_ = list(meta["columns"])
        est.model_ = _CoxModel(meta)
        return est

    @property
    def coef_(self) -> pd.Series:
        """The fitted log hazard ratios per model column."""
        if not hasattr(self, "model_"):
            raise NotFittedError("CoxPHBaseline is not fitted; call fit(cohort) first")
        return pd.Series(self.model_.params_.to_numpy(), index=self.columns_, name="coef")

    def score(self, cohort: Cohort, y: Any = None) -> float:
        """Harrell's C-index on ``cohort``."""
        return c_index(self.predict_risk(cohort), outcome(cohort, y, survival=True))
