"""MultimodalEstimator: deep ensembles and demographics kept out of principal components."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.models._prep import prepare
from medweave.models.estimator import MultimodalEstimator

from ._fresh import assert_reloads_in_fresh_process

FAST = {"max_epochs": 6, "patience": 3, "omics_top_genes": 300, "lr": 5e-4}
KEEP = ["age_at_index", "sex_male"]


def test_ensemble_averages_its_members_outputs(
    split: tuple[Cohort, Cohort], tmp_path: Path
) -> None:
    train, test = split
    est = MultimodalEstimator(
        preset="none",
        modalities=["ehr", "omics"],
        fusion="gated",
        ensemble=3,
        **FAST,
        pca={"omics": 8},
    ).fit(train)
    assert len(est.members_) == 3 and est.members_[0] is est.net_
    batch = prepare(test, est.preps_)
    with torch.no_grad():
        logits = [net.eval()(batch.inputs, batch.masks).numpy().ravel() for net in est.members_]
    # The members differ (own seed, initialisation, validation split) ...
    assert not np.allclose(logits[0], logits[1])
    # ... and the prediction is the sigmoid of their mean logit.
    expected = 1 / (1 + np.exp(-np.mean(logits, axis=0)))
    np.testing.assert_allclose(est.predict_proba(test), expected, rtol=1e-5)
    assert est.transform(test).shape == (test.n, 3 * est.resolved_["fused_dim"])
    # The first member is the single model of the same seed.
    single = MultimodalEstimator(
        preset="none", modalities=["ehr", "omics"], fusion="gated", **FAST, pca={"omics": 8}
    ).fit(train)
    np.testing.assert_allclose(single.predict_proba(test), 1 / (1 + np.exp(-logits[0])), rtol=1e-5)
    est.save(tmp_path / "ens")
    again = MultimodalEstimator.load(tmp_path / "ens")
    assert len(again.members_) == 3
    np.testing.assert_array_equal(again.predict_proba(test), est.predict_proba(test))


def test_ensemble_members_share_the_pretrained_image_encoder(
    split: tuple[Cohort, Cohort], tmp_path: Path
) -> None:
    train, test = split
    est = MultimodalEstimator(
        preset="none",
        modalities=["ehr", "imaging"],
        fusion="concat",
        image_size=(32, 32),
        ensemble=2,
        **FAST,
    ).fit(train)
    assert est.shared_encoders_ == ["imaging"]
    assert est.members_[1].encoders["imaging"] is est.net_.encoders["imaging"]
    est.save(tmp_path / "ens")
    again = MultimodalEstimator.load(tmp_path / "ens")
    assert again.members_[1].encoders["imaging"] is again.net_.encoders["imaging"]
    assert_reloads_in_fresh_process(est, test, tmp_path / "fresh")


def test_ensemble_must_be_a_positive_whole_number(split: tuple[Cohort, Cohort]) -> None:
    with pytest.raises(InputError, match=r"ensemble=0; expected a whole number >= 1"):
        MultimodalEstimator(preset="none", modalities=["ehr"], ensemble=0, **FAST).fit(split[0])


def test_pca_keep_passes_features_through_beside_the_components(
    split: tuple[Cohort, Cohort], tmp_path: Path
) -> None:
    train, test = split
    est = MultimodalEstimator(
        preset="none",
        modalities=["ehr", "omics"],
        pca={"ehr": 4, "omics": 4},
        pca_keep=KEEP,
        **FAST,
    ).fit(train)
    prep = est.preps_["ehr"]
    assert prep.input_shape() == (2 + 4,)
    assert est.preps_["omics"].input_shape() == (4,)  # omics has no such features
    # The kept features are the z-scored originals, the rest the principal components.
    block = test.modalities["ehr"]
    x = prep.transform(block).numpy()
    for j, name in enumerate(KEEP):
        raw = block.x[:, block.feature_names.index(name)]
        r = np.corrcoef(raw[block.present], x[block.present, j])[0, 1]
        assert r == pytest.approx(1.0, abs=1e-6)
    # The components are whitened on the training patients.
    fit_block = train.modalities["ehr"]
    pcs = prep.transform(fit_block).numpy()[fit_block.present, 2:]
    np.testing.assert_allclose(pcs.std(axis=0, ddof=1), 1.0, rtol=0.05)
    est.save(tmp_path / "keep")
    again = MultimodalEstimator.load(tmp_path / "keep")
    np.testing.assert_array_equal(again.predict_proba(test), est.predict_proba(test))


def test_pca_keep_errors_name_the_unknown_feature(split: tuple[Cohort, Cohort]) -> None:
    train, _ = split
    # A study's models share the list: a model without pca on the EHR ignores it.
    MultimodalEstimator(
        preset="none", modalities=["omics"], pca={"omics": 4}, pca_keep=KEEP, **FAST
    ).fit(train)
    with pytest.raises(InputError, match=r"pca_keep: no modality of the cohort has feature 'age'"):
        MultimodalEstimator(
            preset="none", modalities=["ehr"], pca={"ehr": 4}, pca_keep=["age"], **FAST
        ).fit(train)
    with pytest.raises(InputError, match=r"pca_keep: modality 'ehr' has no feature 'age'"):
        MultimodalEstimator(
            preset="none", modalities=["ehr"], pca={"ehr": 4}, pca_keep={"ehr": ["age"]}, **FAST
        ).fit(train)
    everything = train.modalities["environment"].feature_names
    with pytest.raises(InputError, match=r"pca_keep: keeps every feature of modality"):
        MultimodalEstimator(
            preset="none",
            modalities=["environment"],
            pca={"environment": 2},
            pca_keep={"environment": everything},
            **FAST,
        ).fit(train)
