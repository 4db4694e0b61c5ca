"""The ``auto`` preset: settings chosen from the training cohort, recorded with reasons,
and small cohorts that fit without failing; supervised gene screening."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.models._auto import RAW, CohortProfile, planned_interactions, resolve
from medweave.models._prep import screen_scores
from medweave.models.estimator import MultimodalEstimator

TABULAR = ["ehr", "omics", "environment"]


def _profile(events: int, patients: int, genes: int = 1200) -> CohortProfile:
    return CohortProfile(
        patients,
        events,
        "events",
        {
            "ehr": {"kind": "tabular", "features": 94, "present": patients},
            "imaging": {"kind": "image", "features": 0, "present": patients},
            "omics": {"kind": "omics", "features": genes, "present": patients},
            "environment": {"kind": "exposure", "features": 16, "present": patients},
        },
    )


def _values(
    cohort: Cohort, events: int, patients: int, genes: int = 1200, **params: object
) -> dict:
    res = resolve(
        {"preset": "auto", "fusion": "concat", **params},
        _profile(events, patients, genes),
        task="binary",
        cohort=cohort,
    )
    return res.values


def test_the_demo_cohort_gets_the_demo_settings(built_cohort: Cohort) -> None:
    # The demo's folds: 1,333 training patients, 356 of them in the smaller class.
    v = _values(built_cohort, 356, 1333)
    demo = {
        "lr": 5e-4,
        "pretrain_lr": 1e-3,
        "min_epochs": 30,
        "patience": 20,
        "max_epochs": 120,
        "pca": {"ehr": 8, "omics": 16},
        "pca_keep": ["age_at_index", "sex_male"],
        "encoder_params": {"imaging": {"augment": True}},
        "ensemble": 3,
        "interactions": 1,
    }
    assert {k: v[k] for k in demo} == demo
    assert (v["val_fraction"], v["batch_size"], v["embed_dim"], v["fused_dim"]) == (
        0.15,
        128,
        32,
        32,
    )
    assert v["omics_screen"] is None  # 1,200 genes for 356 events: by variance
    assert "fusion_params" not in v  # the fusion's own sizes at the demo's width


def test_small_cohorts_get_smaller_networks_no_split_and_screening(built_cohort: Cohort) -> None:
    v = _values(built_cohort, 40, 150, genes=12000)
    assert v["val_fraction"] == 0.0 and v["min_epochs"] == v["max_epochs"] == 60
    assert v["batch_size"] == 18  # an eighth of 150
    assert v["embed_dim"] == v["fused_dim"] == 8
    assert v["pca"] == {"ehr": 2, "omics": 2, "environment": 2}
    assert v["omics_screen"] == {"omics": 200}  # 5 x 40 events
    assert v["encoder_params"]["omics"] == {"hidden": [32]}
    assert v["fusion_params"] == {"proj_dim": 8, "hidden": 32}
    mid = _values(built_cohort, 100, 400)
    assert mid["val_fraction"] == 0.2 and mid["embed_dim"] == 16  # 20 events held out


def test_given_settings_are_kept_and_preset_none_is_the_raw_constants(
    built_cohort: Cohort,
) -> None:
    v = _values(
        built_cohort, 356, 1333, lr=1e-2, pca=None, encoder_params={"imaging": {"tta": True}}
    )
    assert v["lr"] == 1e-2 and v["pca"] is None
    assert v["encoder_params"]["imaging"] == {"augment": True, "tta": True}
    raw = resolve({"preset": "none"}, _profile(356, 1333), task="binary", cohort=built_cohort)
    assert raw.values == RAW and raw.settings == {}
    with pytest.raises(InputError, match="preset="):
        resolve({"preset": "fast"}, _profile(356, 1333), task="binary", cohort=built_cohort)
    assert planned_interactions({}) and not planned_interactions({"preset": "none"})
    assert not planned_interactions({"interactions": None})


def test_screen_scores_find_the_associated_genes() -> None:
    rng = np.random.default_rng(0)
    n, p = 300, 200
    z = rng.standard_normal((n, p))
    # binary: gene 3 raises the odds
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * z[:, 3]))).astype(float)
    assert np.argmax(np.abs(screen_scores(z, y))) == 3
    # survival: gene 7 raises the hazard; censoring at random
    t = rng.exponential(np.exp(-z[:, 7]))
    c = rng.exponential(2.0, n)
    surv = np.stack([np.minimum(t, c), (t <= c).astype(float)], axis=1)
    score = screen_scores(z, surv)
    assert np.argmax(np.abs(score)) == 7 and score[7] > 0  # higher expression, earlier event
    assert abs(np.delete(score, 7)).max() < 4  # the others are z-like noise


@pytest.fixture(scope="module")
def small(built_cohort: Cohort) -> tuple[Cohort, Cohort]:
    """160 training patients of the 800 (about 40 deaths), the rest held out."""
    rows = np.random.default_rng(1).permutation(built_cohort.n)
    return built_cohort.take(np.sort(rows[:160])), built_cohort.take(np.sort(rows[160:]))


@pytest.mark.slow
def test_a_small_cohort_fits_with_recorded_settings_and_warnings(
    small: tuple[Cohort, Cohort], tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    train, test = small
    with caplog.at_level(logging.WARNING, logger="medweave"):
        est = MultimodalEstimator(modalities=TABULAR, fusion="concat", ensemble=1).fit(train)
    s = est.settings_
    assert "ensemble" not in s  # given, not chosen
    assert (
        s["val_fraction"]["value"] == 0.0
        and "no early-stopping split" in (s["val_fraction"]["reason"])
    )
    assert s["embed_dim"]["value"] == 8
    assert set(s["pca"]["value"]) == {"ehr", "omics", "environment"}
    assert s["events_per_1k_parameters"]["value"] > 5  # scaled down: no capacity warning
    y = test.patients["outcome"].to_numpy()
    assert roc_auc_score(y, est.predict_proba(test)) > 0.6
    # the choices travel in the bundle
    loaded = MultimodalEstimator.load(est.save(tmp_path / "m"))
    assert loaded.settings_ == est.settings_
    assert np.allclose(loaded.predict_proba(test), est.predict_proba(test), atol=1e-6)
    # the raw constants on the same cohort: wide networks, warned about
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medweave"):
        raw = MultimodalEstimator(
            modalities=TABULAR, fusion="concat", preset="none", max_epochs=3
        ).fit(train)
    assert raw.settings_["events_per_1k_parameters"]["value"] < 5
    assert any("trainable parameters" in w for w in raw.settings_warnings_)
    assert any("trainable parameters" in r.getMessage() for r in caplog.records)


def test_screening_keeps_outcome_genes_inside_the_fold(built_cohort: Cohort) -> None:
    train = built_cohort.take(np.arange(300))
    est = MultimodalEstimator(
        modalities=["omics"],
        fusion="concat",
        omics_screen={"omics": 40},
        pca=None,
        ensemble=1,
        interactions=None,
        max_epochs=1,
        min_epochs=0,
    ).fit(train)
    prep = est.preps_["omics"]
    assert len(prep.arrays["genes"]) == 40 and prep.config["screen"]["genes"] == 40
    bad: dict[str, Any] = {"omics_screen": 40}
    with pytest.raises(InputError, match="omics_screen="):
        MultimodalEstimator(modalities=["omics"], max_epochs=1, **bad).fit(train)
