"""Quality and training time of the multimodal models on the synthetic cohort.

Synthesises a cohort (default 2,000 patients, 30% missing at least one modality, mnar),
builds it, then on a 70/30 patient split trains every fusion strategy on all four
modalities, each modality alone, and LightGBM on the concatenated non-image features, and
prints test AUROC beside the observed-data ceiling on the same test patients. Issue
targets: best fusion within 0.03 of the ceiling, at least 0.05 above the best single
modality; training under 2 minutes.

    .venv/bin/python benchmarks/bench_models.py [--patients N] [--seed S]
"""

from __future__ import annotations

import argparse
import time

from sklearn.metrics import roc_auc_score

from _split import cohort_split
from medweave.experiment._demo import DEMO_STUDY
from medweave.models.baselines import LightGBMBaseline
from medweave.models.estimator import MultimodalEstimator
from medweave.models.fusion import FUSIONS
from medweave.synth._ceiling import harrell_c

MODALITIES = ["ehr", "imaging", "omics", "environment"]
#: The demo study's estimator settings.
SETTINGS = DEMO_STUDY["estimator"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with cohort_split(args.patients, args.seed) as split:
        train, test, truth = split.train, split.test, split.truth
        store = str(split.folder / "encoders")  # the image encoder is trained once
        y = test.patients["outcome"].to_numpy()
        ceiling = roc_auc_score(y, truth.loc[test.ids, "p_observed"])
        print(
            f"{args.patients} patients, test n={test.n}; observed-data ceiling AUROC {ceiling:.3f}"
        )

        def run(label: str, est: MultimodalEstimator | LightGBMBaseline) -> float:
            t0 = time.perf_counter()
            est.fit(train)
            seconds = time.perf_counter() - t0
            proba = est.predict_proba(test)
            proba = proba[:, -1] if proba.ndim == 2 else proba
            auc = roc_auc_score(y, proba)
            parts = ""
            if getattr(est, "glm_", None) is not None:  # each family of the hybrid alone
                nets, glm = (
                    roc_auc_score(y, est.predict_output(test, part=p)["proba"])
                    for p in ("networks", "glm")
                )
                parts = f"; networks alone {nets:.3f}, GLM alone {glm:.3f}"
            print(
                f"  {label:28s} AUROC {auc:.3f} (ceiling {ceiling - auc:+.3f}) fit {seconds:5.1f} s"
                + parts
            )
            return auc

        singles = {
            m: run(
                f"{m} alone",
                MultimodalEstimator(
                    task="binary", modalities=[m], fusion="concat", **SETTINGS, encoder_store=store
                ),
            )
            for m in MODALITIES
        }
        fused = {
            f: run(
                f"fusion {f}",
                MultimodalEstimator(
                    task="binary", modalities=MODALITIES, fusion=f, **SETTINGS, encoder_store=store
                ),
            )
            for f in FUSIONS.names()
        }
        tabular = [m for m in MODALITIES if m != "imaging"]
        run("LightGBM, concatenated", LightGBMBaseline(task="binary", modalities=tabular))
        best_f = max(fused, key=fused.__getitem__)
        # Survival: the best fusion with each survival head, Harrell's C against the ceiling's.
        time_, event = test.patients["time"].to_numpy(), test.patients["event"].to_numpy()
        c_ceiling = harrell_c(time_, truth.loc[test.ids, "risk_observed"].to_numpy(), event)
        for head in ("cox", "discrete_hazard"):
            t0 = time.perf_counter()
            surv = MultimodalEstimator(
                task=head, modalities=MODALITIES, fusion=best_f, **SETTINGS, encoder_store=store
            ).fit(train)
            c = harrell_c(time_, surv.predict_risk(test), event)
            print(
                f"  survival: fusion {best_f}, {head} head, C-index {c:.3f} (ceiling "
                f"{c_ceiling:.3f}, {c - c_ceiling:+.3f}) fit {time.perf_counter() - t0:5.1f} s"
            )
        print(
            f"best fusion {best_f} {fused[best_f]:.3f}: "
            f"{fused[best_f] - max(singles.values()):+.3f} vs best single modality, "
            f"{fused[best_f] - ceiling:+.3f} vs the ceiling"
        )


if __name__ == "__main__":
    main()
