"""OmicsTransformer: fitted on training rows only; absent patients stay absent."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from medweave.preprocess import OmicsTransformer
from medweave.preprocess.omics import detect_scale


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


def _expression() -> np.ndarray:
    """Bulk expression on a linear scale: log-normal, gene baselines of different size."""
    rng = np.random.default_rng(0)
    return np.exp(rng.normal(3.0, 1.5, 300)[None, :] + rng.normal(0, 0.5, (40, 300)))


@pytest.mark.parametrize(
    ("transform", "scale"),
    [
        (lambda x: x, "linear"),
        (lambda x: x / 1000, "linear"),  # small linear values: the shape tells
        (lambda x: x / x.sum(axis=1, keepdims=True) * 1e6, "linear"),  # CPM
        (np.round, "counts"),
        (np.log1p, "log"),
        (lambda x: np.log2(x + 1), "log"),
        (lambda x: np.log10(x + 1), "log"),
        (np.log2, "log"),  # negative values
    ],
)
def test_detect_scale(transform, scale: str) -> None:
    found, why = detect_scale(transform(_expression()))
    assert found == scale, why


def test_detect_scale_reads_a_stray_negative_in_linear_values_as_linear() -> None:
    x = _expression()
    x[0, 0] = -0.5  # an error in the data, not a log scale: the reader reports it
    assert detect_scale(x)[0] == "linear"
    x[1, 1] = np.nan  # ignored
    assert detect_scale(x)[0] == "linear"
