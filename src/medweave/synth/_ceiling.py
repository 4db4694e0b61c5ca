"""The best achievable scores on the synthetic cohort (its "ceilings")."""

from __future__ import annotations

from typing import Any

import numpy as np
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

__all__ = ["ceilings", "harrell_c"]


def harrell_c(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C-index of a risk score (higher = earlier event), via lifelines."""
    return float(concordance_index(time, -np.asarray(risk), event))


def ceilings(
    *,
    outcome: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    oracle: tuple[np.ndarray, np.ndarray],
    observed: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """AUROC and C-index of the true model, with everything known and from the data each
    patient has. Each pair is (event probability within the horizon, risk score)."""

    def score(pair: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        prob, risk = pair
        return {
            "auroc": float(roc_auc_score(outcome, prob)),
            "c_index": harrell_c(time, risk, event),
        }

    return {
        "oracle": score(oracle),
        "observed": score(observed),
        "definitions": {
            "oracle": "true event probability (AUROC) and true log hazard ratio (C-index) "
            "scored against the realised outcomes",
            "observed": "the true model averaged (Monte Carlo, 256 draws) over the population "
            "prior of every latent signal whose modality the patient lacks; the C-index uses "
            "the log of the expected hazard ratio",
            "auroc": "binary outcome: death within the horizon",
            "c_index": "Harrell's C on (time, event)",
        },
    }
