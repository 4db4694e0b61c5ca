"""LightGBM's survival model (Cox partial likelihood), its feature screen and early stopping."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.experiment._jobs import FoldJob, ModelSpec, make_estimator
from medweave.models._gbm_cox import CoxObjective, cox_metric
from medweave.models._tabular import association, informative_columns, screen_features
from medweave.models.baselines import (
    SINGLE_THREAD_CELLS,
    SMALL_COHORT_ROUNDS,
    CoxPHBaseline,
    LightGBMBaseline,
)
from medweave.models.tasks import c_index

from ._fresh import assert_reloads_in_fresh_process
from .test_baselines import make_cohort, noise


@pytest.fixture(scope="module")
def train() -> Cohort:
    return make_cohort(800, seed=0)


@pytest.fixture(scope="module")
def test() -> Cohort:
    return make_cohort(600, seed=1)


def _survival(**params: object) -> LightGBMBaseline:
    return LightGBMBaseline(**{"task": "survival", "num_threads": 1, **params})  # type: ignore[arg-type]


# --- the objective ---------------------------------------------------------------------------


def _breslow_nll(eta: torch.Tensor, time: np.ndarray, event: np.ndarray) -> torch.Tensor:
    """The negative log partial likelihood written out pair by pair (Breslow ties: every
    patient whose time is at least the event's is at risk)."""
    at_risk = torch.as_tensor(time[np.newaxis, :] >= time[:, np.newaxis], dtype=eta.dtype)
    log_s = torch.log(at_risk @ torch.exp(eta))
    e = torch.as_tensor(event, dtype=eta.dtype)
    return -(e * (eta - log_s)).sum()


def test_cox_gradient_and_hessian_match_autograd_with_tied_times() -> None:
    rng = np.random.default_rng(0)
    n = 40
    time = rng.integers(1, 12, n).astype(np.float64)  # many ties
    event = rng.uniform(size=n) < 0.6
    time[0], event[0] = 0.5, False  # censored before any event: no hessian
    eta = rng.normal(0, 1.5, n)
    objective = CoxObjective(time, event)
    grad, hess = objective.gradient(eta)

    eta_t = torch.tensor(eta, dtype=torch.float64, requires_grad=True)
    loss = _breslow_nll(eta_t, time, event)
    (auto_grad,) = torch.autograd.grad(loss, eta_t)
    full = torch.autograd.functional.hessian(lambda e: _breslow_nll(e, time, event), eta_t)
    assert objective.loss(eta) == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(grad, auto_grad.numpy(), rtol=1e-10, atol=1e-12)
    exact = np.diag(full.numpy())
    np.testing.assert_allclose(hess, np.maximum(exact, 1e-6), rtol=1e-10, atol=1e-12)
    assert exact[0] == 0.0 and hess[0] == 1e-6  # the floor, not a zero Newton denominator
    # LightGBM's calling convention, and shift invariance of a Cox score
    np.testing.assert_allclose(objective(eta + 3.0, None)[0], grad, atol=1e-12)
    name, value, higher_better = cox_metric(time, event)(eta, None)
    assert (name, higher_better) == ("cox_nll", False)
    assert value == pytest.approx(loss.item() / event.sum())


def test_cox_gradient_matches_finite_differences_on_a_large_set() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    time = rng.exponential(300, n).round()
    event = rng.uniform(size=n) < 0.4
    eta = rng.normal(size=n)
    objective = CoxObjective(time, event)
    grad, _ = objective.gradient(eta)
    for k in rng.choice(n, 5, replace=False):
        step = np.zeros(n)
        step[k] = 1e-5
        fd = (objective.loss(eta + step) - objective.loss(eta - step)) / 2e-5
        assert fd == pytest.approx(grad[k], abs=1e-6)


# --- the survival model ----------------------------------------------------------------------


def test_lightgbm_survival_ranks_patients_and_gives_survival_curves(
    train: Cohort, test: Cohort
) -> None:
    model = _survival().fit(train)
    risk = model.predict_risk(test)
    assert risk.shape == (600,) and np.isfinite(risk).all()
    cindex = c_index(risk, test.patients[["time", "event"]])
    assert cindex > 0.7  # the true risk reaches about 0.76; chance is 0.5
    assert model.score(test) == pytest.approx(cindex)
    np.testing.assert_array_equal(model.predict(test), risk)
    assert 1 <= model.best_iteration_ < model.n_estimators
    top = model.feature_importances().index[:3].tolist()
    assert {"ehr:x1", "labs:crp"} <= set(top)
    surv = model.predict_survival(test, [0.0, 30.0, 180.0, 365.0])
    assert surv.shape == (600, 4) and np.all(np.diff(surv, axis=1) <= 0)
    assert np.all((surv > 0) & (surv <= 1))
    # higher risk, lower survival
    order = np.argsort(risk)
    assert np.all(np.diff(surv[order, 3]) <= 1e-12)
    with pytest.raises(AttributeError, match="no classes"):
        _ = model.classes_


def test_lightgbm_survival_finds_a_threshold_effect_a_linear_cox_model_misses(
    train: Cohort, test: Cohort
) -> None:
    """Risk doubles past a threshold of one feature and the U-shape of another: trees
    find both, a linear Cox model neither."""

    def shaped(c: Cohort, seed: int) -> Cohort:
        out = c.take(np.arange(c.n))
        ehr = out.modalities["ehr"].x
        risk = 1.5 * (ehr[:, 2] > 0.5) + 1.0 * np.abs(ehr[:, 4])  # x1, n2
        rng = np.random.default_rng(seed)
        t_event = rng.exponential(365 * np.exp(-risk))
        t_censor = rng.uniform(100, 1000, c.n)
        out.patients["time"] = np.minimum(t_event, t_censor).round()
        out.patients["event"] = t_event <= t_censor
        return out

    tr, te = shaped(train, 2), shaped(test, 3)
    boosted = _survival(modalities=["ehr"]).fit(tr).score(te)
    linear = CoxPHBaseline(modalities=["ehr"]).fit(tr).score(te)
    assert boosted > 0.68 and boosted > linear + 0.05


def test_lightgbm_survival_is_deterministic_and_learns_nothing_from_noise(
    train: Cohort, test: Cohort
) -> None:
    a = _survival(random_state=2).fit(train).predict_risk(test)
    b = _survival(random_state=2).fit(train).predict_risk(test)
    np.testing.assert_array_equal(a, b)
    model = _survival().fit(noise(train, seed=5))
    assert model.best_iteration_ <= 20  # early stopping: the validation loss never improves
    assert abs(model.score(noise(test, seed=6)) - 0.5) < 0.06


def test_lightgbm_survival_bundle_reloads_in_a_fresh_process(
    train: Cohort, test: Cohort, tmp_path: Path
) -> None:
    est = _survival(n_estimators=60).fit(train)
    assert_reloads_in_fresh_process(est, test, tmp_path)
    again = LightGBMBaseline.load(tmp_path / "bundle")
    times = [100.0, 365.0, 730.0]
    np.testing.assert_array_equal(
        again.predict_survival(test, times), est.predict_survival(test, times)
    )
    np.testing.assert_array_equal(again.selected_, est.selected_)
    assert again.best_iteration_ == est.best_iteration_
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert meta["task"] == {"name": "survival", "state": None}
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["bundle.json", "model.txt"]


def test_the_study_builds_the_survival_model_for_a_survival_task() -> None:
    job = FoldJob(
        model=ModelSpec("lightgbm", "lightgbm", ("ehr", "omics")),
        fold=0,
        cohort_path="",
        train=np.arange(3),
        test=np.arange(0),
        task="survival",
        estimator={},
        seed=5,
        encoder_store="",
        out="",
        threads=1,
    )
    est = make_estimator(job)
    assert isinstance(est, LightGBMBaseline)
    assert (est.task, est.random_state, est.num_threads) == ("survival", 5, 1)


# --- features and rounds ---------------------------------------------------------------------


def test_informative_columns_drop_constant_and_nearly_empty_ones() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 5))
    x[:, 1] = 3.0  # constant
    x[5:, 2] = np.nan  # observed 5 times
    x[:, 3] = np.nan  # never observed
    x[:40, 4], x[40:, 4] = 1.0, np.nan  # one value where present: its presence informs
    np.testing.assert_array_equal(informative_columns(x, min_observed=20), [0, 4])
    np.testing.assert_array_equal(informative_columns(x, min_observed=5), [0, 2, 4])


