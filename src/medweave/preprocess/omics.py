"""Expression normalisation and variance filtering, fitted on training patients only; and
the rule that tells which scale expression values are on (:func:`detect_scale`)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["SCALES", "OmicsTransformer", "detect_scale"]

#: The scales expression values can be on: raw counts, linear (TPM, FPKM, CPM...), log.
SCALES: tuple[str, ...] = ("counts", "linear", "log")
ExpressionScale = Literal["counts", "linear", "log"]
#: Quantiles are taken on at most this many values (evenly spaced through the matrix).
_MAX_VALUES = 1_000_000
#: A 99th percentile above this is a linear scale: log values never reach it (GEO2R's rule).
_LINEAR_Q99 = 100.0


def detect_scale(values: np.ndarray) -> tuple[ExpressionScale, str]:
    """The scale of expression ``values`` (any shape; NaN and inf ignored), and why, in words.

    In this order: every value a whole number >= 0 is ``counts``; a 99th percentile above
    100 is ``linear`` (GEO2R's test: no log scale reaches it), or ``counts`` if every value
    is whole; a negative value is ``log``; otherwise the shape decides: expression on a
    linear scale is log-normal, right-skewed, and a log makes it more symmetric (measured
    by the quantile skewness over the 1st, 50th and 99th percentiles), while values
    already logged are about symmetric and a log skews them to the left. Measured on the
    synthetic cohort's expression and on its log1p, log2(x + 1), log10(x + 1), log and
    log2 (negative), x / 1000, CPM and rounded (counts) versions: each is found. Sparse
    single-cell-like data on a log scale (most values 0) is read as linear: declare it.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        return "linear", "no finite value to look at"
    negative = int((v < 0).sum())
    whole = bool(np.all(v == np.round(v)))
    if whole and not negative:
        return "counts", "every value is a whole number >= 0"
    few = v[:: v.size // _MAX_VALUES + 1]
    q99 = float(np.quantile(few, 0.99))
    if q99 > _LINEAR_Q99:
        if whole:
            return "counts", f"whole numbers, 99th percentile {q99:.4g} > {_LINEAR_Q99:g}"
        return "linear", f"99th percentile {q99:.4g} > {_LINEAR_Q99:g}, beyond any log scale"
    if negative:
        return "log", f"{negative} negative values, 99th percentile {q99:.4g}"
    positive = few[few > 0]
    if positive.size < 3:
        return "linear", "too few positive values to tell; taken as linear"
    raw, logged = _quantile_skew(positive), _quantile_skew(np.log(positive))
    words = f"quantile skewness {raw:+.2f}, {logged:+.2f} after a log"
    if abs(logged) < abs(raw):
        return "linear", f"right-skewed like log-normal values ({words})"
    return "log", f"not made more symmetric by a log ({words})"


def _quantile_skew(v: np.ndarray) -> float:
    """Kelly's quantile skewness over the 1st, 50th and 99th percentiles, in [-1, 1]."""
    lo, mid, hi = np.quantile(v, [0.01, 0.5, 0.99])
    spread = hi - lo
    return float((hi + lo - 2 * mid) / spread) if spread > 0 else 0.0


class OmicsTransformer(TransformerMixin, BaseEstimator):
    """log1p, keep the ``n_top`` most variable genes, then z-score each kept gene.

    Rows that are entirely NaN (patients without the modality) are ignored when fitting
    and stay NaN when transformed, so an absent modality never turns into data.

    Parameters
    ----------
    log1p
        Apply ``log(1 + x)`` first: for counts and linear values (TPM, FPKM), not for values
        already on a log scale (see :func:`detect_scale`).
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
                raise ValueError(
                    "log1p expects non-negative expression; negative values are on a log "
                    "scale already: set log1p=False"
                )
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
