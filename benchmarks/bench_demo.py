"""`medweave demo` end to end: wall time, peak memory and where the time goes.

Synthesises 2,000 patients, runs the default study (every single modality, six fusion
strategies and LightGBM under 3-fold cross-validation, then every neural model on all
patients, bootstrap evaluation, stratification and the report) and prints the comparison
of each model with the ceiling, and the best fusion's gap to it on the patients with every
modality and on those lacking one. Issue target: under 10 minutes on 2 CPU cores.

    .venv/bin/python benchmarks/bench_demo.py [--patients N] [--seed S]

``--seed`` synthesises another cohort (same generator, same signal strengths) — the demo's
figures on other draws of the data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from _measure import measure
from medweave.experiment._demo import run_demo
from medweave.synth import synthesize

TARGET_SECONDS = 600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="the synthetic cohort's seed")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medweave-bench-demo-"))
    try:
        t0 = time.perf_counter()
        synthesize(tmp / "cohort", n_patients=args.patients, seed=args.seed)
        synth_seconds = time.perf_counter() - t0
        result, seconds, peak = measure(lambda: run_demo(tmp, quiet=True))
        res = result.results
        score = {m["name"]: m["metrics"]["auroc"]["estimate"] for m in res["models"]}
        fused = max((n for n in score if n.startswith("fusion:")), key=score.__getitem__)
        by_pattern = _by_pattern(tmp, fused)  # needs the fold files, before they go
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = synth_seconds + seconds
    print(f"medweave demo, {args.patients} patients (seed {args.seed}), {os.cpu_count()} cores")
    print(
        f"  wall time   {total:7.1f} s (synth {synth_seconds:.1f} s + run {seconds:.1f} s; "
        f"target < {TARGET_SECONDS:.0f} s)"
    )
    print(f"  peak memory {peak / 1024**2:7.0f} MiB")
    steps = res["timing"]["steps"]
    for name, value in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"  {name:32s} {value:7.1f} s")
    main_metric = "auroc"
    ceiling = (res.get("ceiling") or {}).get("observed", {}).get(main_metric)
    print(f"  observed-data ceiling AUROC {ceiling}")
    for m in sorted(res["models"], key=lambda m: -m["metrics"][main_metric]["estimate"]):
        e = m["metrics"][main_metric]
        print(f"  {m['name']:22s} {e['estimate']:.4f} ({e['ci_low']:.3f}-{e['ci_high']:.3f})")
    single = max((n for n in score if n.startswith("single:")), key=score.__getitem__)
    print(
        f"best {fused} {score[fused]:.4f}: {score[fused] - score[single]:+.4f} vs {single} "
        f"(target >= +0.05), {score[fused] - ceiling:+.4f} vs the ceiling (target >= -0.03)"
        if ceiling is not None
        else f"best {fused} {score[fused]:.4f}"
    )
    print(by_pattern)
    return 0 if total < TARGET_SECONDS else 1


def _by_pattern(out: Path, model: str) -> str:
    """``model``'s pooled out-of-fold AUROC against the ceiling's, on the patients with
    every modality and on those lacking one: where the gap to the ceiling lies."""
    truth = pd.read_parquet(out / "cohort" / "truth" / "patients.parquet")
    y = pd.read_parquet(out / "cohort" / "index.parquet")["outcome"].to_numpy()
    pred = np.full(len(y), np.nan)
    for fold in sorted((out / "run" / "folds" / model.replace(":", "_")).glob("fold-*.npz")):
        f = np.load(fold)
        pred[f["test"]] = f["pred"]
    complete = truth[["has_imaging", "has_omics", "has_environment"]].all(axis=1).to_numpy()
    parts = []
    for label, rows in (("every modality", complete), ("lacking one", ~complete)):
        model_auc = roc_auc_score(y[rows], pred[rows])
        ceiling = roc_auc_score(y[rows], truth["p_observed"].to_numpy()[rows])
        parts.append(
            f"{label} (n={rows.sum()}) {model_auc:.4f} vs ceiling {ceiling:.4f} "
            f"({model_auc - ceiling:+.4f})"
        )
    return f"  {model} on patients with " + "; with ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