def test_association_is_a_rank_z_score_that_skips_missing_values() -> None:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.normal(size=n)
    x = np.c_[np.exp(y + rng.normal(0, 0.5, n)), rng.normal(size=n), y.copy()]
    x[:300, 2] = np.nan  # the same signal, seen in a quarter of the patients
    z = association(x, y)
    assert z[0] > 10 and z[1] < 3
    # a monotone transform does not change the score
    assert association(np.log(x[:, :1]), y)[0] == pytest.approx(z[0])
    # on its 100 observed values: their rank correlation with y, times sqrt(99)
    seen = y[300:]
    corr = np.corrcoef(np.argsort(np.argsort(seen)), seen)[0, 1]
    assert z[2] == pytest.approx(corr * np.sqrt(99))


def test_the_screen_keeps_each_wide_modality_s_most_associated_features(train: Cohort) -> None:
    model = LightGBMBaseline(max_features=5, n_estimators=30, num_threads=1).fit(train)
    names = [model.feature_names_[i] for i in model.selected_]
    omics = [n for n in names if n.startswith("omics:")]
    assert len(omics) == 5 and "omics:g0" in omics  # the gene that carries the signal
    assert {"ehr:x1", "ehr:age", "labs:crp", "labs:wbc"} <= set(names)  # small blocks kept
    assert "ehr:const" not in names
    importances = model.feature_importances()
    assert len(importances) == model.n_features_in_
    assert (importances[[n for n in model.feature_names_ if n not in names]] == 0).all()
    # survival screens on the null model's martingale residuals
    surv = _survival(max_features=5, n_estimators=30).fit(train)
    assert "omics:g0" in [surv.feature_names_[i] for i in surv.selected_]
    # without a cap only uninformative columns go
    every = LightGBMBaseline(max_features=None, n_estimators=30, num_threads=1).fit(train)
    assert len(every.selected_) == every.n_features_in_ - 1


