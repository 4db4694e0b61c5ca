"""Metrics of binary and survival predictions, and the curves the report draws.

Every metric is written once, as a kernel over a batch of patient weights of shape
``(B, n)``: row ``b`` holds how many times each patient appears in bootstrap resample ``b``.
The point estimate is the same kernel with one row of ones, so an estimate and its
bootstrap replicates can never disagree about a definition, and a thousand resamples cost a
few matrix products instead of a thousand Python calls (see ``_bootstrap.py``).

Survival metrics are computed here rather than by torchsurv, and the tests check them
against torchsurv, lifelines and scikit-learn. Reasons (torchsurv 0.2.0):

- speed: ``ConcordanceIndex`` loops over events in Python and ``KaplanMeierEstimator``
  groups times with ``itertools.groupby`` over tensor items (0.7 s for one C-index on 2,000
  patients), far too slow for bootstrap replicates;
- ``ConcordanceIndex`` detects risk ties after casting to float32 (``est.float()``), so
  distinct risks closer than float32 resolution count as ties (risks ``1000 + k·1e-5``
  ranked perfectly give 0.7 instead of 1.0); we compare risks exactly, as lifelines does;
- ``get_ipcw`` evaluates the censoring survival at ``G(T_i)``, after any censoring tied with
  the event; the IPCW estimators weight an event by ``1/G(T_i-)`` (the left limit), which
  matters with day-resolution times where ties are common. We use the left limit for events
  and ``G(t)`` at horizons, and weight events where ``G`` is 0 by 0, as torchsurv does;
- precision: ``get_ipcw`` returns float32 weights and ``Auc`` divides integer control counts
  in float32 (relative error ~1e-6), so the tests compare with that tolerance.

Truncation. The IPCW metrics weight an event at ``T`` by ``1/G(T-)``, the inverse of the
probability of still being followed then; with long follow-up and heavy late censoring
``G`` falls towards 0 and a handful of late events outweigh every other (Uno's C of 0.09
where Harrell's is 0.58, seen on a real cohort). Uno et al. (Stat Med 2011;30:1105-17)
therefore estimate C over a time range ``[0, tau]`` with ``G(tau) > 0`` and enough
patients still at risk. The default ``tau`` here (:func:`default_tau`) is the 80th
percentile of the observed follow-up (events and censorings together): a fifth of the
patients are still at risk there, so ``G(tau-)`` is at least about 0.2 (the fraction at risk
is ``S·G``) and no event weighs more than about 25 times an early one. Uno's C counts the
pairs whose earlier event is before ``tau``; the default horizons of the time-dependent
AUC and Brier score (:func:`default_horizons`) stay at or below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import expit, logit
from sklearn.metrics import precision_recall_curve, roc_curve

from medweave.errors import InputError
from medweave.models.survival import as_survival

__all__ = [
    "BINARY_METRICS",
    "SURVIVAL_METRICS",
    "TAU_QUANTILE",
    "breslow_log_baseline",
    "breslow_survival",
    "calibration_points",
    "classification_metrics",
    "default_horizons",
    "default_tau",
    "pr_points",
    "roc_points",
    "survival_curves",
    "survival_metrics",
    "td_auc_curve",
]

BINARY_METRICS = ("auroc", "auprc", "brier", "calibration_slope", "calibration_intercept")
SURVIVAL_METRICS = ("c_harrell", "c_uno", "td_auc", "ibs")
#: The quantile of the observed follow-up that is the default truncation time (see above).
TAU_QUANTILE = 0.8

_EPS = 1e-6  # predicted probabilities are clipped to [_EPS, 1 - _EPS] before logit
_MAX_POINTS = 200  # curves are downsampled to at most this many points
_BLOCK = 4_000_000  # elements per pair-matrix block of the C-index (float32: 16 MB)


# ---------------------------------------------------------------- public metric functions


def classification_metrics(y: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, float | None]:
    """AUROC, average precision, Brier score and calibration slope and intercept.

    The calibration slope is the coefficient of ``logit(p)`` in an unpenalised logistic
    regression of ``y`` on ``logit(p)``; the intercept is calibration-in-the-large (the
    intercept with ``logit(p)`` as an offset). ``p`` is clipped to ``[1e-6, 1 - 1e-6]``. With
    one class in ``y`` everything but the Brier score is undefined and returned as None.
    """
    kernel = BinaryKernel(y, p)
    return _point(kernel, BINARY_METRICS)


def survival_metrics(
    time: npt.ArrayLike,
    event: npt.ArrayLike,
    risk: npt.ArrayLike,
    *,
    surv: npt.ArrayLike | None = None,
    times: npt.ArrayLike | None = None,
    train_time: npt.ArrayLike | None = None,
    train_event: npt.ArrayLike | None = None,
    tau: float | None = None,
) -> dict[str, float | None]:
    """Harrell's and Uno's C, mean time-dependent AUC and integrated Brier score.

    Parameters
    ----------
    time, event
        Observed follow-up (days) and event indicator of the evaluated patients.
    risk
        Risk score, higher = earlier event (e.g. a Cox log hazard ratio).
    surv
        Predicted survival ``S(t | x)`` of shape ``(n, len(times))``; without it ``ibs`` is
        None.
    times
        Horizons for ``td_auc`` and ``ibs``; default :func:`default_horizons` of the data.
    train_time, train_event
        The data from which the censoring distribution of the IPCW weights (Uno's C,
        cumulative/dynamic AUC, Brier score) is estimated; default the evaluated data.
    tau
        Truncation time of Uno's C: only pairs whose earlier event is before ``tau`` count.
        Default :func:`default_tau` of the evaluated patients (the 80th percentile of their
        follow-up); ``math.inf`` for none (events where the censoring survival is 0 are
        then weighted 0).

    ``td_auc`` is the mean over horizons of the cumulative/dynamic AUC of ``risk``
    (horizons without cases or controls are skipped); ``ibs`` is the trapezoidal integral of
    the IPCW Brier score over ``times`` divided by its span (the Brier score itself for one
    horizon). Undefined values are None.
    """
    kernel = SurvivalKernel(
        time,
        event,
        risk,
        surv=surv,
        times=times,
        train_time=train_time,
        train_event=train_event,
        tau=tau,
    )
    return _point(kernel, SURVIVAL_METRICS)


def td_auc_curve(
    time: npt.ArrayLike,
    event: npt.ArrayLike,
    risk: npt.ArrayLike,
    *,
    times: npt.ArrayLike | None = None,
    train_time: npt.ArrayLike | None = None,
    train_event: npt.ArrayLike | None = None,
) -> dict[str, list[float | None]]:
    """Cumulative/dynamic AUC of ``risk`` at each horizon: ``{"times": [...], "auc": [...]}``.

    Arguments as in :func:`survival_metrics`; a horizon without cases or controls has
    AUC None.
    """
    kernel = SurvivalKernel(
        time, event, risk, times=times, train_time=train_time, train_event=train_event
    )
    auc = kernel.td_auc_by_horizon(np.ones((1, kernel.n)))[0]
    return {"times": [float(t) for t in kernel.times], "auc": [_none(a) for a in auc]}


def breslow_log_baseline(
    train_time: npt.ArrayLike,
    train_event: npt.ArrayLike,
    train_risk: npt.ArrayLike,
    times: npt.ArrayLike,
) -> np.ndarray:
    """``log H0(t)`` at ``times``: the log of Breslow's baseline cumulative hazard estimated
    from the training data and their Cox risk scores (log hazard ratios); ``-inf`` before
    the first event. A patient with score ``r`` has cumulative hazard ``exp(r + log H0(t))``,
    a quantity on the same scale whichever model (or fold) produced the scores."""
    target = as_survival((train_time, train_event), require_event=False)
    t_risk = _finite_1d(train_risk, name="train_risk", n=len(target))
    horizons = _horizons(times)
    shift = float(t_risk.max())  # exp of shifted scores cannot overflow; added back below
    hr = np.exp(t_risk - shift)
    uniq, inverse = np.unique(target.time, return_inverse=True)
    deaths = np.bincount(inverse, weights=target.event.astype(np.float64), minlength=len(uniq))
    at_risk = np.cumsum(np.bincount(inverse, weights=hr, minlength=len(uniq))[::-1])[::-1]
    h0 = np.cumsum(deaths / at_risk)
    idx = np.searchsorted(uniq, horizons, side="right") - 1
    h0_t = np.where(idx >= 0, h0[np.clip(idx, 0, None)], 0.0)
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(h0_t) - shift)


def breslow_survival(
    train_time: npt.ArrayLike,
    train_event: npt.ArrayLike,
    train_risk: npt.ArrayLike,
    risk: npt.ArrayLike,
    times: npt.ArrayLike,
) -> np.ndarray:
    """Survival ``S(t | x) = exp(-H0(t) exp(risk))`` of shape ``(len(risk), len(times))``.

    ``H0`` is Breslow's baseline cumulative hazard (:func:`breslow_log_baseline`); ``risk``
    are the scores of the patients to predict, on the training scores' scale.
    """
    return survival_curves(risk, breslow_log_baseline(train_time, train_event, train_risk, times))


def survival_curves(risk: npt.ArrayLike, log_h0: np.ndarray) -> np.ndarray:
    """``S(t | x) = exp(-exp(risk + log H0(t)))`` of shape ``(len(risk), len(log_h0))``, from
    a baseline computed once (:func:`breslow_log_baseline`)."""
    r = _finite_1d(risk, name="risk")
    with np.errstate(over="ignore"):
        return np.asarray(np.exp(-np.exp(r[:, None] + np.asarray(log_h0)[None, :])))


def default_horizons(time: npt.ArrayLike, event: npt.ArrayLike, *, n: int = 5) -> np.ndarray:
    """Up to ``n`` evaluation times from the 10th to the 80th percentile of event times.

    Horizons are kept strictly below the longest follow-up, so every horizon has patients
    still at risk and a positive censoring survival (the IPCW weights are defined), and at
    or below the truncation time :func:`default_tau` (unless every one is beyond it: then
    the first alone); tied quantiles (day-resolution times) collapse, so fewer than ``n``
    may come back.
    """
    target = as_survival((time, event), require_event=False)
    if target.n_events == 0:
        raise InputError(
            f"default_horizons: no events among {len(target)} patients; horizons are "
            "percentiles of event times, so pass times= explicitly"
        )
    if n < 1:
        raise InputError(f"default_horizons: n must be >= 1, got {n}")
    q = np.quantile(target.time[target.event], np.linspace(0.1, 0.8, n))
    q = np.unique(q[(q < target.time.max()) & (q > 0)])
    if q.size == 0:
        raise InputError(
            "default_horizons: every event time equals the longest follow-up "
            f"({target.time.max():g}); pass times= explicitly"
        )
    within = q <= default_tau(target.time)
    q = q[within] if within.any() else q[:1]
    return np.asarray(q, dtype=np.float64)


def default_tau(time: npt.ArrayLike) -> float:
    """The default truncation time of Uno's C and the time-dependent metrics: the
    :data:`TAU_QUANTILE` (80th) percentile of the observed follow-up ``time`` (events and
    censorings alike), where about a fifth of the patients are still at risk (see the
    module's docstring for why)."""
    t = _finite_1d(time, name="time")
    if t.size == 0:
        raise InputError("default_tau: no follow-up times")
    return float(np.quantile(t, TAU_QUANTILE))


# ---------------------------------------------------------------- curves


def roc_points(y: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, list[float]]:
    """ROC curve ``{"x": fpr, "y": tpr}``, at most 200 points; empty with one class."""
    yy, pp = _binary_inputs(y, p)
    if _one_class(yy):
        return {"x": [], "y": []}
    fpr, tpr, _ = roc_curve(yy, pp)
    keep = _downsample(len(fpr))
    return {"x": fpr[keep].tolist(), "y": tpr[keep].tolist()}


def pr_points(y: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, list[float]]:
    """Precision-recall curve ``{"x": recall, "y": precision}`` by increasing recall, at
    most 200 points; empty with one class."""
    yy, pp = _binary_inputs(y, p)
    if _one_class(yy):
        return {"x": [], "y": []}
    precision, recall, _ = precision_recall_curve(yy, pp)
    precision, recall = precision[::-1], recall[::-1]
    keep = _downsample(len(recall))
    return {"x": recall[keep].tolist(), "y": precision[keep].tolist()}


def calibration_points(
    y: npt.ArrayLike, p: npt.ArrayLike, *, n_bins: int = 10
) -> dict[str, list[Any]]:
    """Reliability diagram over quantile bins of ``p``.

    Returns ``{"predicted": mean p, "observed": event rate, "n": patients}`` per bin; tied
    quantiles merge bins, so there may be fewer than ``n_bins``.
    """
    yy, pp = _binary_inputs(y, p)
    if n_bins < 1:
        raise InputError(f"calibration_points: n_bins must be >= 1, got {n_bins}")
    edges = np.unique(np.quantile(pp, np.linspace(0.0, 1.0, n_bins + 1)))
    bins = np.searchsorted(edges[1:-1], pp, side="right")
    counts = np.bincount(bins, minlength=len(edges) - 1)
    used = counts > 0
    pred = np.bincount(bins, weights=pp, minlength=len(counts))[used] / counts[used]
    obs = np.bincount(bins, weights=yy, minlength=len(counts))[used] / counts[used]
    return {
        "predicted": pred.tolist(),
        "observed": obs.tolist(),
        "n": [int(c) for c in counts[used]],
    }


# ---------------------------------------------------------------- kernels


class BinaryKernel:
    """Binary metrics of ``p`` against ``y`` under a batch of patient weights."""

    names = BINARY_METRICS

    def __init__(self, y: npt.ArrayLike, p: npt.ArrayLike) -> None:
        self.y, self.p = _binary_inputs(y, p)
        self.n = len(self.y)
        self._lp = logit(np.clip(self.p, _EPS, 1.0 - _EPS))
        self._order, self._ends = _tie_groups(self.p)
        self._y_sorted = self.y[self._order]
        self._sq_err = (self.p - self.y) ** 2
        # Resamples start their calibration fits from the full-data fit: a few Newton steps.
        ones = np.ones((1, self.n))
        full = _logistic(ones, self.y, self._lp, slope=True, start=np.array([0.0, 1.0]))
        self._slope_start = full[0] if np.isfinite(full).all() else np.array([0.0, 1.0])
        citl = _logistic(ones, self.y, self._lp, slope=False, start=np.zeros(1))
        self._citl_start = citl[0] if np.isfinite(citl).all() else np.zeros(1)

    def __call__(self, w: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "auroc" in names or "auprc" in names:
            ws = w[:, self._order]
            gp = _group_sums(ws * self._y_sorted, self._ends)
            gn = _group_sums(ws, self._ends) - gp
            if "auroc" in names:
                out["auroc"] = _mann_whitney(gp, gn)
            if "auprc" in names:
                out["auprc"] = _average_precision(gp[:, ::-1], gn[:, ::-1])
        if "brier" in names:
            out["brier"] = (w @ self._sq_err) / w.sum(axis=1)
        if "calibration_slope" in names:
            fit = _logistic(w, self.y, self._lp, slope=True, start=self._slope_start)
            out["calibration_slope"] = fit[:, 1]
        if "calibration_intercept" in names:
            fit = _logistic(w, self.y, self._lp, slope=False, start=self._citl_start)
            out["calibration_intercept"] = fit[:, 0]
        return out


class SurvivalKernel:
    """Survival metrics of ``risk`` (and ``surv``) under a batch of patient weights.

    Everything that does not depend on the weights (censoring weights from the training
    data, horizons, tie groups, the comparable-pair matrices of the C-index) is prepared
    once here; arguments as in :func:`survival_metrics`.
    """

    names = SURVIVAL_METRICS

    def __init__(
        self,
        time: npt.ArrayLike,
        event: npt.ArrayLike,
        risk: npt.ArrayLike,
        *,
        surv: npt.ArrayLike | None = None,
        times: npt.ArrayLike | None = None,
        train_time: npt.ArrayLike | None = None,
        train_event: npt.ArrayLike | None = None,
        tau: float | None = None,
    ) -> None:
        target = as_survival((time, event), require_event=False)
        self.time, self.event = target.time, target.event
        self.n = len(target)
        self.risk = _finite_1d(risk, name="risk", n=self.n)
        if (train_time is None) != (train_event is None):
            raise InputError("survival metrics: pass both train_time and train_event, or neither")
        train = (
            target
            if train_time is None
            else as_survival((train_time, train_event), require_event=False)
        )
        if surv is not None and times is None:
            raise InputError(
                "survival metrics: surv was given without times; pass the horizons its "
                "columns are predicted at"
            )
        if times is None:  # no events: no horizons, so td_auc and ibs are undefined
            no_events = not self.event.any()
            self.times = np.empty(0) if no_events else default_horizons(self.time, self.event)
        else:
            self.times = _horizons(times)
        self._rows = np.flatnonzero(self.event)
        g_event = _censoring_survival(train.time, train.event, self.time, left=True)
        self._ipcw = np.divide(1.0, g_event, out=np.zeros(self.n), where=g_event > 0)
        self.tau = default_tau(self.time) if tau is None else float(tau)
        if not self.tau > 0:  # NaN too
            raise InputError(f"survival metrics: tau must be a time > 0 (or inf), got {tau}")
        self._uno = self._ipcw[self._rows] ** 2 * (self.time[self._rows] < self.tau)
        self._order = _tie_groups(self.risk)
        self._cases = (self.time[:, None] <= self.times[None, :]) & self.event[:, None]
        self._controls = self.time[:, None] > self.times[None, :]
        self._g_times = _censoring_survival(train.time, train.event, self.times, left=False)
        self._brier = None if surv is None else self._brier_residuals(surv)
        self._pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def __call__(self, w: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "c_harrell" in names or "c_uno" in names:
            out["c_harrell"], out["c_uno"] = self._concordance(w)
        if "td_auc" in names:
            by_horizon = self.td_auc_by_horizon(w)
            ok = np.isfinite(by_horizon)
            n_ok = ok.sum(axis=1)
            total = np.where(ok, by_horizon, 0.0).sum(axis=1)
            out["td_auc"] = np.divide(total, n_ok, out=np.full(len(w), np.nan), where=n_ok > 0)
        if "ibs" in names:
            out["ibs"] = self._ibs(w)
        return {k: v for k, v in out.items() if k in names}

    def td_auc_by_horizon(self, w: np.ndarray) -> np.ndarray:
        """Cumulative/dynamic AUC, shape ``(B, len(times))``: cases (event by ``t``)
        weighted ``1/G(T-)``, controls (still at risk after ``t``) weighted alike."""
        if len(self.times) == 0:
            return np.empty((len(w), 0))
        order, ends = self._order
        ws = w[:, order]
        cases = self._cases[order] * self._ipcw[order, None]
        controls = self._controls[order]
        cols = [
            _mann_whitney(
                _group_sums(ws * cases[:, k], ends), _group_sums(ws * controls[:, k], ends)
            )
            for k in range(len(self.times))
        ]
        return np.stack(cols, axis=1)

    def _concordance(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Harrell's and Uno's C. A pair (i, j) is comparable when i has the event and j
        outlived it (later time, or censored at the same time); it is concordant when i has
        the higher risk, half when tied. Uno weights pairs by ``1/G(T_i-)^2``."""
        w32 = w.astype(np.float32)  # counts and 0 / 0.5 / 1 entries: float32 sums are exact
        num_h, den_h, num_u, den_u = (np.zeros(len(w)) for _ in range(4))
        for rows, conc, comp in self._pair_blocks():
            wi = w[:, rows]
            x = (w32 @ conc.T).astype(np.float64)
            y = (w32 @ comp.T).astype(np.float64)
            num_h += (wi * x).sum(axis=1)
            den_h += (wi * y).sum(axis=1)
            uno = self._uno[np.searchsorted(self._rows, rows)]
            num_u += (wi * uno * x).sum(axis=1)
            den_u += (wi * uno * y).sum(axis=1)
        nan = np.full(len(w), np.nan)
        return (
            np.divide(num_h, den_h, out=nan.copy(), where=den_h > 0),
            np.divide(num_u, den_u, out=nan.copy(), where=den_u > 0),
        )

    def _pair_blocks(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Row blocks (event rows, concordance matrix, comparable matrix), cached when the
        matrices are small and rebuilt on each call otherwise."""
        if self._pairs is not None:
            return self._pairs
        step = max(1, _BLOCK // max(self.n, 1))
        blocks = []
        for start in range(0, len(self._rows), step):
            rows = self._rows[start : start + step]
            ti, ri = self.time[rows, None], self.risk[rows, None]
            comp = (self.time[None, :] > ti) | ((self.time[None, :] == ti) & ~self.event[None, :])
            score = (self.risk[None, :] < ri) + 0.5 * (self.risk[None, :] == ri)
            blocks.append((rows, (comp * score).astype(np.float32), comp.astype(np.float32)))
        if len(self._rows) * self.n <= 2 * _BLOCK:
            self._pairs = blocks
        return blocks

    def _brier_residuals(self, surv: npt.ArrayLike) -> np.ndarray | None:
        """Per-patient IPCW Brier terms, shape ``(n, len(times))`` (None where a horizon is
        beyond the censoring follow-up)."""
        s = np.asarray(surv, dtype=np.float64)
        if s.ndim == 1 and len(self.times) == 1:
            s = s[:, None]
        if s.shape != (self.n, len(self.times)):
            raise InputError(
                f"survival metrics: surv has shape {s.shape}; expected ({self.n}, "
                f"{len(self.times)}), one column per horizon in times"
            )
        if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
            raise InputError("survival metrics: surv must hold probabilities in [0, 1]")
        if len(self.times) == 0 or (self._g_times <= 0).any():
            return None
        case = self._cases * self._ipcw[:, None] * s**2
        control = self._controls * (1.0 - s) ** 2 / self._g_times[None, :]
        return np.asarray(case + control)

    def _ibs(self, w: np.ndarray) -> np.ndarray:
        if self._brier is None:
            return np.full(len(w), np.nan)
        bs = (w @ self._brier) / w.sum(axis=1, keepdims=True)
        if len(self.times) == 1:
            return np.asarray(bs[:, 0])
        span = self.times[-1] - self.times[0]
        return np.asarray(np.trapezoid(bs, self.times, axis=1) / span)


# ---------------------------------------------------------------- weighted building blocks


def _tie_groups(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending order of ``score`` and the sorted positions ending each block of ties."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    return order, ends


def _group_sums(w_sorted: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Weights (columns already in score order) summed over each tie block: ``(B, blocks)``."""
    c = np.cumsum(w_sorted, axis=1)[:, ends]
    return np.diff(c, axis=1, prepend=0.0)


def _mann_whitney(gp: np.ndarray, gn: np.ndarray) -> np.ndarray:
    """AUC from positive and negative weights per tie block of ascending scores: weighted
    P(positive scores higher) + ½ P(tie), per row; NaN without both classes."""
    below = np.cumsum(gn, axis=1) - gn
    num = (gp * (below + 0.5 * gn)).sum(axis=1)
    den = gp.sum(axis=1) * gn.sum(axis=1)
    return np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)


def _average_precision(gp: np.ndarray, gn: np.ndarray) -> np.ndarray:
    """Weighted average precision from weights per tie block of descending scores: the sum
    over thresholds of Δrecall × precision (scikit-learn's definition, thresholds at distinct
    scores). NaN without both classes."""
    tp, fp = np.cumsum(gp, axis=1), np.cumsum(gn, axis=1)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    n_pos, n_neg = tp[:, -1], fp[:, -1]
    ap = (gp * precision).sum(axis=1)
    ok = (n_pos > 0) & (n_neg > 0)
    return np.divide(ap, n_pos, out=np.full(len(ap), np.nan), where=ok)


def _logistic(
    w: np.ndarray, y: np.ndarray, lp: np.ndarray, *, slope: bool, start: np.ndarray
) -> np.ndarray:
    """Weighted logistic regression of ``y`` on ``lp``, one fit per row of ``w``.

    ``slope=True`` fits ``a + b·lp`` and returns ``[[a, b], ...]``; ``slope=False`` fits
    ``a + lp`` (``lp`` as offset) and returns ``[[a], ...]``. Newton steps from ``start``,
    halved while they lower the (concave) log-likelihood. Rows without both classes, or
    that do not converge (separation), are NaN.
    """
    x = np.stack([np.ones_like(lp), lp], axis=1) if slope else np.ones((len(lp), 1))
    offset = np.zeros_like(lp) if slope else lp
    k = x.shape[1]
    xx = np.einsum("ni,nj->nij", x, x).reshape(len(lp), k * k)
    beta = np.tile(np.asarray(start, dtype=np.float64), (len(w), 1))
    pos = w @ y
    stop = ~((pos > 0) & (pos < w.sum(axis=1)))
    failed = stop.copy()
    eta = beta @ x.T + offset
    for _ in range(50):
        idx = np.flatnonzero(~stop)
        if idx.size == 0:
            break
        ww = w[idx]
        mu = expit(eta[idx])
        grad = (ww * (y - mu)) @ x
        hess = ((ww * mu * (1.0 - mu)) @ xx).reshape(len(idx), k, k)
        step = _solve_small(hess, grad)
        bad = ~np.isfinite(step).all(axis=1)
        step[bad] = 0.0
        new = beta[idx] + step
        eta_new = new @ x.T + offset
        # Short steps near the optimum are trusted; long ones are checked and halved.
        big = np.flatnonzero(np.abs(step).max(axis=1) > 0.25)
        if big.size:
            ll_old = _loglik(ww[big], y, eta[idx[big]])
            tol = 1e-12 * np.abs(ll_old)
            ll_new = _loglik(ww[big], y, eta_new[big])
            worse = np.flatnonzero(ll_new < ll_old - tol)
            for _ in range(40):
                if worse.size == 0:
                    break
                rows = big[worse]
                step[rows] *= 0.5
                new[rows] = beta[idx[rows]] + step[rows]
                eta_new[rows] = new[rows] @ x.T + offset
                ll_new[worse] = _loglik(ww[rows], y, eta_new[rows])
                worse = worse[ll_new[worse] < ll_old[worse] - tol[worse]]
        beta[idx], eta[idx] = new, eta_new
        converged = np.abs(step).max(axis=1) < 1e-8
        failed[idx[bad]] = True
        stop[idx[bad | converged]] = True
    failed |= ~stop  # never converged
    failed |= ~(np.abs(beta) < 1e4).all(axis=1)  # runaway: (quasi-)separation
    beta[failed] = np.nan
    return beta


def _loglik(w: np.ndarray, y: np.ndarray, eta: np.ndarray) -> np.ndarray:
    return np.asarray((w * (y * eta - np.logaddexp(0.0, eta))).sum(axis=1))


def _solve_small(h: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Solve 1×1 or 2×2 systems ``h @ s = g`` row by row (NaN where singular)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if h.shape[1] == 1:
            return np.asarray(g / h[:, 0, :])
        a, b, c, d = h[:, 0, 0], h[:, 0, 1], h[:, 1, 0], h[:, 1, 1]
        det = a * d - b * c
        det = np.where(np.abs(det) > 1e-300, det, np.nan)
        return np.stack([(d * g[:, 0] - b * g[:, 1]) / det, (a * g[:, 1] - c * g[:, 0]) / det], 1)


def _censoring_survival(
    time: np.ndarray, event: np.ndarray, at: np.ndarray, *, left: bool
) -> np.ndarray:
    """Kaplan–Meier survival of the censoring time, ``G(t) = P(C > t)``, at ``at``.

    Events tied with censorings are taken to come first (they leave the censoring risk
    set), the usual reverse Kaplan–Meier convention. ``left=True`` gives the left limit
    ``G(t-)``, the probability of being uncensored just before ``t``.
    """
    uniq, inverse = np.unique(time, return_inverse=True)
    n_at = np.cumsum(np.bincount(inverse, minlength=len(uniq))[::-1])[::-1]
    deaths = np.bincount(inverse, weights=event.astype(np.float64), minlength=len(uniq))
    censored = np.bincount(inverse, weights=(~event).astype(np.float64), minlength=len(uniq))
    at_risk = n_at - deaths
    factor = 1.0 - np.divide(censored, at_risk, out=np.zeros(len(uniq)), where=at_risk > 0)
    g = np.cumprod(factor)
    idx = np.searchsorted(uniq, at, side="left" if left else "right") - 1
    return np.where(idx >= 0, g[np.clip(idx, 0, None)], 1.0)


# ---------------------------------------------------------------- validation and helpers


def _binary_inputs(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    yy = np.asarray(y)
    if yy.ndim != 1 or yy.size == 0:
        raise InputError(f"binary metrics: y must be a non-empty 1-D array, got shape {yy.shape}")
    if yy.dtype == bool:
        yf = yy.astype(np.float64)
    else:
        try:
            yf = yy.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"binary metrics: y must be 0/1, got values like {yy[:3]}") from None
        bad = ~np.isin(yf, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"binary metrics: y has {int(bad.sum())} values that are not 0/1 (first at "
                f"position {i}: {yy[i]!r})"
            )
    pp = _finite_1d(p, name="p", n=len(yf))
    if (pp < 0).any() or (pp > 1).any():
        i = int(np.flatnonzero((pp < 0) | (pp > 1))[0])
        raise InputError(
            f"binary metrics: p must be probabilities in [0, 1]; position {i} is {pp[i]}"
        )
    return yf, pp


def _finite_1d(values: npt.ArrayLike, *, name: str, n: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"metrics: {name} must be numeric") from None
    if arr.ndim != 1:
        raise InputError(f"metrics: {name} must be one value per patient, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise InputError(f"metrics: {name} has {len(arr)} values, expected {n} (one per patient)")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"metrics: {name} has {int(bad.sum())} missing or infinite values (first at "
            f"position {i})"
        )
    return arr


def _horizons(times: npt.ArrayLike) -> np.ndarray:
    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if t.ndim != 1 or t.size == 0 or not np.isfinite(t).all() or (np.diff(t) <= 0).any():
        raise InputError(
            f"survival metrics: times must be finite, strictly increasing horizons, got {t}"
        )
    return t


def _one_class(y: np.ndarray) -> bool:
    return bool(y.min() == y.max())


def _downsample(n: int) -> np.ndarray:
    """Indices of at most ``_MAX_POINTS`` evenly spread points, keeping both ends."""
    if n <= _MAX_POINTS:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, _MAX_POINTS)).astype(int))


def _none(x: Any) -> float | None:
    """A plain float, or None where the value is undefined (NaN or infinite)."""
    if x is None:
        return None
    v = float(x)
    return v if np.isfinite(v) else None


def _point(kernel: BinaryKernel | SurvivalKernel, names: Sequence[str]) -> dict[str, float | None]:
    values = kernel(np.ones((1, kernel.n)), names)
    return {name: _none(values[name][0]) for name in names}
