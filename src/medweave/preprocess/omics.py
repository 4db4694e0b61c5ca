"""Expression normalisation and variance filtering, fitted on training patients only."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["OmicsTransformer"]


class OmicsTransformer(TransformerMixin, BaseEstimator):
    """log1p, keep the ``n_top`` most variable genes, then z-score each kept gene.

    Rows that are entirely NaN (patients without the modality) are ignored when fitting
    and stay NaN when transformed, so an absent modality never turns into data.

    Parameters
    ----------
    log1p
        Apply ``log(1 + x)`` first (for counts or TPM-like values).
    n_top
        Number of most variable genes to keep (all if None or larger than available).
    scale
        Standardise each kept gene to mean 0, standard deviation 1 on the training rows.
    """

    def __init__(self, *, log1p: bool = True, n_top: int | None = 2000, scale: bool = True) -> None:
        self.log1p = log1p
        self.n_top = n_top
        self.scale = scale

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.log1p:
            if np.nanmin(x, initial=0.0) < 0:
                raise ValueError("log1p expects non-negative expression; set log1p=False")
            x = np.log1p(x)
        return x

    def fit(self, x: np.ndarray, y: object = None) -> OmicsTransformer:
        data = self._prepare(x)
        rows = ~np.isnan(data).all(axis=1)
        if rows.sum() < 2:
            raise ValueError("OmicsTransformer needs at least two patients with the modality")
        data = data[rows]
        var = np.nanvar(data, axis=0)
        k = data.shape[1] if self.n_top is None else min(self.n_top, data.shape[1])
        self.genes_ = np.sort(np.argsort(-var, kind="stable")[:k])
        self.mean_ = np.nanmean(data[:, self.genes_], axis=0)
        sd = np.nanstd(data[:, self.genes_], axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0) if self.scale else np.ones_like(sd)
        self.n_features_in_ = data.shape[1]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        data = self._prepare(x)
        if data.shape[1] != self.n_features_in_:
            raise ValueError(
                f"expected {self.n_features_in_} genes (as at fit), got {data.shape[1]}"
            )
        out = (data[:, self.genes_] - self.mean_) / self.scale_
        return out.astype(np.float32)
