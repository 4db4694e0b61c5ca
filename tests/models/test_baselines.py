"""Classical baselines on a small hand-built cohort with a known signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from medweave.cohort import Cohort, ModalityBlock
from medweave.errors import InputError
from medweave.models._coxnet import RiskSets, fit_path
from medweave.models.baselines import (
    CoxNetBaseline,
    CoxPHBaseline,
    ElasticNetBaseline,
    LightGBMBaseline,
    cohort_features,
)

from ._fresh import assert_reloads_in_fresh_process

N_GENES = 40


def make_cohort(n: int, seed: int) -> Cohort:
    """EHR for everyone; labs for ~70%; omics for ~80%; an image block.

    True log hazard / log odds: 1.0 ehr:x1 + 1.2 labs:crp + 0.8 omics:g0 (crp and g0 matter
    whether or not the patient has them measured).
    """
    rng = np.random.default_rng(seed)
    ids = [f"p{seed}-{i:04d}" for i in range(n)]
    age = rng.normal(65, 10, n)
    x1 = rng.normal(size=n)
    crp = rng.normal(size=n)
    genes = rng.normal(size=(n, N_GENES)) * 3.0 * 0.9 ** np.arange(N_GENES)  # g0 most variable
    risk = 1.0 * x1 + 1.2 * crp + 0.8 * genes[:, 0] / 3.0 + 0.02 * (age - 65)
    outcome = rng.uniform(size=n) < 1 / (1 + np.exp(-(risk - 0.5)))
    t_event = rng.exponential(365 * np.exp(-risk))
    t_censor = rng.uniform(100, 1000, n)
    patients = pd.DataFrame(
        {
            "patient_id": ids,
            "index_date": pd.Timestamp("2020-01-01"),
            "outcome": outcome.astype(int),
            "time": np.minimum(t_event, t_censor).round(),
            "event": t_event <= t_censor,
            "score": risk + rng.normal(0, 0.3, n),
        }
    )
    ehr = np.c_[age, rng.integers(0, 2, n), x1, rng.normal(size=(n, 2)), np.ones(n)]
    ehr[rng.uniform(size=n) < 0.1, 3] = np.nan  # a measurement not taken
    has_labs = rng.uniform(size=n) < 0.7
    labs = np.c_[crp, rng.normal(size=(n, 2))][has_labs]
    has_omics = rng.uniform(size=n) < 0.8
    cohort = Cohort(patients)
    cohort.add(
        ModalityBlock(
            name="ehr",
            kind="tabular",
            ids=ids,
            x=ehr,
            feature_names=["age", "male", "x1", "n1", "n2", "const"],
        )
    )
    cohort.add(
        ModalityBlock(
            name="labs",
            kind="tabular",
            ids=[i for i, h in zip(ids, has_labs, strict=True) if h],
            x=labs,
            feature_names=["crp", "wbc", "hb"],
        )
    )
    cohort.add(
        ModalityBlock(
            name="omics",
            kind="omics",
            ids=ids,
            x=genes,
            feature_names=[f"g{j}" for j in range(N_GENES)],
            present=has_omics,  # rows of absent patients hold values that must not be read
        )
    )
    cohort.add(
        ModalityBlock(
            name="ct",
            kind="image",
            ids=ids,
            x=np.zeros((n, 0)),
            feature_names=[],
            paths=list[str | None](ids),
        )
    )
    return cohort


@pytest.fixture(scope="module")
def train() -> Cohort:
    return make_cohort(800, seed=0)


@pytest.fixture(scope="module")
def test() -> Cohort:
    return make_cohort(600, seed=1)


# --- features ------------------------------------------------------------------------------


def test_cohort_features_concatenates_feature_blocks(train: Cohort) -> None:
    x, names = cohort_features(train)
    assert x.shape == (800, 6 + 3 + N_GENES) and x.dtype == np.float32
    assert names[:9] == [
        "ehr:age",
        "ehr:male",
        "ehr:x1",
        "ehr:n1",
        "ehr:n2",
        "ehr:const",
        "labs:crp",
        "labs:wbc",
        "labs:hb",
    ]
    assert names[9] == "omics:g0" and not any(n.startswith("ct:") for n in names)
    labs = train.modalities["labs"].present
    assert 0.6 < labs.mean() < 0.8
    assert np.isnan(x[~labs, 6:9]).all() and not np.isnan(x[labs, 6:9]).any()
    omics = train.modalities["omics"].present
    assert np.isnan(x[~omics, 9:]).all() and not np.isnan(x[omics, 9:]).any()
    np.testing.assert_array_equal(x[:, 2], train.modalities["ehr"].x[:, 2])

    x2, names2 = cohort_features(train, ["labs", "ehr"])
    assert names2[:3] == ["labs:crp", "labs:wbc", "labs:hb"] and x2.shape == (800, 9)
    x3, names3 = cohort_features(train, kinds=("omics",))
    assert x3.shape == (800, N_GENES) and names3[0] == "omics:g0"


def test_cohort_features_rejects_bad_modalities(train: Cohort) -> None:
    with pytest.raises(InputError, match="did you mean 'labs'"):
        cohort_features(train, ["lab"])
    with pytest.raises(InputError, match="'ct' is image data"):
        cohort_features(train, ["ehr", "ct"])
    with pytest.raises(InputError, match="listed twice"):
        cohort_features(train, ["ehr", "ehr"])
    with pytest.raises(InputError, match="no modality of kind exposure"):
        cohort_features(train, kinds=("exposure",))


# --- LightGBM ------------------------------------------------------------------------------


def _fast(**params: object) -> LightGBMBaseline:
    return LightGBMBaseline(**{"n_estimators": 100, "num_threads": 1, **params})  # type: ignore[arg-type]


def test_lightgbm_binary_learns_the_signal(train: Cohort, test: Cohort) -> None:
    model = _fast().fit(train)
    proba = model.predict_proba(test)
    assert proba.shape == (600, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    y = test.patients["outcome"].to_numpy()
    auroc = roc_auc_score(y, proba[:, 1])
    assert auroc > 0.75
    assert model.score(test) == pytest.approx(auroc)
    assert model.score(test, "outcome") == pytest.approx(auroc)
    assert model.score(test, y) == pytest.approx(auroc)
    assert set(model.predict(test).tolist()) <= {0, 1}
    np.testing.assert_array_equal(model.predict(test), (proba[:, 1] >= 0.5).astype(int))
    top = model.feature_importances().index[:3].tolist()
    assert {"ehr:x1", "labs:crp"} <= set(top)


def test_lightgbm_is_deterministic(train: Cohort, test: Cohort) -> None:
    params = {"subsample": 0.7, "colsample_bytree": 0.7, "random_state": 3}
    a = _fast(**params).fit(train).predict_proba(test)
    b = _fast(**params).fit(train).predict_proba(test)
    np.testing.assert_array_equal(a, b)
    # a short fit: two OpenMP threads crawl on a machine whose cores are busy
    short = {**params, "n_estimators": 15, "early_stopping_rounds": None}
    c1 = _fast(**short).fit(train).predict_proba(test)
    c2 = _fast(**{**short, "num_threads": 2}).fit(train).predict_proba(test)
    np.testing.assert_array_equal(c1, c2)
    d = _fast(**{**params, "random_state": 4}).fit(train).predict_proba(test)
    assert not np.array_equal(a, d)


def test_lightgbm_multiclass_and_regression(train: Cohort, test: Cohort) -> None:
    def tertile(c: Cohort) -> np.ndarray:
        s = c.patients["score"].to_numpy()
        return np.array(["low", "mid", "high"])[np.digitize(s, [-0.7, 0.7])]

    clf = _fast(task="multiclass").fit(train, tertile(train))
    assert clf.classes_.tolist() == ["high", "low", "mid"]
    assert clf.predict_proba(test).shape == (600, 3)
    assert set(clf.predict(test).tolist()) <= {"low", "mid", "high"}
    acc = clf.score(test, tertile(test))
    assert acc == pytest.approx(np.mean(clf.predict(test) == tertile(test)))
    assert acc > 0.55  # chance is about 1/3
    reg = _fast(task="regression").fit(train, "score")
    assert reg.score(test, "score") > 0.5
    with pytest.raises(InputError, match="no probabilities"):
        reg.predict_proba(test)


def test_lightgbm_refuses_bad_tasks_parameters_and_targets(train: Cohort) -> None:
    with pytest.raises(InputError, match="not one of binary, multiclass, regression, survival"):
        LightGBMBaseline(task="cox").fit(train)
    for bad in ({"max_features": 0}, {"early_stopping_rounds": 0}, {"validation_fraction": 1}):
        with pytest.raises(InputError, match=next(iter(bad))):
            LightGBMBaseline(**bad).fit(train)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no probabilities"):
        LightGBMBaseline(task="survival", n_estimators=5, num_threads=1).fit(train).predict_proba(
            train
        )
    with pytest.raises(InputError, match="has no risk"):
        _fast(n_estimators=5).fit(train).predict_risk(train)
    with pytest.raises(InputError, match="no column 'died'"):
        LightGBMBaseline().fit(train, "died")
    with pytest.raises(InputError, match=r"expected \(800,\)"):
        LightGBMBaseline().fit(train, np.zeros(10))
    with pytest.raises(NotFittedError):
        LightGBMBaseline().predict(train)


def test_baselines_check_the_features_at_prediction(train: Cohort) -> None:
    model = _fast(modalities=["ehr", "labs"]).fit(train)
    assert model.feature_names_[-1] == "labs:hb" and model.n_features_in_ == 9
    other = make_cohort(50, seed=9)
    assert model.predict_proba(other).shape == (50, 2)  # the omics block is not used
    del other.modalities["labs"]
    with pytest.raises(InputError, match="no modality 'labs'"):
        model.predict(other)
    renamed = make_cohort(50, seed=9)
    renamed.modalities["labs"].feature_names[0] = "CRP"
    with pytest.raises(InputError, match=r"features differ.*'labs:crp'"):
        model.predict(renamed)


def test_sklearn_parameter_protocol() -> None:
    model = LightGBMBaseline(task="regression", n_estimators=20, modalities=["ehr"])
    params = model.get_params()
    assert params["task"] == "regression" and params["n_estimators"] == 20
    assert params["modalities"] == ["ehr"] and params["random_state"] == 0
    twin = clone(model)
    assert twin is not model and twin.get_params() == params
    assert twin.set_params(n_estimators=50, learning_rate=0.1) is twin
    assert twin.n_estimators == 50 and model.n_estimators == 20
    with pytest.raises(ValueError, match="Invalid parameter"):
        twin.set_params(n_trees=5)
    cox = CoxPHBaseline(penalizer=0.5, max_features=10)
    assert clone(cox).get_params() == cox.get_params()
    assert cox.get_params()["l1_ratio"] == 0.0
    assert "penalizer=0.5" in repr(cox)


# --- Cox -----------------------------------------------------------------------------------


def test_coxph_baseline_ranks_patients(train: Cohort, test: Cohort) -> None:
    model = CoxPHBaseline(modalities=["ehr", "labs"]).fit(train)
    risk = model.predict_risk(test)
    assert risk.shape == (600,) and np.isfinite(risk).all()
    time, event = test.patients["time"].to_numpy(), test.patients["event"].to_numpy()
    cindex = concordance_index(time, -risk, event)
    assert cindex > 0.72
    assert model.score(test) == pytest.approx(cindex)
    assert model.score(test, (time, event)) == pytest.approx(cindex)
    np.testing.assert_array_equal(model.predict(test), risk)
    coef = model.coef_
    assert coef["ehr:x1"] > 0.5 and coef["labs:crp"] > 0.5
    # medians and missing indicators learned on training data; constant column dropped
    assert "labs:crp (missing)" in coef.index and "ehr:n1 (missing)" in coef.index
    assert "ehr:const" not in coef.index and "ehr:x1 (missing)" not in coef.index
    design = model.transform(test)
    labs = test.modalities["labs"].present
    np.testing.assert_array_equal(design["labs:crp (missing)"], (~labs).astype(float))
    crp_median = np.nanmedian(cohort_features(train, ["labs"])[0][:, 0].astype(np.float64))
    np.testing.assert_allclose(design.loc[~labs, "labs:crp"], crp_median)
    surv = model.predict_survival(test, [30.0, 180.0, 365.0])
    assert surv.shape == (600, 3) and np.all(np.diff(surv, axis=1) <= 0)
    assert np.all((surv > 0) & (surv <= 1))


def test_coxph_caps_wide_modalities_by_variance(train: Cohort, test: Cohort) -> None:
    model = CoxPHBaseline(max_features=5, missing_indicators=False).fit(train)
    x, names = cohort_features(train, ["omics"])
    top5 = np.sort(np.argsort(-np.nanvar(x.astype(np.float64), axis=0))[:5])
    omics = [c for c in model.columns_ if c.startswith("omics:")]
    assert omics == [names[j] for j in top5]  # the five most variable genes
    assert "omics:g0" in omics and "omics:g30" not in omics
    assert [c for c in model.columns_ if c.startswith("labs:")] == [
        "labs:crp",
        "labs:wbc",
        "labs:hb",
    ]
    assert not any("(missing)" in c for c in model.columns_)
    assert model.score(test) > 0.7


def test_coxph_targets(train: Cohort) -> None:
    with pytest.raises(InputError, match="no events"):
        CoxPHBaseline().fit(train, (np.ones(800), np.zeros(800)))
    with pytest.raises(InputError, match="800"):
        CoxPHBaseline().fit(train, (np.ones(10), np.ones(10)))
    no_outcome = Cohort(train.patients.drop(columns=["time", "event"]))
    for block in train.modalities.values():
        no_outcome.add(block)
    with pytest.raises(InputError, match="no event and time column"):
        CoxPHBaseline().fit(no_outcome)
    with pytest.raises(NotFittedError):
        CoxPHBaseline().predict_risk(train)


def test_lightgbm_bundle_reloads_with_identical_predictions(
    train: Cohort, test: Cohort, tmp_path: Path
) -> None:
    est = LightGBMBaseline(task="binary", n_estimators=40, num_threads=1).fit(train)
    est.save(tmp_path / "lgbm")
    assert sorted(p.name for p in (tmp_path / "lgbm").iterdir()) == ["bundle.json", "model.txt"]
    again = LightGBMBaseline.load(tmp_path / "lgbm")
    np.testing.assert_array_equal(again.predict_proba(test), est.predict_proba(test))
    np.testing.assert_array_equal(again.predict(test), est.predict(test))
    (tmp_path / "lgbm" / "bundle.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="expected 'medweave-lightgbm/1'"):
        LightGBMBaseline.load(tmp_path / "lgbm")


def test_coxph_bundle_reloads_with_identical_predictions(
    train: Cohort, test: Cohort, tmp_path: Path
) -> None:
    est = CoxPHBaseline(max_features=20).fit(train)
    est.save(tmp_path / "cox")
    again = CoxPHBaseline.load(tmp_path / "cox")
    np.testing.assert_allclose(again.predict_risk(test), est.predict_risk(test), rtol=1e-12)
    times = [100.0, 365.0, 730.0]
    np.testing.assert_allclose(
        again.predict_survival(test, times), est.predict_survival(test, times), rtol=1e-10
    )
    assert again.score(test) == pytest.approx(est.score(test))


# --- elastic net ---------------------------------------------------------------------------


def noise(cohort: Cohort, seed: int) -> Cohort:
    """``cohort`` with outcomes unrelated to any feature."""
    out = cohort.take(np.arange(cohort.n))
    rng = np.random.default_rng(seed)
    out.patients["outcome"] = (rng.uniform(size=cohort.n) < 0.4).astype(int)
    out.patients["time"] = rng.exponential(300, cohort.n).round() + 1
    out.patients["event"] = rng.uniform(size=cohort.n) < 0.5
    return out


def test_elasticnet_learns_the_signal_with_a_penalty_chosen_inside(
    train: Cohort, test: Cohort
) -> None:
    model = ElasticNetBaseline().fit(train)
    proba = model.predict_proba(test)
    assert proba.shape == (600, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    auroc = roc_auc_score(test.patients["outcome"], proba[:, 1])
    assert auroc > 0.75 and model.score(test) == pytest.approx(auroc)
    assert model.C_ in model.Cs and model.l1_ratio_ in model.l1_ratios
    coef = model.coefficients
    assert coef["ehr:x1"] > 0.3 and coef["labs:crp"] > 0.3
    assert coef.abs().sort_values().index[-1] in {"ehr:x1", "labs:crp"}
    # one indicator per missingness pattern: an absent modality is one column
    assert "labs (missing)" in coef.index and "omics (missing)" in coef.index
    assert "ehr:n1 (missing)" in coef.index and "labs:crp (missing)" not in coef.index
    assert "ehr:const" not in coef.index
    # medians and standardisation learned on the training cohort
    design = model.transform(test)
    absent = ~test.modalities["labs"].present
    crp = model.columns_.index("labs:crp")
    median = np.nanmedian(cohort_features(train, ["labs"])[0][:, 0].astype(np.float64))
    np.testing.assert_allclose(
        design[absent, crp], (median - model.prep_.mean[crp]) / model.prep_.scale[crp]
    )
    np.testing.assert_array_equal(model.predict(test), (proba[:, 1] >= 0.5).astype(int))
    again = ElasticNetBaseline().fit(train).predict_proba(test)
    np.testing.assert_array_equal(again, proba)  # deterministic


def test_elasticnet_on_noise_chooses_a_strong_penalty(train: Cohort) -> None:
    signal = ElasticNetBaseline(modalities=["ehr", "labs"]).fit(train)
    model = ElasticNetBaseline(modalities=["ehr", "labs"]).fit(noise(train, 3))
    assert model.C_ <= 0.01 < signal.C_
    assert np.abs(model.coef_).max() < 0.15 < 0.5 < np.abs(signal.coef_).max()


def test_coxnet_ranks_patients(train: Cohort, test: Cohort) -> None:
    model = CoxNetBaseline().fit(train)
    risk = model.predict_risk(test)
    assert risk.shape == (600,) and np.isfinite(risk).all()
    time, event = test.patients["time"].to_numpy(), test.patients["event"].to_numpy()
    cindex = concordance_index(time, -risk, event)
    assert cindex > 0.72 and model.score(test) == pytest.approx(cindex)
    coef = model.coefficients
    assert coef["ehr:x1"] > 0.3 and coef["labs:crp"] > 0.3
    assert (coef == 0).sum() > 10  # the L1 part drops noise genes
    assert model.l1_ratio_ in model.l1_ratios and model.penalty_ > 0
    surv = model.predict_survival(test, [-1.0, 30.0, 180.0, 365.0])
    assert surv.shape == (600, 4) and np.all(np.diff(surv, axis=1) <= 0)
    assert np.all(surv[:, 0] == 1.0) and np.all((surv > 0) & (surv <= 1))


def test_coxnet_on_noise_keeps_no_feature(train: Cohort) -> None:
    model = CoxNetBaseline(modalities=["ehr", "labs"]).fit(noise(train, 4))
    assert np.abs(model.coef_).max() < 0.1 and (model.coef_ == 0).mean() >= 0.8


def test_coxnet_solver_matches_lifelines_without_ties() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    x = (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)  # lifelines scales by the sample SD
    t = rng.exponential(np.exp(-(x[:, 0] - 0.5 * x[:, 1]))) * 50 + 1
    c = rng.uniform(0, 100, 300)
    time, event = np.minimum(t, c), t <= c
    betas, converged = fit_path(x, RiskSets.of(time, event), [0.05], l1_ratio=0.0, tol=1e-9)
    frame = pd.DataFrame(x, columns=[f"c{j}" for j in range(5)]).assign(T=time, E=event)
    ref = CoxPHFitter(penalizer=0.05).fit(frame, "T", "E").params_.to_numpy()
    assert converged
    np.testing.assert_allclose(betas[0], ref, atol=1e-4)


def test_linear_baselines_refuse_bad_input(train: Cohort) -> None:
    with pytest.raises(InputError, match="max_features must be >= 1"):
        ElasticNetBaseline(max_features=0).fit(train)
    with pytest.raises(InputError, match=r"l1_ratios must lie in \[0, 1\]"):
        CoxNetBaseline(l1_ratios=(0.5, 2.0)).fit(train)
    with pytest.raises(InputError, match="scoring 'auc' is not one of neg_log_loss, roc_auc"):
        ElasticNetBaseline(scoring="auc").fit(train)
    with pytest.raises(InputError, match="inner_folds must be >= 2"):
        CoxNetBaseline(inner_folds=1).fit(train)
    one_event = np.zeros(800, dtype=bool)
    one_event[0] = True
    with pytest.raises(InputError, match="has 1 events"):
        CoxNetBaseline().fit(train, (np.arange(1, 801), one_event))
    y = np.zeros(800, dtype=int)
    y[0] = 1
    with pytest.raises(InputError, match="1 patients in its smaller class"):
        ElasticNetBaseline().fit(train, y)
    with pytest.raises(NotFittedError):
        CoxNetBaseline().predict_risk(train)


def test_elasticnet_bundle_reloads_in_a_fresh_process(
    train: Cohort, test: Cohort, tmp_path: Path
) -> None:
    est = ElasticNetBaseline(modalities=["ehr", "labs", "omics"], max_features=10).fit(train)
    assert_reloads_in_fresh_process(est, test, tmp_path)
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [
        "bundle.json",
        "model.safetensors",
    ]
    again = ElasticNetBaseline.load(tmp_path / "bundle")
    assert again.get_params() == {
        **est.get_params(),
        "Cs": list(est.Cs),
        "l1_ratios": list(est.l1_ratios),
        "kinds": list(est.kinds),
    }
    assert (again.C_, again.l1_ratio_, again.columns_) == (est.C_, est.l1_ratio_, est.columns_)
    with pytest.raises(InputError, match="expected 'medweave-coxnet/1'"):
        CoxNetBaseline.load(tmp_path / "bundle")


def test_coxnet_bundle_reloads_in_a_fresh_process(
    train: Cohort, test: Cohort, tmp_path: Path
) -> None:
    est = CoxNetBaseline(max_features=10).fit(train)
    assert_reloads_in_fresh_process(est, test, tmp_path)
    again = CoxNetBaseline.load(tmp_path / "bundle")
    times = [10.0, 365.0, 5000.0]
    np.testing.assert_array_equal(
        again.predict_survival(test, times), est.predict_survival(test, times)
    )
