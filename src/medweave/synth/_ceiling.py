"""The best achievable scores on the synthetic cohort (its "ceilings").

The ``observed`` ceiling is the true model averaged over what each patient's data leave
unknown. A latent whose modality is missing is averaged over its population prior. Age,
sex, PM2.5 (``env``) and the lesion signal (``img``, a function of the lesion areas drawn in
the image) are measured exactly. ``s_ehr`` and the omics modules are measured with noise:
they are averaged over a normal posterior whose mean is the latent's best reconstruction
from that modality's data, read as a user reads them (``cohort.yaml``), and whose variance
is the reconstruction's residual variance. Reconstructions are cross-fitted: each
patient's comes from a model fitted on the other folds, so an over-fitted model cannot make
the data look more informative than they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

__all__ = ["N_FOLDS", "Posteriors", "ceilings", "harrell_c", "measured_posteriors", "reconstruct"]

#: Folds of the cross-fitted reconstructions.
N_FOLDS = 5
#: Components kept before the ridge regression of the omics modules (speed; the ridge
#: shrinks the discarded low-variance directions almost to nothing anyway).
OMICS_COMPONENTS = 50
#: Training patients per fold at most (time; the reconstructions have levelled off by then).
MAX_TRAIN = 4000
_RIDGE_ALPHAS = np.logspace(-2, 4, 25)
Method = Literal["ridge", "boosting"]
#: ``{latent names: (patients measured (n,), posterior mean (n, k), covariance (k, k))}``.
Posteriors = dict[tuple[str, ...], tuple[np.ndarray, np.ndarray, np.ndarray]]
#: Which block measures which latents with noise, and how they are reconstructed from it.
_MEASURED: tuple[tuple[str, tuple[str, ...], Method], ...] = (
    ("ehr", ("s_ehr",), "boosting"),
    ("omics", ("m_prolif", "m_inflam"), "ridge"),
)


def harrell_c(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C-index of a risk score (higher = earlier event), via lifelines."""
    return float(concordance_index(time, -np.asarray(risk), event))