def test_screen_without_an_outcome_keeps_the_most_variable() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) * np.array([1, 5, 2, 4, 3, 1.0])
    names = ["a:0", "a:1", "a:2", "a:3", "b:0", "b:1"]
    keep = screen_features(x, names, ["a", "b"], signal=None, max_features=2, min_observed=1)
    np.testing.assert_array_equal(keep, [1, 3, 4, 5])


def test_early_stopping_refits_on_every_patient_and_small_cohorts_fall_back(
    train: Cohort, test: Cohort
) -> None:
    model = LightGBMBaseline(num_threads=1).fit(train)
    assert 1 <= model.best_iteration_ < 1000
    assert model.model_.booster_.current_iteration() == model.best_iteration_
    auroc = roc_auc_score(test.patients["outcome"], model.predict_proba(test)[:, 1])
    assert auroc > 0.75
    fixed = LightGBMBaseline(n_estimators=40, early_stopping_rounds=None, num_threads=1)
    assert fixed.fit(train).model_.booster_.current_iteration() == 40
    small = train.take(np.arange(120))  # ~12 patients of the smaller class in validation
    with pytest.warns(UserWarning, match="too small for an inner validation split"):
        few = LightGBMBaseline(num_threads=1, min_child_samples=5).fit(small)
    assert few.best_iteration_ == SMALL_COHORT_ROUNDS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LightGBMBaseline(num_threads=1, validation_fraction=0.5, n_estimators=30).fit(small)


def test_class_weights_name_classes_of_the_outcome(train: Cohort) -> None:
    base = LightGBMBaseline(n_estimators=20, early_stopping_rounds=None, num_threads=1)
    plain = base.fit(train).predict_proba(train)[:, 1].mean()
    weighted = base.set_params(class_weight={1: 4.0}).fit(train).predict_proba(train)[:, 1]
    assert weighted.mean() > plain + 0.1
    balanced = base.set_params(class_weight="balanced").fit(train).predict_proba(train)[:, 1]
    assert balanced.mean() > plain
    with pytest.raises(InputError, match="class 7"):
        base.set_params(class_weight={7: 2.0}).fit(train)


def test_threads_one_on_small_data_every_core_on_large_unless_given() -> None:
    auto = LightGBMBaseline()
    assert auto._threads(800 * 300) == 1  # OpenMP barriers cost more than they gain
    assert auto._threads(SINGLE_THREAD_CELLS) == 0  # LightGBM's default: every core
    assert LightGBMBaseline(num_threads=3)._threads(800 * 300) == 3
