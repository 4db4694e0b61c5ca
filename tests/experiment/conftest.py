"""A small synthetic cohort and a fast study for the experiment tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from medweave.synth import synthesize

FAST_STUDY: dict[str, Any] = {
    "name": "test study",
    "cohort": "cohort/cohort.yaml",
    "task": "binary",
    "models": {"singles": True, "fusions": ["concat", "late"], "baselines": ["lightgbm"]},
    # preset none: the plain constants (one network, no GLM) where a test is not about the
    # settings the auto preset chooses
    "estimator": {
        "preset": "none",
        "max_epochs": 4,
        "patience": 2,
        "image_size": [32, 32],
        "omics_top_genes": 100,
    },
    "validation": {"folds": 2, "seed": 0},
    "evaluation": {"n_bootstrap": 50},
}


@pytest.fixture(scope="session")
def study_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``cohort/`` (240 synthetic patients) to write study files beside."""
    root = tmp_path_factory.mktemp("study")
    synthesize(root / "cohort", n_patients=240, seed=11, missing=0.3, workers=1)
    return root


def write_study(root: Path, name: str, **changes: Any) -> Path:
    study = {**FAST_STUDY, **changes}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path
