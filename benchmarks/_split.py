"""The synthetic cohort and 70/30 patient split the model benchmarks share."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medweave.cohort import Cohort, build
from medweave.synth import synthesize


@dataclass
class Split:
    train: Cohort
    test: Cohort
    truth: pd.DataFrame  # the generator's truth, indexed by patient_id
    folder: Path  # a scratch folder that lives as long as the split


@contextlib.contextmanager
def cohort_split(patients: int, seed: int) -> Iterator[Split]:
    """Synthesise ``patients`` (30% missing at least one modality, mnar), build the cohort
    and split it 70/30 at random (seed 0). Images are read lazily from the cohort folder, so
    the folder lives until the ``with`` block ends. Lightning's logs and warnings are
    silenced."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cohort"
        synthesize(out, n_patients=patients, seed=seed, missing=0.3, mechanism="mnar")
        cohort = build(out / "cohort.yaml")
        truth = pd.read_parquet(out / "truth" / "patients.parquet").set_index("patient_id")
        rows = np.random.default_rng(0).permutation(cohort.n)
        cut = int(0.7 * cohort.n)
        train, test = cohort.take(np.sort(rows[:cut])), cohort.take(np.sort(rows[cut:]))
        yield Split(train, test, truth, Path(tmp))
