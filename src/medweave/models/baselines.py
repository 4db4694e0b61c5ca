"""Classical baselines that multimodal models are compared against.

Each works on the cohort's feature blocks (tabular, omics, exposures) concatenated into one
matrix, patients absent from a modality having NaN in its columns:

* :class:`LightGBMBaseline` — gradient boosting on the concatenated features (the HAIM
  approach), missing values handled natively; binary, multiclass, regression, or survival
  by boosting the Cox partial likelihood.
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
from medweave.models._coxnet import RiskSets
from medweave.models._gbm_cox import CoxObjective, cox_metric
from medweave.models._linear import CoxNetBaseline, ElasticNetBaseline
from medweave.models._tabular import (
    FEATURE_KINDS,
    CohortBaseline,
    cohort_features,
    outcome,
    screen_features,
)
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
LIGHTGBM_TASKS = ("binary", "multiclass", "regression", "survival")
#: fewer patients of the smaller class (or events) than this in the inner validation split:
#: early stopping would follow noise, so a fixed SMALL_COHORT_ROUNDS rounds are fitted
MIN_VALIDATION = 10
SMALL_COHORT_ROUNDS = 100
#: ``num_threads=None`` fits on one thread below this many training values (patients x
#: features kept). On such data LightGBM's OpenMP threads meet at a barrier after every
#: histogram and split, which costs more than they gain, and on a busy machine, where one
#: thread waits for another to be scheduled, far more: a study run with ``workers: 1`` on
#: a 2-core machine shared with other jobs took 4-130 s a fit of 1,000 patients on every
#: core against 0.8 s on one (800 patients, 2 threads: 9.0 s; one: 0.7 s).
SINGLE_THREAD_CELLS = 10_000_000

# The defaults, measured on the built synthetic cohort (`medweave synth --out /tmp/c3k
# --patients 3000 --seed 3`, `medweave build /tmp/c3k/cohort.yaml --out /tmp/c3k-cohort`:
# 3,000 patients, 1,310 features of which 1,200 genes), fitting this class on 5 folds
# (StratifiedKFold(5, shuffle=True, random_state=0) on the outcome, or on the event), one
# thread each, on a 2-core machine shared with other jobs (so seconds are pessimistic):
#   binary, before (300 rounds, 15 leaves, every feature, 255 bins): AUROC 0.724, 48.8 s a fit
#   binary, these defaults: AUROC 0.758, 2.1 s a fit (with 15 leaves of 20 patients, a cap
#   of 50 features per modality: 0.755, 100: 0.746, 200: 0.741, 400: 0.743)
#   survival (Cox objective), these defaults: C-index 0.725, 2.2 s a fit; the old settings
#   with the Cox objective: 0.709, 148 s a fit (machine busier); Cox PH as the study fits
#   it (50 features per modality): 0.674, 29 s a fit
# and on a 1,000-patient cohort (seed 11, mar): AUROC 0.693 at 62 s before, 0.706 at 0.9 s;
# C-index (the old settings with the Cox objective) 0.661 at 48 s, 0.690 at 0.8 s.


class LightGBMBaseline(CohortBaseline):
    """Gradient boosting (LightGBM) on the concatenated features of the cohort's feature
    blocks; NaN (a missing modality or measurement) is handled natively by the trees.

    ``task`` is ``"binary"``, ``"multiclass"``, ``"regression"`` or ``"survival"``; for
    survival the trees boost Breslow's Cox partial likelihood (``models/_gbm_cox.py``) and
    the model's score is a log relative hazard (:meth:`predict_risk`).

    What keeps it cheap on a few hundred to a few thousand patients, all learned on the
    training patients only:

    * features: columns observed in fewer than ``min_child_samples`` patients or constant
      are dropped, and a modality with more than ``max_features`` columns (wide omics)
      keeps the ``max_features`` most associated with the outcome (rank correlation with
      the outcome, or with the null model's martingale residuals for survival);
    * rounds: up to ``n_estimators``, early-stopped when the loss of an inner validation
      split (``validation_fraction`` of the patients, stratified by outcome or event) has
      not improved for ``early_stopping_rounds``; the model is then refitted on every
      training patient with the number of rounds found (``best_iteration_``). With fewer
      than ``MIN_VALIDATION`` patients of the smaller class (or events) in that split, a
      fixed ``SMALL_COHORT_ROUNDS`` are fitted instead, with a warning;
      ``early_stopping_rounds=None`` fits ``n_estimators`` rounds;
    * trees: 63 histogram bins, half the features per tree, bagging 80% of the patients.

    Training is deterministic for a given ``random_state`` (``deterministic=True`` and
    row-wise histograms), whatever ``num_threads``; None uses one thread on small training
    sets (``SINGLE_THREAD_CELLS``) and every core on large ones. ``lgbm_params`` passes further
    LightGBM parameters.
    """

    def __init__(
        self,
        *,
        task: str = "binary",
        modalities: Sequence[str] | None = None,
        kinds: Sequence[str] = FEATURE_KINDS,
        n_estimators: int = 1000,
        learning_rate: float = 0.05,
        num_leaves: int = 7,
        max_depth: int = -1,
        min_child_samples: int = 30,
        subsample: float = 0.8,
        colsample_bytree: float = 0.5,
        reg_alpha: float = 0.0,
        reg_lambda: float = 1.0,
        max_bin: int = 63,
        max_features: int | None = 50,
        early_stopping_rounds: int | None = 50,
        validation_fraction: float = 0.2,
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
        self.max_bin = max_bin
        self.max_features = max_features
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.random_state = random_state
        self.num_threads = num_threads
        self.deterministic = deterministic
        self.lgbm_params = lgbm_params

    def _threads(self, cells: int) -> int:
        """``num_threads``, or when None: one thread below ``SINGLE_THREAD_CELLS`` training
        values, else LightGBM's default (0: every core)."""
        if self.num_threads is not None:
            return self.num_threads
        return 1 if cells < SINGLE_THREAD_CELLS else 0

    def _check_params(self) -> None:
        if self.task not in LIGHTGBM_TASKS:
            raise InputError(
                f"LightGBMBaseline: task {self.task!r} is not one of "
                f"{', '.join(LIGHTGBM_TASKS)} (survival boosts the Cox partial likelihood)"
            )
        if self.n_estimators < 1:
            raise InputError(
                f"LightGBMBaseline: n_estimators must be >= 1, got {self.n_estimators}"
            )
        if self.max_features is not None and self.max_features < 1:
            raise InputError(
                f"LightGBMBaseline: max_features must be >= 1 or null, got {self.max_features}"
            )
        if self.early_stopping_rounds is not None and self.early_stopping_rounds < 1:
            raise InputError(
                "LightGBMBaseline: early_stopping_rounds must be >= 1 or null (no early "
                f"stopping), got {self.early_stopping_rounds}"
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise InputError(
                "LightGBMBaseline: validation_fraction must lie in (0, 1), got "
                f"{self.validation_fraction}"
            )

    def _params(self, cells: int) -> dict[str, Any]:
        """LightGBM's training parameters for a training matrix of ``cells`` values,
        without the objective."""
        return {
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            "subsample_freq": 1 if self.subsample < 1.0 else 0,
            "colsample_bytree": self.colsample_bytree,
            "reg_alpha": self.reg_alpha,
            "reg_lambda": self.reg_lambda,
            "max_bin": self.max_bin,
            "seed": self.random_state,
            "num_threads": self._threads(cells),
            "deterministic": self.deterministic,
            "force_row_wise": True,
            "verbose": -1,
            **(self.lgbm_params or {}),
        }

    def fit(self, cohort: Cohort, y: Any = None) -> LightGBMBaseline:
        """Fit on every patient of ``cohort``. ``y``: for survival anything
        :func:`as_survival` accepts, or None (the cohort's ``time`` and ``event``); else an
        array, a column name of ``cohort.patients`` or None (the ``outcome`` column)."""
        self._check_params()
        survival = self.task == "survival"
        target = outcome(cohort, y, survival=survival)
        x = self._fit_features(cohort)
        task: Task | None = None
        if survival:
            target = as_survival(target)
            risk = RiskSets.of(target.time, target.event.astype(np.int64))
            signal: np.ndarray | None = risk.gradient(np.zeros(cohort.n))[0]  # martingale
            label, strata = target.time, target.event.astype(np.int64)
        else:
            task = TASKS.get(self.task)()
            task.fit_target(target)
            if self.task == "regression":
                label = np.asarray(target, dtype=np.float64)
                signal, strata = label, None
            else:
                label = task.encode_target(target).numpy().astype(np.int64)
                signal = label.astype(np.float64) if self.task == "binary" else None
                strata = label
        self.selected_ = screen_features(
            x,
            self.feature_names_,
            self.modalities_,
            signal=signal,
            max_features=self.max_features,
            min_observed=self.min_child_samples,
        )
        if self.selected_.size == 0:
            raise InputError(
                "LightGBMBaseline: every feature is constant or observed in fewer than "
                f"min_child_samples={self.min_child_samples} training patients; lower "
                "min_child_samples or add patients"
            )
        xs = x[:, self.selected_]
        self.model_ = _Booster(
            self._boost(xs, label, target if survival else None, strata, task), task=self.task
        )
        self.task_ = task
        if survival:
            self.baseline_times_, self.baseline_cumhaz_ = risk.baseline(self.model_.predict(xs))
        return self

    def _boost(
        self,
        x: np.ndarray,
        label: np.ndarray,
        survival: SurvivalTarget | None,
        strata: np.ndarray | None,
        task: Task | None,
    ) -> Any:
        """The booster: early-stopped on an inner split, then refitted on every row."""
        import lightgbm as lgb

        params = self._params(x.size)
        weight = self._sample_weight(label, task)
        dataset = lgb.Dataset(
            x,
            label=label if survival is None else np.zeros(x.shape[0]),
            weight=weight,
            params=params,  # the same binning whatever part of it a booster trains on
            free_raw_data=False,
        ).construct()

        def train(rows: np.ndarray | None, rounds: int, valid: np.ndarray | None = None) -> Any:
            part = dataset if rows is None else dataset.subset(rows.tolist()).construct()
            run = {**params, **self._objective(survival, rows, task)}
            if valid is None:
                return lgb.train(run, part, num_boost_round=rounds)
            check = dataset.subset(valid.tolist()).construct()
            metric = None
            if survival is not None:
                metric = cox_metric(survival.time[valid], survival.event[valid])
            return lgb.train(
                run,
                part,
                num_boost_round=rounds,
                valid_sets=[check],
                feval=metric,
                callbacks=[lgb.early_stopping(self.early_stopping_rounds or 1, verbose=False)],
            )

        if self.early_stopping_rounds is None:
            self.best_iteration_ = self.n_estimators
            return train(None, self.n_estimators)
        split = self._inner_split(strata, x.shape[0])
        if split is None:
            warnings.warn(
                f"LightGBMBaseline: the training cohort is too small for an inner validation "
                f"split with {MIN_VALIDATION} patients of each class (or events); fitting "
                f"{min(self.n_estimators, SMALL_COHORT_ROUNDS)} rounds without early stopping",
                stacklevel=3,
            )
            self.best_iteration_ = min(self.n_estimators, SMALL_COHORT_ROUNDS)
            return train(None, self.best_iteration_)
        fit_rows, valid_rows = split
        stopped = train(fit_rows, self.n_estimators, valid_rows)
        self.best_iteration_ = max(int(stopped.best_iteration), 1)
        return train(None, self.best_iteration_)

    def _objective(
        self, survival: SurvivalTarget | None, rows: np.ndarray | None, task: Task | None
    ) -> dict[str, Any]:
        if survival is not None:
            part = survival if rows is None else survival[rows]
            return {"objective": CoxObjective(part.time, part.event), "metric": "None"}
        if self.task == "multiclass":
            assert isinstance(task, MulticlassTask)
            return {"objective": "multiclass", "num_class": len(task.classes)}
        return {"objective": self.task}

    def _inner_split(
        self, strata: np.ndarray | None, n: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Rows to fit on and rows to validate on, stratified; None when too few."""
        from sklearn.model_selection import train_test_split

        n_valid = round(self.validation_fraction * n)
        if strata is None:
            if n_valid < 2 * MIN_VALIDATION or n - n_valid < 2 * MIN_VALIDATION:
                return None
        else:
            counts = np.bincount(strata)
            smallest = counts[counts > 0].min() if counts.size else 0
            if counts.size < 2 or (counts > 0).sum() < 2:
                return None
            if smallest * self.validation_fraction < MIN_VALIDATION:
                return None
        rows = np.arange(n)
        fit_rows, valid_rows = train_test_split(
            rows,
            test_size=self.validation_fraction,
            stratify=strata,
            random_state=self.random_state,
        )
        return np.sort(fit_rows), np.sort(valid_rows)

    def _sample_weight(self, label: np.ndarray, task: Task | None) -> np.ndarray | None:
        if self.class_weight is None or task is None or self.task == "regression":
            return None
        from sklearn.utils.class_weight import compute_sample_weight

        if isinstance(self.class_weight, str):
            return np.asarray(compute_sample_weight(self.class_weight, label), dtype=np.float64)
        assert isinstance(task, BinaryTask | MulticlassTask)
        weights = np.ones(len(task.classes))
        for cls, w in self.class_weight.items():
            if cls not in task.classes:
                raise InputError(
                    f"LightGBMBaseline: class_weight names class {cls!r}, which the training "
                    f"outcome does not have (it has {task.classes})"
                )
            weights[task.classes.index(cls)] = float(w)
        return weights[label]

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("LightGBMBaseline is not fitted; call fit(cohort) first")

    def _selected(self, cohort: Cohort) -> np.ndarray:
        self._check_fitted()
        return self._features(cohort)[:, self.selected_]

    def predict_output(self, cohort: Cohort) -> dict[str, np.ndarray]:
        """The task's predictions: ``proba`` and ``label`` (classification), ``value``
        (regression) or ``risk`` (survival)."""
        x = self._selected(cohort)
        if self.task == "regression":
            return {"value": self.model_.predict(x)}
        if self.task == "survival":
            return {"risk": self.model_.predict(x)}
        proba = self.model_.predict_proba(x)
        label = self.classes_[proba.argmax(axis=1)]
        if self.task == "binary":
            return {"proba": proba[:, 1], "label": label}
        return {"proba": proba, "label": label}

    def predict(self, cohort: Cohort) -> np.ndarray:
        """Class labels (classification), values (regression) or log relative hazards
        (survival)."""
        pred = self.predict_output(cohort)
        return next(pred[k] for k in ("value", "risk", "label") if k in pred)

    def predict_proba(self, cohort: Cohort) -> np.ndarray:
        """(n, n_classes) class probabilities, columns in the order of ``classes_``."""
        if self.task in ("regression", "survival"):
            raise InputError(f"LightGBMBaseline(task={self.task!r}) has no probabilities")
        return self.model_.predict_proba(self._selected(cohort))

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """Survival: the log relative hazard (higher = higher risk; its origin is arbitrary,
        as a Cox model's)."""
        if self.task != "survival":
            raise InputError(
                f"LightGBMBaseline(task={self.task!r}) has no risk; fit task='survival'"
            )
        return self.model_.predict(self._selected(cohort))

    def predict_survival(self, cohort: Cohort, times: Sequence[float]) -> np.ndarray:
        """Survival: (n_patients, n_times) S(t) at ``times`` (days), from the Breslow
        baseline hazard of the training patients."""
        risk = self.predict_risk(cohort)
        at = np.searchsorted(self.baseline_times_, np.asarray(times, dtype=np.float64), "right")
        h0 = np.concatenate([[0.0], self.baseline_cumhaz_])[at]
        return np.exp(-np.outer(np.exp(risk), h0))

    @property
    def classes_(self) -> np.ndarray:
        self._check_fitted()
        task = self.task_
        if not isinstance(task, BinaryTask | MulticlassTask):
            raise AttributeError(f"a {self.task} model has no classes")
        return np.asarray(task.classes)

    def score(self, cohort: Cohort, y: Any = None) -> float:
        """AUROC (binary), accuracy (multiclass), R² (regression) or Harrell's C-index
        (survival) on ``cohort``."""
        self._check_fitted()
        if self.task == "survival":
            return c_index(self.predict_risk(cohort), outcome(cohort, y, survival=True))
        assert self.task_ is not None
        target = outcome(cohort, y, survival=False)
        return self.task_.score(self.predict_output(cohort), target)

    # --- bundles -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a bundle: ``model.txt`` (LightGBM's own text model format) and
        ``bundle.json`` (parameters, task, modalities, feature schema, the features used,
        and for survival the Breslow baseline hazard) — no pickle."""
        self._check_fitted()
        meta: dict[str, Any] = {
            "format": LIGHTGBM_FORMAT,
            "params": jsonable(self.get_params()),
            "task": {
                "name": self.task,
                "state": None if self.task_ is None else self.task_.get_state(),
            },
            "modalities": list(self.modalities_),
            "feature_names": list(self.feature_names_),
            "selected": self.selected_.tolist(),
            "best_iteration": self.best_iteration_,
        }
        if self.task == "survival":
            meta["baseline"] = {
                "times": self.baseline_times_.tolist(),
                "cumhaz": self.baseline_cumhaz_.tolist(),
            }
        out = Path(path)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            self.model_.booster_.save_model(str(tmp / "model.txt"))
            (tmp / "bundle.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LightGBMBaseline:
        """Rebuild a baseline written by :meth:`save`; predictions are identical. (Bundles
        written before feature selection, without ``selected``, use every feature.)"""
        import lightgbm as lgb

        root = Path(path)
        meta = read_bundle_meta(root, fmt=LIGHTGBM_FORMAT, what="LightGBM")
        est = cls(**meta["params"])
        task = meta["task"]
        est.task_ = None if task["state"] is None else Task.from_state(task["name"], task["state"])
        est.modalities_ = list(meta["modalities"])
        est.feature_names_ = list(meta["feature_names"])
        est.n_features_in_ = len(est.feature_names_)
        est.selected_ = np.asarray(meta.get("selected", range(est.n_features_in_)), dtype=np.int64)
        booster = lgb.Booster(model_file=str(root / "model.txt"))
        est.best_iteration_ = int(meta.get("best_iteration", booster.current_iteration()))
        if "baseline" in meta:
            est.baseline_times_ = np.asarray(meta["baseline"]["times"], dtype=np.float64)
            est.baseline_cumhaz_ = np.asarray(meta["baseline"]["cumhaz"], dtype=np.float64)
        est.model_ = _Booster(booster, task=est.task)
        return est

    def feature_importances(self, *, importance_type: str = "gain") -> pd.Series:
        """Importance per feature ("modality:feature"), largest first; features left out by
        the selection count 0."""
        self._check_fitted()
        values = np.zeros(self.n_features_in_)
        values[self.selected_] = self.model_.booster_.feature_importance(
            importance_type=importance_type
        )
        return pd.Series(values, index=self.feature_names_, name=importance_type).sort_values(
            ascending=False, kind="stable"
        )


class _Booster:
    """A LightGBM booster, fitted or loaded, behind one small API (``predict``,
    ``predict_proba``, ``booster_``), so that both predict through the same arithmetic."""

    def __init__(self, booster: Any, *, task: str) -> None:
        self.booster_, self.task = booster, task

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Values (regression), raw scores (survival: log relative hazards) or
        probabilities (classification)."""
        return np.asarray(self.booster_.predict(x), dtype=np.float64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.predict(x)
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
