"""Data-parallel training: Lightning's strategy passes through (2 processes, gloo on CPU)."""

from __future__ import annotations

import numpy as np

from medweave.cohort import Cohort
from medweave.models.estimator import MultimodalEstimator


def test_two_process_ddp_on_cpu(built_cohort: Cohort) -> None:
    est = MultimodalEstimator(
        task="binary",
        modalities=["ehr", "environment"],
        fusion="gated",
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",  # gloo process group on CPU
    ).fit(built_cohort)
    proba = est.predict_proba(built_cohort)
    assert proba.shape == (built_cohort.n,)
    assert np.isfinite(proba).all()
    assert proba.std() > 0  # trained weights came back from the workers
