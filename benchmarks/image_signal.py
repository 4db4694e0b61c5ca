"""How much of the true imaging signal the image encoder learns, by augmentation.

On each draw of the synthetic cohort (``--seeds``), the bench_models 70/30 split restricted
to the patients with an image: the demo study's image model (a single-modality network, the
stage-1 encoder the fusions share) is trained on the training patients on the images as
they are, with random flips (``augment: flips``, the demo's setting), and with random flips
and 90° rotations whose every transform the embedding then averages over (``augment:
dihedral, tta: true``). For each it prints the
test AUROC (against the AUROC of the true imaging latent itself, the most the image can
give) and R² of the true latent (``img``, the standardised log lesion area) regressed on the
model's learned representation (ridge, fitted on the training patients, scored on the
test patients): the share of the signal the encoder captured.

    .venv/bin/python benchmarks/image_signal.py [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV
from sklearn.metrics import roc_auc_score

from _split import cohort_split
from medweave.cohort import Cohort
from medweave.experiment._demo import DEMO_STUDY
from medweave.models.estimator import MultimodalEstimator

#: The demo's settings that concern an image model alone.
SETTINGS = {
    k: v
    for k, v in DEMO_STUDY["estimator"].items()
    if k not in ("pca", "pca_keep", "ensemble", "interactions", "encoder_params")
}

VARIANTS: dict[str, dict[str, object]] = {
    "as is": {},
    "flips": {"augment": "flips"},
    "D4+tta": {"augment": "dihedral", "tta": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seeds", default="0,1,2", help="the cohorts' seeds")
    args = parser.parse_args()
    print("seed  images   AUROC (true img)  R² of img on the representation  epochs  seconds")
    for seed in (int(s) for s in args.seeds.split(",")):
        with cohort_split(args.patients, seed) as split:
            has = split.truth["has_imaging"]
            train, test = (_imaged(c, has) for c in (split.train, split.test))
            y = test.patients["outcome"].to_numpy().astype(int)
            img_train = split.truth.loc[train.ids, "img"].to_numpy()
            img_test = split.truth.loc[test.ids, "img"].to_numpy()
            best = roc_auc_score(y, img_test)
            for name, params in VARIANTS.items():
                t0 = time.perf_counter()
                est = MultimodalEstimator(
                    task="binary",
                    modalities=["imaging"],
                    encoder_params={"imaging": params},
                    **SETTINGS,
                ).fit(train)
                auroc = roc_auc_score(y, est.predict_output(test)["proba"])
                ridge = RidgeCV(alphas=np.logspace(-3, 3, 13))
                r2 = ridge.fit(est.transform(train), img_train).score(est.transform(test), img_test)
                seconds = time.perf_counter() - t0
                print(
                    f"{seed:4d}  {name:8s} {auroc:.3f} ({best:.3f})   {r2:31.3f}"
                    f"  {est.n_epochs_:6d}  {seconds:7.0f}"
                )


def _imaged(cohort: Cohort, has: pd.Series) -> Cohort:
    """The patients of ``cohort`` with an image."""
    return cohort.take(np.flatnonzero(has.loc[cohort.ids].to_numpy()))


if __name__ == "__main__":
    main()