def reconstruct(
    x: np.ndarray,
    target: np.ndarray,
    *,
    method: Method,
    seed: int,
    folds: int = N_FOLDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted reconstruction of ``target`` (n, k) from the measurements ``x`` (n, p).

    ``ridge``: standardise, project on the leading principal components, ridge regression
    with the penalty chosen by leave-one-out on the training folds. ``boosting``: gradient
    boosted trees (missing values allowed), one per target column. Each row is predicted by
    the model fitted on the other folds (at most ``MAX_TRAIN`` of their rows). Returns the
    reconstruction (n, k) and the mean outer product of its residuals (k, k), the variance
    of the latent around it. With fewer than ``2 * folds`` rows the reconstruction is the
    mean of ``target``.
    """
    # Imported here: `import medweave` (and every CLI command) should not pay for them.
    from sklearn.model_selection import KFold
    from threadpoolctl import threadpool_limits

    y = target.reshape(len(target), -1).astype(np.float64)
    if len(y) < 2 * folds:  # too few patients to learn from: the data say nothing
        pred = np.broadcast_to(y.mean(axis=0), y.shape).copy()
        resid = y - pred
        return pred, resid.T @ resid / len(resid)
    pred = np.empty_like(y)
    split = KFold(n_splits=folds, shuffle=True, random_state=seed).split(x)
    rng = np.random.default_rng(seed)
    # One thread: the same numbers however many cores the machine has.
    with threadpool_limits(limits=1):
        for train, test in split:
            if len(train) > MAX_TRAIN:
                train = np.sort(rng.choice(train, MAX_TRAIN, replace=False))
            pred[test] = _fit_predict(x[train], y[train], x[test], method=method, seed=seed)
    resid = y - pred
    return pred, resid.T @ resid / len(resid)


def _fit_predict(
    x: np.ndarray,
    y: np.ndarray,
    x_new: np.ndarray,
    *,
    method: Method,
    seed: int,
) -> np.ndarray:
    """Fit on (x, y) and predict every target column for ``x_new``."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method == "ridge":
        model = make_pipeline(
            StandardScaler(),
            PCA(
                n_components=min(OMICS_COMPONENTS, *x.shape),
                svd_solver="randomized",
                iterated_power=2,
                random_state=seed,
            ),
            RidgeCV(alphas=_RIDGE_ALPHAS),
        )
        return np.asarray(model.fit(x, y).predict(x_new)).reshape(len(x_new), -1)
    return np.column_stack(
        [
            HistGradientBoostingRegressor(
                learning_rate=0.15,
                max_iter=100,
                max_depth=4,
                max_bins=63,
                early_stopping=False,
                random_state=seed,
            )
            .fit(x, y[:, j])
            .predict(x_new)
            for j in range(y.shape[1])
        ]
    )


def measured_posteriors(
    folder: Path,
    *,
    patient_ids: list[str],
    latents: dict[str, np.ndarray],
    seed: int,
) -> Posteriors:
    """Normal posteriors of the latents that the written data measure with noise.

    Builds the EHR and omics blocks of the cohort in ``folder`` with its ``cohort.yaml``
    (the other sources are not needed), then reconstructs ``s_ehr`` from the EHR features
    (boosting: counts, lab summaries and missing values enter non-linearly) and the two
    omics modules jointly from log1p expression (ridge: log expression is linear in them).
    Returns ``{latent names: (patients with the modality, mean (n, k), covariance (k, k))}``
    in the order of ``patient_ids``, for :func:`medweave.synth._model.measured_expectation`.
    """
    # The cohort builder imports the readers; import it here, not at module load.
    from medweave.cohort import build_cohort
    from medweave.config import load_cohort_config

    config = load_cohort_config(folder / "cohort.yaml")
    sources = [s for s in config.sources if s.name in ("ehr", "omics")]
    cohort = build_cohort(config.model_copy(update={"sources": sources}), base_dir=folder)
    if list(cohort.ids) != list(patient_ids):
        raise RuntimeError(f"{folder}: the built cohort's patients differ from the generated ones")
    out: Posteriors = {}
    for block_name, names, method in _MEASURED:
        block = cohort.modalities[block_name]
        rows = np.asarray(block.present, dtype=bool)
        x = np.asarray(block.x[rows], dtype=np.float64)
        if block_name == "omics":
            x = np.log1p(np.clip(x, 0.0, None))
        target = np.column_stack([latents[name][rows] for name in names])
        fit_mean, cov = reconstruct(x, target, method=method, seed=seed)
        mean = np.zeros((len(rows), len(names)))
        mean[rows] = fit_mean
        out[names] = (rows, mean, cov)
    return out


def ceilings(
    *,
    outcome: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    oracle: tuple[np.ndarray, np.ndarray],
    observed: tuple[np.ndarray, np.ndarray],
    observed_latents: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """AUROC and C-index of the true model: with everything known, from the data each
    patient has, and from the latents of the modalities each patient has. Each pair is
    (event probability within the horizon, risk score)."""

    def score(pair: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        prob, risk = pair
        return {
            "auroc": float(roc_auc_score(outcome, prob)),
            "c_index": harrell_c(time, risk, event),
        }

    return {
        "oracle": score(oracle),
        "observed": score(observed),
        "observed_latents": score(observed_latents),
        "definitions": {
            "oracle": "true event probability (AUROC) and true log hazard ratio (C-index) "
            "scored against the realised outcomes",
            "observed": "the best achievable from the data each patient has: the true model "
            "averaged (Monte Carlo, 256 draws) over the posterior of each latent signal given "
            "the patient's data. Latents of a missing modality: their population prior. "
            "age_z, male, env and img: exact (img is a function of the lesion areas drawn in "
            "the image). s_ehr: normal around its reconstruction from the EHR features "
            "(gradient boosting); m_prolif and m_inflam: bivariate normal around their "
            f"reconstruction from log1p expression (ridge on {OMICS_COMPONENTS} principal "
            f"components); reconstructions {N_FOLDS}-fold cross-fitted, (co)variance = that of "
            "their residuals. The C-index uses the log of the expected hazard ratio",
            "observed_latents": "the true model averaged (Monte Carlo, 256 draws) over the "
            "population prior of every latent signal whose modality the patient lacks, with "
            "the latents of the modalities present known exactly (no model sees latents, so "
            "this is above what the data allow); the C-index uses the log of the expected "
            "hazard ratio",
            "auroc": "binary outcome: death within the horizon",
            "c_index": "Harrell's C on (time, event)",
        },
    }
