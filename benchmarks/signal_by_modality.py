"""How much of the outcome each modality's true signal explains, against the ceilings.

For each modality, the true model with every other modality's latent signals averaged out
over the population (Monte Carlo) is scored by AUROC on the realised binary outcome, beside
the three ceilings of truth/ceiling.json (from the data each patient has, from the latents
of the modalities each patient has, and with everything known).

    .venv/bin/medweave synth --out /tmp/c --patients 2000 --seed 1
    .venv/bin/python benchmarks/signal_by_modality.py /tmp/c
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from medweave.synth import _model

LATENTS = ("age_z", "male", "s_ehr", "img", "m_prolif", "m_inflam", "env")
EHR_LATENTS = ("age_z", "male", "s_ehr")


def modality_only(
    latents: dict[str, np.ndarray], modality: str, rng: np.random.Generator
) -> np.ndarray:
    n = len(latents["s_ehr"])
    present = {m: np.full(n, m == modality) for m in _model.OPTIONAL_MODALITIES}
    if modality == "ehr":
        return _model.observed_expectation(rng, latents, present)[0]
    draws = []
    for _ in range(64):  # also average out the EHR latents (always present otherwise)
        perm = rng.permutation(n)
        shuffled = {k: (v[perm] if k in EHR_LATENTS else v) for k, v in latents.items()}
        draws.append(_model.observed_expectation(rng, shuffled, present, n_draws=16)[0])
    return np.mean(draws, axis=0)


def main(cohort: Path) -> None:
    truth = pd.read_parquet(cohort / "truth" / "patients.parquet")
    y = pd.read_parquet(cohort / "index.parquet")["outcome"].to_numpy()
    latents = {k: truth[k].to_numpy() for k in LATENTS}
    rng = np.random.default_rng(0)
    for modality in ("ehr", *_model.OPTIONAL_MODALITIES):
        auc = roc_auc_score(y, modality_only(latents, modality, rng))
        print(f"{modality:16s} alone: AUROC {auc:.3f}")
    ceiling = json.loads((cohort / "truth" / "ceiling.json").read_text())
    for name in ("observed", "observed_latents", "oracle"):
        print(f"{name:16s} ceiling: AUROC {ceiling[name]['auroc']:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
