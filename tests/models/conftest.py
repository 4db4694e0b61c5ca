"""Fixtures shared by the model tests."""

from __future__ import annotations

import numpy as np
import pytest

from medweave.cohort import Cohort


@pytest.fixture(scope="module")
def split(built_cohort: Cohort) -> tuple[Cohort, Cohort]:
    """The 800-patient cohort split 70/30 at random (seed 0): training and test patients."""
    rows = np.random.default_rng(0).permutation(built_cohort.n)
    cut = int(0.7 * built_cohort.n)
    return built_cohort.take(np.sort(rows[:cut])), built_cohort.take(np.sort(rows[cut:]))
