"""Cox proportional-hazards boosting: LightGBM's custom objective and validation metric.

LightGBM (>= 4) takes a callable ``objective``; with this one each tree fits a Newton step
on Breslow's negative log partial likelihood, so the model's raw score is a log relative
hazard (XGBoost's ``survival:cox`` and scikit-survival's ``coxph`` loss do the same). The
gradient and the Hessian's diagonal come from :class:`~medweave.models._coxnet.RiskSets`:
the patients are sorted by time once (O(n log n)), after which every boosting round
costs O(n) cumulative sums over the risk sets, however many tied times there are.

In the patients' own order, with ``r_i = exp(eta_i)``, ``S_j`` the sum of ``r`` over the
risk set of event time ``t_j`` and ``d_j`` its events (ties counted Breslow's way)::

    loss      = -sum_i event_i * eta_i + sum_j d_j * log S_j
    grad_k    = r_k * sum_{j: t_j <= t_k} d_j / S_j - event_k
    hess_kk   = r_k * sum_{j: t_j <= t_k} d_j / S_j - r_k^2 * sum_{j: t_j <= t_k} d_j / S_j^2
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from medweave.models._coxnet import RiskSets

__all__ = ["CoxObjective", "cox_metric"]

#: a floor on each patient's Hessian: patients censored before the first event have none,
#: and a leaf of only such patients would otherwise take an unbounded step
_MIN_HESSIAN = 1e-6


class CoxObjective:
    """LightGBM's ``objective`` for right-censored times: ``(preds, dataset) -> (grad,
    hess)`` of Breslow's negative log partial likelihood in the raw scores ``preds``.

    The risk sets are built once, from ``time`` and ``event`` of the training rows, in
    the order the rows are given to LightGBM.
    """

    def __init__(self, time: np.ndarray, event: np.ndarray) -> None:
        self.risk = RiskSets.of(np.asarray(time, dtype=np.float64), np.asarray(event))

    def gradient(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The negative log partial likelihood's gradient and Hessian diagonal in ``eta``."""
        grad, weight = self.risk.gradient(np.asarray(eta, dtype=np.float64))
        return -grad, np.maximum(weight, _MIN_HESSIAN)

    def loss(self, eta: np.ndarray) -> float:
        """The negative log partial likelihood (Breslow) of ``eta``."""
        return -self.risk.loglik(np.asarray(eta, dtype=np.float64))

    def __call__(self, preds: np.ndarray, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.gradient(preds)


def cox_metric(
    time: np.ndarray, event: np.ndarray
) -> Callable[[np.ndarray, Any], tuple[str, float, bool]]:
    """LightGBM's ``feval`` for a validation set: its negative log partial likelihood per
    event, within its own risk sets (lower is better; what early stopping watches)."""
    objective = CoxObjective(time, event)
    events = max(float(np.sum(event)), 1.0)

    def metric(preds: np.ndarray, dataset: Any) -> tuple[str, float, bool]:
        return "cox_nll", objective.loss(preds) / events, False

    return metric
