"""Which of the generator's signals each family of a fused model uses, and where it loses.

Same cohort and 70/30 split as ``bench_models.py``. One fusion with the demo study's
settings (networks averaged 1:1 with the interactions GLM) is fitted on the training
patients. On the test patients it prints:

* AUROC of the networks alone, the GLM alone and the model, against the observed-data
  ceiling, on the patients with every modality and on those lacking one;
* on the patients with every modality, each family's output (logit) regressed on the
  generator's true latents and the one cross-modal product: every coefficient divided by the
  true log hazard ratio (``medweave.synth._model.COEFFICIENTS``). A family that weighs the
  signals as the truth does shows equal ratios (their common size is the logit's scale and
  shrinkage); a low ratio is a signal it under-uses, a ratio near 0 on ``env_x_m_inflam`` an
  interaction it did not learn. R² is the share of the output's variance the true signals
  explain (the rest is estimation noise).

    .venv/bin/python benchmarks/which_signals.py [--fusion concat] [--seed 1]
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import roc_auc_score

from _split import cohort_split
from medweave.experiment._demo import DEMO_STUDY
from medweave.models.estimator import MultimodalEstimator
from medweave.synth._model import COEFFICIENTS, OPTIONAL_MODALITIES

MODALITIES = ["ehr", "imaging", "omics", "environment"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1, help="the cohort's seed")
    parser.add_argument("--fusion", default="concat")
    args = parser.parse_args()
    with cohort_split(args.patients, args.seed) as split:
        train, test, truth = split.train, split.test, split.truth.loc[split.test.ids]
        est = MultimodalEstimator(
            task="binary", modalities=MODALITIES, fusion=args.fusion, **DEMO_STUDY["estimator"]
        ).fit(train)
        out = {
            part: est.predict_output(test, part=part)["proba"]
            for part in ("networks", "glm", "model")
        }
    y = test.patients["outcome"].to_numpy().astype(int)
    complete = truth[[f"has_{m}" for m in OPTIONAL_MODALITIES]].all(axis=1).to_numpy()
    ceiling = truth["p_observed"].to_numpy()
    print(f"cohort seed {args.seed}, fusion {args.fusion}: test n={test.n}")
    for name, rows in (("every modality", complete), ("lacking one", ~complete)):
        scores = {
            k: roc_auc_score(y[rows], v[rows]) for k, v in {**out, "ceiling": ceiling}.items()
        }
        print(
            f"  {name:15s} (n={rows.sum()}, {y[rows].sum()} events) AUROC "
            + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
        )
    terms = list(COEFFICIENTS)
    x = np.column_stack(
        [truth["env"] * truth["m_inflam"] if t == "env_x_m_inflam" else truth[t] for t in terms]
    )[complete]
    true = np.array([COEFFICIENTS[t] for t in terms])
    print("  on patients with every modality: coefficient / true log hazard ratio")
    print("  " + " " * 10 + "".join(f"{t:>16s}" for t in terms) + "      R²")
    for part in ("networks", "glm", "model"):
        p = np.clip(out[part][complete], 1e-7, 1 - 1e-7)
        logit = np.log(p / (1 - p))
        fit = LinearRegression().fit(x, logit)
        print(
            f"  {part:10s}"
            + "".join(f"{r:16.2f}" for r in fit.coef_ / true)
            + f"{fit.score(x, logit):8.3f}"
        )


if __name__ == "__main__":
    main()
