"""Does the image encoder learn from small 3-D volumes what a hand-made measurement does?

On a synthetic cohort whose imaged patients have 3-D chest volumes
(:func:`medweave.synth.volumes.write_volumes`: nodules whose total volume carries the
imaging latent), the imaged patients are split into stratified folds (seed 0), and on
each fold's test patients three AUROCs of the binary outcome are printed:

* ``latent``: the true imaging latent ``img`` itself — the most an image can give;
* ``fraction``: a logistic regression on the analyst's lesion fraction alone
  (:func:`~medweave.synth.volumes.lesion_fraction`, bright voxels inside the lung mask),
  fitted on the training patients;
* ``encoder``: the image encoder alone, ``MultimodalEstimator(modalities=["imaging"])``
  with the default settings (``--settings`` / ``--encoder-params`` override them, as JSON),
  trained on the training patients.

    .venv/bin/medweave synth --out /tmp/v2k --patients 1500 --seed 5
    .venv/bin/python -c "from pathlib import Path; from medweave.synth.volumes import \\
        write_volumes; write_volumes(Path('/tmp/v2k'), seed=5)"
    .venv/bin/python benchmarks/image_3d.py /tmp/v2k [--folds 3] [--max-folds 3]
        [--encoder-params '{"pool": "max"}'] [--settings '{"image_intensity": "minmax"}']

``--patients N --seed S`` instead of a folder synthesises one in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from medweave.cohort import Cohort, build_cohort
from medweave.config import load_cohort_config
from medweave.models.estimator import MultimodalEstimator
from medweave.synth.volumes import lesion_fraction, write_volumes


def imaging_cohort(folder: Path) -> Cohort:
    """The cohort of ``folder/cohort.yaml`` with its imaging source only, restricted to
    the patients who have an image."""
    config = load_cohort_config(folder / "cohort.yaml")
    config = config.model_copy(
        update={"sources": [s for s in config.sources if s.name == "imaging"]}
    )
    cohort = build_cohort(config, base_dir=folder.resolve())
    return cohort.take(np.flatnonzero(cohort.modalities["imaging"].present))


def fractions(cohort: Cohort) -> np.ndarray:
    """Each patient's lesion fraction, from the raw voxels (no model preprocessing)."""
    import nibabel as nib

    paths = cohort.modalities["imaging"].paths or []
    return np.array([lesion_fraction(np.asarray(nib.load(str(p)).dataobj)) for p in paths])


def run(folder: Path, args: argparse.Namespace) -> None:
    cohort = imaging_cohort(folder)
    truth = pd.read_parquet(folder / "truth" / "patients.parquet").set_index("patient_id")
    y = cohort.patients["outcome"].to_numpy().astype(int)
    latent = truth.loc[cohort.ids, "img"].to_numpy()
    t0 = time.perf_counter()
    frac = fractions(cohort)
    print(
        f"{cohort.n} imaged patients, {y.sum()} events; lesion fraction in "
        f"{time.perf_counter() - t0:.0f} s; shapes {_shapes(cohort)}"
    )
    settings = json.loads(args.settings)
    params = json.loads(args.encoder_params)
    print(f"settings {settings}  encoder_params {params}")
    print("fold  latent  fraction  encoder  epochs  seconds")
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0).split(frac, y)
    rows = []
    for k, (train, test) in enumerate(folds):
        if k >= args.max_folds:
            break
        lr = LogisticRegression().fit(frac[train, None], y[train])
        a_frac = roc_auc_score(y[test], lr.predict_proba(frac[test, None])[:, 1])
        t0 = time.perf_counter()
        est = MultimodalEstimator(
            task="binary",
            modalities=["imaging"],
            seed=0,
            **({"encoder_params": {"imaging": params}} if params else {}),
            **settings,
        ).fit(cohort.take(train))
        proba = est.predict_output(cohort.take(test))["proba"]
        a_enc = roc_auc_score(y[test], proba)
        a_lat = roc_auc_score(y[test], latent[test])
        secs = time.perf_counter() - t0
        rows.append((a_lat, a_frac, a_enc))
        print(
            f"{k:4d}  {a_lat:.3f}   {a_frac:.3f}     {a_enc:.3f}   {est.n_epochs_:6d}  {secs:7.0f}"
        )
    mean = np.mean(rows, axis=0)
    print(f"mean  {mean[0]:.3f}   {mean[1]:.3f}     {mean[2]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", type=Path, help="a synthetic cohort with volumes")
    parser.add_argument("--patients", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--max-folds", type=int, default=3, help="folds run (of --folds)")
    parser.add_argument("--settings", default="{}", help="estimator settings (JSON)")
    parser.add_argument("--encoder-params", default="{}", help="image_cnn parameters (JSON)")
    args = parser.parse_args()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.folder is not None:
        run(args.folder, args)
        return
    from medweave.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cohort"
        synthesize(out, n_patients=args.patients, seed=args.seed)
        write_volumes(out, seed=args.seed)
        run(out, args)


def _shapes(cohort: Cohort) -> str:
    images = cohort.modalities["imaging"].meta.get("images") or {}
    shapes = [tuple(v.get("shape") or ()) for v in images.values()]
    lo, hi = min(shapes), max(shapes)
    return f"{lo} .. {hi}"


if __name__ == "__main__":
    main()
