"""Data-parallel training: Lightning's strategy passes through (2 processes, gloo on CPU)."""

from __future__ import annotations

import numpy as np

from medweave.cohort import Cohort
from medweave.models.estimator import MultimodalEstimator


def test_two_process_ddp_on_cpu(built_cohort: Cohort) -> None:
    est = MultimodalEstimator(
        preset="none",
        task="binary",
        modalities=["ehr", "environment"],
        fusion="gated",
        max_epochs=5,
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",  # gloo process group on CPU
    ).fit(built_cohort)
    proba = est.predict_proba(built_cohort)
    assert proba.shape == (built_cohort.n,)
    assert np.isfinite(proba).all()
    # The weights trained by the workers came back: far better than an untrained model.
    assert est.score(built_cohort) > 0.62
