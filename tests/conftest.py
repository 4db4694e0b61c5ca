"""Shared fixtures: small synthetic cohorts, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from medweave.synth import synthesize


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 800-patient cohort (30% incomplete, mnar), the shape of the demo cohort."""
    out = tmp_path_factory.mktemp("synth") / "cohort"
    synthesize(out, n_patients=800, seed=7, missing=0.3, mechanism="mnar", workers=1)
    return out


@pytest.fixture(scope="session")
def built_cohort(cohort_dir: Path):
    """The 800-patient synthetic cohort built with its own cohort.yaml (all modalities)."""
    from medweave.cohort import build

    return build(cohort_dir / "cohort.yaml")
