"""MultimodalEstimator with pairwise cross-modal interactions (``interactions``)."""

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


def _split(cohort: Cohort) -> tuple[Cohort, Cohort]:
    rows = np.random.default_rng(0).permutation(cohort.n)
    cut = int(0.7 * cohort.n)
    return cohort.take(np.sort(rows[:cut])), cohort.take(np.sort(rows[cut:]))


@pytest.fixture(scope="module")
def split(built_cohort: Cohort) -> tuple[Cohort, Cohort]:
    return _split(built_cohort)


@pytest.mark.parametrize("task", ["binary", "discrete_hazard"])
def test_interactions_add_to_the_networks_output_and_reload_exactly(
    split: tuple[Cohort, Cohort], tmp_path: Path, task: str
) -> None:
    train, test = split
    params = {"modalities": ["ehr", "omics", "environment"], "fusion": "concat", **FAST}
    est = MultimodalEstimator(
        task=task, ensemble=2, interactions=1, pca={"omics": 8}, **params
    ).fit(train)
    # Every candidate penalty was cross-validated against the networks alone.
    assert set(est.interaction_cv_) == {"none", "3", "10", "30", "100", "300"}
    g = est.interactions_
    if g is None:  # nothing beat the networks alone on this small cohort
        assert min(est.interaction_cv_, key=est.interaction_cv_.__getitem__) == "none"
    else:
        assert [tuple(p) for p in g.pairs] == [
            ("ehr", "omics"),
            ("ehr", "environment"),
            ("omics", "environment"),
        ]
        batch = prepare(test, est.preps_)
        with torch.no_grad():
            nets = est._member_outputs(batch.inputs, batch.masks).numpy()
            extra = g(batch.inputs, batch.masks).numpy()
        np.testing.assert_allclose(est._outputs(test), nets + extra[:, None], rtol=1e-5)
    # The networks alone are the same networks as without interactions.
    plain = MultimodalEstimator(task=task, ensemble=2, pca={"omics": 8}, **params).fit(train)
    assert plain.interactions_ is None
    for a, b in zip(plain.members_, est.members_, strict=True):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(v, w), k
    assert_reloads_in_fresh_process(est, test, tmp_path)


def test_interactions_learn_on_the_synthetic_cohort(split: tuple[Cohort, Cohort]) -> None:
    """The cohort's risk holds an environment x inflammation product: with the networks
    stopped after a few epochs, the cross-validation keeps a pair term."""
    train, _ = split
    est = MultimodalEstimator(
        modalities=["ehr", "omics", "environment"],
        fusion="late",
        interactions=1,
        pca={"ehr": 8, "omics": 16},
        **FAST,
    ).fit(train)
    assert est.interactions_ is not None
    assert est.interaction_cv_[f"{est.interactions_.penalty:g}"] < est.interaction_cv_["none"]


def test_no_pairs_without_two_feature_modalities(split: tuple[Cohort, Cohort]) -> None:
    train, _ = split
    est = MultimodalEstimator(modalities=["ehr"], interactions=1, **FAST).fit(train)
    assert est.interactions_ is None and est.interaction_cv_ == {}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"interactions": 0}, "interactions=0; expected a rank >= 1"),
        ({"interactions": 1.5}, "interactions=1.5; expected a rank >= 1"),
        ({"interactions": 1, "task": "multiclass"}, "multiclass model has no single logit"),
    ],
)
def test_bad_interactions_are_one_line_errors(
    split: tuple[Cohort, Cohort], params: dict[str, object], message: str
) -> None:
    train, _ = split
    y = np.arange(train.n) % 3 if params.get("task") == "multiclass" else None
    est = MultimodalEstimator(modalities=["ehr", "omics"], **FAST, **params)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=message):
        est.fit(train, y)
