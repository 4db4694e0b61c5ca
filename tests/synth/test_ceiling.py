"""The observed-data ceiling: cross-fitted reconstructions, posterior averaging, and what
the written data reveal of each latent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, cross_val_predict

from medweave.synth import _model, imaging
from medweave.synth._ceiling import Method, Posteriors, measured_posteriors, reconstruct

NAMES = ("age_z", "male", "s_ehr", "img", "m_prolif", "m_inflam", "env")


@pytest.fixture(scope="module")
def truth(cohort_dir: Path) -> pd.DataFrame:
    index = pd.read_parquet(cohort_dir / "index.parquet")
    table = pd.read_parquet(cohort_dir / "truth" / "patients.parquet")
    return index.merge(table, on=["person_id", "patient_id"], validate="one_to_one")


@pytest.fixture(scope="module")
def posteriors(cohort_dir: Path, truth: pd.DataFrame) -> Posteriors:
    return measured_posteriors(
        cohort_dir,
        patient_ids=truth["patient_id"].tolist(),
        latents={k: truth[k].to_numpy() for k in NAMES},
        seed=7,
    )


# --- reconstruct ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ridge", "boosting"])
def test_reconstruction_is_cross_fitted(method: Method) -> None:
    """Features of pure noise reveal nothing: each row is predicted by a model that never saw
    it, so the residual variance stays at least the prior's (an in-sample fit on 200
    features of 300 patients would shrink it)."""
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 300)
    x = rng.normal(0, 1, (300, 200))
    mean, cov = reconstruct(x, y, method=method, seed=0)
    assert mean.shape == (300, 1)
    assert cov.shape == (1, 1)
    assert cov[0, 0] > 0.95 * y.var()


def test_ridge_reconstruction_has_the_bayes_residual_variance() -> None:
    """Five readings y + N(0, 1) of y ~ N(0, 1): the posterior variance is 1 / (1 + 5)."""
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, (3000, 2))
    x = np.column_stack([y[:, [j]] + rng.normal(0, 1, (3000, 5)) for j in range(2)])
    mean, cov = reconstruct(x, y, method="ridge", seed=0)
    assert np.diag(cov) == pytest.approx([1 / 6, 1 / 6], rel=0.1)
    assert abs(cov[0, 1]) < 0.02
    assert np.corrcoef(mean[:, 0], y[:, 0])[0, 1] == pytest.approx(np.sqrt(5 / 6), abs=0.02)


# --- measured_expectation -----------------------------------------------------------------
def _latents(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: rng.normal(0, 1, n) for k in NAMES} | {"male": (rng.random(n) < 0.5) * 1.0}


def test_exact_posteriors_give_the_latent_ceiling() -> None:
    rng = np.random.default_rng(2)
    latents = _latents(50, rng)
    present = {m: rng.random(50) < 0.7 for m in _model.OPTIONAL_MODALITIES}
    exact = {
        ("s_ehr",): (np.ones(50, bool), latents["s_ehr"][:, None], np.zeros((1, 1))),
    }
    a = _model.measured_expectation(np.random.default_rng(3), latents, present, exact)
    b = _model.observed_expectation(np.random.default_rng(3), latents, present)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_posterior_average_matches_brute_force() -> None:
    """s_ehr ~ N(mu, s^2), the rest known: the Monte Carlo average of the true model equals
    the closed form of the expected hazard ratio and a quadrature of the event probability."""
    rng = np.random.default_rng(4)
    n = 5
    latents = _latents(n, rng)
    present = {m: np.ones(n, bool) for m in _model.OPTIONAL_MODALITIES}
    mu, var = rng.normal(0, 1, n), 0.3
    post = {("s_ehr",): (np.ones(n, bool), mu[:, None], np.array([[var]]))}
    p, log_hr = _model.measured_expectation(rng, latents, present, post, n_draws=200_000)
    b = _model.COEFFICIENTS["s_ehr"]
    rest = _model.linear_predictor(latents) - b * latents["s_ehr"]
    np.testing.assert_allclose(log_hr, rest + b * mu + b**2 * var / 2, atol=0.01)
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    eta = rest[:, None] + b * (mu[:, None] + np.sqrt(var) * nodes)
    quad = _model.event_probability(eta) @ weights / weights.sum()
    np.testing.assert_allclose(p, quad, rtol=0.01)


# --- what the written cohort reveals -----------------------------------------------------
def _lesion_area(path: Path) -> float:
    """Total lesion area (px) by a plain segmentation: soft-tissue blobs of lesion size
    (vessels are smaller, the body larger), summed as fractions between lung and lesion."""
    ds = pydicom.dcmread(path)
    hu = ndimage.gaussian_filter(ds.pixel_array.astype(np.float64) - 1024.0, 0.7)
    labels, k = ndimage.label(hu > -450)
    sizes = ndimage.sum(np.ones_like(hu), labels, np.arange(1, k + 1))
    blobs = np.isin(labels, 1 + np.flatnonzero((sizes >= 12) & (sizes < 2500)))
    ring = ndimage.binary_dilation(blobs, iterations=2)
    ring &= ~np.isin(labels, 1 + np.flatnonzero(sizes >= 2500))
    return float(np.clip((hu[ring] + 850.0) / 885.0, 0.0, 1.0).sum())


def test_image_measures_img(cohort_dir: Path, truth: pd.DataFrame) -> None:
    """img is a function of the lesion areas drawn in the image, which a plain segmentation
    of the written DICOM files already recovers: the ceiling treats img as measured."""
    np.testing.assert_array_equal(imaging.lesion_signal(truth["lesion_area_px"]), truth["img"])
    imaged = truth[truth["has_imaging"]].head(200)
    area = [_lesion_area(cohort_dir / "imaging" / f"{pid}.dcm") for pid in imaged["patient_id"]]
    estimate = imaging.lesion_signal(np.asarray(area))
    assert np.corrcoef(estimate, imaged["img"])[0, 1] > 0.97


def test_posteriors_come_from_the_written_data(truth: pd.DataFrame, posteriors: Posteriors) -> None:
    assert set(posteriors) == {("s_ehr",), ("m_prolif", "m_inflam")}
    rows, mean, cov = posteriors[("s_ehr",)]
    assert rows.all()
    assert np.corrcoef(mean[:, 0], truth["s_ehr"])[0, 1] > 0.9
    assert 0.02 < cov[0, 0] < 0.2
    rows, mean, cov = posteriors[("m_prolif", "m_inflam")]
    np.testing.assert_array_equal(rows, truth["has_omics"])
    for j, name in enumerate(("m_prolif", "m_inflam")):
        assert np.corrcoef(mean[rows, j], truth.loc[rows, name])[0, 1] > 0.95
    assert np.all(np.linalg.eigvalsh(cov) > 0)


def test_observed_ceiling_is_reached_from_measurements(
    truth: pd.DataFrame,
    ceiling_observed: float,
    posteriors: Posteriors,
) -> None:
    """A cross-validated logistic regression on what the data show (the reconstructions,
    exact age, sex, PM2.5 and lesion signal, presence flags) comes close to the observed
    ceiling but not above it."""
    has = {m: truth[f"has_{m}"].to_numpy(float) for m in _model.OPTIONAL_MODALITIES}
    s_ehr = posteriors[("s_ehr",)][1][:, 0]
    prolif, inflam = posteriors[("m_prolif", "m_inflam")][1].T
    env = truth["env"].to_numpy() * has["environment"]
    x = np.column_stack(
        [
            truth["age_z"],
            truth["male"],
            s_ehr,
            truth["img"] * has["imaging"],
            prolif,
            inflam,
            env,
            env * inflam,
            *has.values(),
        ]
    )
    y = truth["outcome"].to_numpy()
    prob = cross_val_predict(
        LogisticRegression(max_iter=1000),
        x,
        y,
        cv=KFold(5, shuffle=True, random_state=0),
        method="predict_proba",
    )[:, 1]
    auc = roc_auc_score(y, prob)
    assert ceiling_observed - 0.03 < auc < ceiling_observed + 0.005


@pytest.fixture(scope="module")
def ceiling_observed(truth: pd.DataFrame) -> float:
    return float(roc_auc_score(truth["outcome"], truth["p_observed"]))


def test_too_few_patients_reveal_nothing() -> None:
    y = np.arange(12.0).reshape(6, 2)
    mean, cov = reconstruct(np.zeros((6, 3)), y, method="ridge", seed=0)
    np.testing.assert_allclose(mean, np.broadcast_to(y.mean(axis=0), y.shape))
    np.testing.assert_allclose(cov, np.cov(y, rowvar=False, bias=True))
