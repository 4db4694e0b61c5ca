"""OmicsTransformer: fitted on training rows only; absent patients stay absent."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from medweave.preprocess import OmicsTransformer


def test_fit_uses_training_rows_only() -> None:
    rng = np.random.default_rng(0)
    train = rng.lognormal(1, 0.1, (50, 20))
    train[:, 3] = rng.lognormal(1, 2.0, 50)  # the most variable gene in training
    test = rng.lognormal(1, 0.1, (10, 20))
    test[:, 7] = rng.lognormal(1, 5.0, 10)  # variable only in the test rows
    t = OmicsTransformer(n_top=1).fit(train)
    assert t.genes_.tolist() == [3]
    out = t.transform(test)
    assert out.shape == (10, 1)
    np.testing.assert_allclose(t.transform(train).mean(axis=0), 0, atol=1e-6)


def test_absent_rows_are_ignored_and_kept_nan() -> None:
    x = np.vstack([np.full((1, 4), np.nan), np.arange(12, dtype=float).reshape(3, 4)])
    t = OmicsTransformer(n_top=None).fit(x)
    out = t.transform(x)
    assert np.isnan(out[0]).all() and not np.isnan(out[1:]).any()


def test_sklearn_contract() -> None:
    t = OmicsTransformer(n_top=5, scale=False)
    assert clone(t).get_params() == {"log1p": True, "n_top": 5, "scale": False}
    with pytest.raises(ValueError, match="expected 4 genes"):
        OmicsTransformer().fit(np.ones((3, 4))).transform(np.ones((3, 5)))
