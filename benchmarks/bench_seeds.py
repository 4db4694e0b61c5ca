"""How much a fused model's test AUROC moves with the training seed alone.

Same cohort and 70/30 split as ``bench_models.py`` (2,000 patients, 30% missing at least
one modality, mnar); one fusion (default ``late``) with the demo study's settings is
trained with seeds 0..k-1, every stage (image encoder included) retrained per seed; prints
each seed's test AUROC, their mean and range, and the AUROC of the seeds' averaged logits.

    .venv/bin/python benchmarks/bench_seeds.py [--fusion late] [--seeds 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from _split import cohort_split
from medweave.experiment._demo import DEMO_STUDY
from medweave.models.estimator import MultimodalEstimator

MODALITIES = ["ehr", "imaging", "omics", "environment"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1, help="the cohort's seed")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..k-1")
    parser.add_argument("--fusion", default="late")
    args = parser.parse_args()
    with cohort_split(args.patients, args.seed) as split:
        train, test, truth = split.train, split.test, split.truth
        y = test.patients["outcome"].to_numpy()
        ceiling = roc_auc_score(y, truth.loc[test.ids, "p_observed"])
        print(f"test n={test.n}; observed-data ceiling AUROC {ceiling:.3f}")
        aucs, logits = [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            est = MultimodalEstimator(
                task="binary",
                modalities=MODALITIES,
                fusion=args.fusion,
                **{**DEMO_STUDY["estimator"], "seed": seed},
            ).fit(train)
            proba = np.clip(est.predict_proba(test), 1e-7, 1 - 1e-7)
            proba = proba[:, -1] if proba.ndim == 2 else proba
            logits.append(np.log(proba / (1 - proba)))
            aucs.append(roc_auc_score(y, proba))
            print(f"  seed {seed}: AUROC {aucs[-1]:.3f} fit {time.perf_counter() - t0:5.1f} s")
        print(
            f"fusion {args.fusion}: mean {np.mean(aucs):.3f} (range {min(aucs):.3f}-"
            f"{max(aucs):.3f}); seeds averaged {roc_auc_score(y, np.mean(logits, 0)):.3f}; "
            f"ceiling {ceiling:.3f}"
        )


if __name__ == "__main__":
    main()
