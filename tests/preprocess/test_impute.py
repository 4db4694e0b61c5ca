"""The iterative imputation kept as arrays replays scikit-learn's, and fills from the
features a patient has."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer
from sklearn.linear_model import BayesianRidge

from medweave.preprocess.impute import MAX_ITER, NEAREST, apply_iterative, fit_iterative


def _correlated(n: int, p: int, seed: int, missing: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """A shared factor shows in every column; ``missing`` of the values are removed."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(n, 1))
    full = factor @ rng.uniform(0.5, 1.5, (1, p)) + 0.4 * rng.normal(size=(n, p))
    z = full.copy()
    z[rng.random((n, p)) < missing] = np.nan
    return z, full


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("p", [3, 20])
def test_replays_sklearn_transform(p: int) -> None:
    z, _ = _correlated(300, p, seed=p)
    new, _ = _correlated(100, p, seed=p + 1)
    arrays = fit_iterative(z, seed=0)
    reference = IterativeImputer(
        estimator=BayesianRidge(),
        max_iter=MAX_ITER,
        n_nearest_features=min(NEAREST, p - 1),
        random_state=0,
    ).fit(z)
    np.testing.assert_allclose(apply_iterative(new, arrays), reference.transform(new), atol=1e-9)
    np.testing.assert_array_equal(apply_iterative(new, arrays)[~np.isnan(new)], new[~np.isnan(new)])


def test_fill_beats_the_mean_where_the_other_features_say_something() -> None:
    z, full = _correlated(400, 8, seed=3, missing=0.3)
    filled = apply_iterative(z, fit_iterative(z))
    gaps = np.isnan(z)
    model_error = np.mean((filled[gaps] - full[gaps]) ** 2)
    mean_error = np.mean((np.nanmean(z, axis=0)[np.nonzero(gaps)[1]] - full[gaps]) ** 2)
    assert model_error < 0.5 * mean_error


def test_a_column_complete_in_training_is_still_filled_later() -> None:
    z, _ = _correlated(200, 5, seed=4)
    z[:, 0] = np.nan_to_num(z[:, 0], nan=0.0)  # never missing in training
    new, _ = _correlated(10, 5, seed=5, missing=0.0)
    new[:3, 0] = np.nan
    arrays = fit_iterative(z)
    out = apply_iterative(new, arrays)
    assert np.isfinite(out).all()
    # Filled from each patient's other features, not with the column's training mean.
    filled = out[:3, 0]
    assert not np.allclose(filled, arrays["imp_initial"][0])
    assert np.unique(np.round(filled, 9)).size == 3
