"""Omics preprocessing follows the scale the source declared or detected (block meta)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from medweave.cohort import Audit, Cohort, ModalityBlock
from medweave.errors import InputError
from medweave.models._prep import ModalityPrep, fit_preps, prepare
from medweave.sources import ReadContext, get

N, GENES = 40, 6


def _cohort(x: np.ndarray, meta: dict[str, object]) -> Cohort:
    ids = [f"P{i}" for i in range(len(x))]
    patients = pd.DataFrame({"patient_id": ids, "index_date": pd.Timestamp("2020-06-30")})
    block = ModalityBlock(
        name="rna",
        kind="omics",
        ids=ids,
        x=x,
        feature_names=[f"G{j}" for j in range(x.shape[1])],
        meta=meta,
    )
    return Cohort(patients, modalities={"rna": block})


def _zscore(v: np.ndarray) -> np.ndarray:
    return (v - v.mean(axis=0)) / v.std(axis=0)


def _log_values() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 2.0, (N, GENES))  # log2 ratios: negatives


def _fit(cohort: Cohort) -> tuple[ModalityPrep, np.ndarray]:
    preps = fit_preps(cohort, ["rna"], np.arange(cohort.n), omics_top_genes=GENES, image_size=(8,))
    out = prepare(cohort, preps).inputs["rna"]
    assert not isinstance(out, dict)
    return preps["rna"], out.numpy()


def test_log_scaled_expression_with_negatives_trains_without_log1p(tmp_path: Path) -> None:
    x = _log_values()
    obs = pd.DataFrame(index=[f"P{i}" for i in range(N)])
    var = pd.DataFrame(index=[f"G{j}" for j in range(GENES)])
    ad.AnnData(x.astype(np.float32), obs=obs, var=var).write_h5ad(tmp_path / "log.h5ad")
    reader, spec_cls = get("h5ad")
    index = pd.DataFrame({"patient_id": obs.index, "index_date": pd.Timestamp("2020-06-30")})
    ctx = ReadContext(index=index, lookback_days=365, audit=Audit(), base_dir=tmp_path)
    block = reader(spec_cls(name="rna", type="h5ad", path="log.h5ad"), ctx)
    assert block.meta["scale"] == "log" and block.meta["scale_detected"] is True
    prep, out = _fit(_cohort(block.x, block.meta))
    assert prep.config == {"expression_scale": "log", "log1p": False}
    np.testing.assert_allclose(out, _zscore(block.x.astype(np.float64)), atol=1e-5)


def test_counts_get_log1p_and_a_bundle_keeps_the_choice() -> None:
    x = np.random.default_rng(1).poisson(20, (N, GENES)).astype(float)
    cohort = _cohort(x, {"scale": "counts", "scale_detected": False})
    prep, out = _fit(cohort)
    assert prep.config["log1p"] is True
    np.testing.assert_allclose(out, _zscore(np.log1p(x)), atol=1e-5)
    back = ModalityPrep.from_json(prep.to_json(), prep.tensors())
    np.testing.assert_allclose(back.transform(cohort.modalities["rna"]).numpy(), out, atol=1e-6)
    # A bundle saved before the scale was stored (no config) keeps taking log1p.
    old = ModalityPrep(prep.name, prep.kind, prep.feature_names, dict(prep.arrays), {})
    np.testing.assert_allclose(old.transform(cohort.modalities["rna"]).numpy(), out, atol=1e-6)


def test_a_block_without_a_scale_and_negative_values_is_taken_as_log() -> None:
    prep, out = _fit(_cohort(_log_values(), {}))
    assert prep.config["log1p"] is False
    np.testing.assert_allclose(out, _zscore(_log_values()), atol=1e-5)


def test_negative_values_declared_linear_are_one_clear_error() -> None:
    with pytest.raises(InputError, match=r"'rna': expression has negative values.*scale: log"):
        _fit(_cohort(_log_values(), {"scale": "linear", "scale_detected": False}))


def test_a_cohort_on_another_scale_than_training_is_an_error() -> None:
    x = np.random.default_rng(3).lognormal(2, 1, (N, GENES))
    prep, _ = _fit(_cohort(x, {"scale": "linear", "scale_detected": True}))
    logged = _cohort(np.log2(x), {"scale": "log", "scale_detected": True})
    with pytest.raises(InputError, match=r"trained on expression on a linear scale.*log scale"):
        prep.transform(logged.modalities["rna"])
