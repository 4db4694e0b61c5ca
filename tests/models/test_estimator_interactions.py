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


@pytest.mark.parametrize("task", ["binary", "discrete_hazard"])
def test_the_glm_is_averaged_with_the_networks_and_reloads_exactly(
    split: tuple[Cohort, Cohort], tmp_path: Path, task: str
) -> None:
    train, test = split
    params = {"modalities": ["ehr", "imaging", "omics", "environment"], "fusion": "concat"}
    est = MultimodalEstimator(
        preset="none", task=task, ensemble=2, interactions=1, pca={"omics": 8}, **params, **FAST
    ).fit(train)
    g = est.glm_
    assert g is not None
    # Main effects of every vector input (the image through its frozen stage-1 encoder),
    # pairs among the feature modalities only.
    assert list(g.main) == ["ehr", "imaging", "omics", "environment"]
    assert g.pair_modalities == ["ehr", "omics", "environment"]
    assert all(k.startswith("main=") for k in est.glm_cv_)
    batch = prepare(test, est.preps_)
    with torch.no_grad():  # each network on its own, the image encoded again for the GLM
        nets = torch.stack([net.eval()(batch.inputs, batch.masks) for net in est.members_])
        nets = nets.mean(dim=0).numpy()
        image = est.net_.encoders["imaging"].eval()(batch.inputs["imaging"])
        glm = g({**batch.inputs, "imaging": image}, batch.masks).numpy()
    np.testing.assert_allclose(est._outputs(test), (nets + glm) / 2, rtol=1e-5, atol=1e-6)
    # Each family can be read alone.
    key = "proba" if task == "binary" else "risk"
    for part, out in (("networks", nets), ("glm", glm)):
        expected = est.task_.predict(out)[key]
        np.testing.assert_allclose(est.predict_output(test, part=part)[key], expected, rtol=1e-5)
    # The networks are the same networks as without the GLM.
    plain = MultimodalEstimator(
        preset="none", task=task, ensemble=2, pca={"omics": 8}, **params, **FAST
    )
    plain.fit(train)
    assert plain.glm_ is None
    with pytest.raises(InputError, match="this model has no GLM"):
        plain.predict_output(test, part="glm")
    with pytest.raises(InputError, match="part='nets'; expected 'model', 'networks' or 'glm'"):
        plain.predict_output(test, part="nets")
    for a, b in zip(plain.members_, est.members_, strict=True):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(v, w), k
    assert_reloads_in_fresh_process(est, test, tmp_path)


def test_the_glm_learns_the_cohorts_interaction(split: tuple[Cohort, Cohort]) -> None:
    """The cohort's risk holds an environment x inflammation product: cross-validation
    keeps pair terms, and the hybrid ranks the test patients better than the networks."""
    train, test = split
    est = MultimodalEstimator(
        preset="none",
        modalities=["ehr", "omics", "environment"],
        fusion="late",
        interactions=1,
        pca={"ehr": 8, "omics": 16},
        **FAST,
    ).fit(train)
    assert est.glm_ is not None and est.glm_.pair_penalty is not None
    hybrid = est.score(test)
    est.glm_ = None
    assert hybrid > est.score(test)


def test_no_glm_without_a_vector_input(split: tuple[Cohort, Cohort]) -> None:
    train, _ = split
    est = MultimodalEstimator(preset="none", modalities=["imaging"], interactions=1, **FAST).fit(
        train
    )
    assert est.glm_ is None and est.glm_cv_ == {}
    single = MultimodalEstimator(preset="none", modalities=["ehr"], interactions=1, **FAST).fit(
        train
    )
    assert single.glm_ is not None and single.glm_.pairs == []


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
    est = MultimodalEstimator(preset="none", modalities=["ehr", "omics"], **FAST, **params)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=message):
        est.fit(train, y)


def test_the_glm_is_fitted_once_per_fold_with_a_store(
    split: tuple[Cohort, Cohort], tmp_path: Path
) -> None:
    train, test = split
    store = tmp_path / "store"
    params = {"modalities": ["ehr", "omics", "environment"], "interactions": 1, **FAST}
    first = MultimodalEstimator(
        preset="none", fusion="concat", encoder_store=str(store), **params
    ).fit(train)
    assert len(list(store.glob("*.safetensors"))) == 1
    other = MultimodalEstimator(
        preset="none", fusion="late", encoder_store=str(store), **params
    ).fit(train)
    assert len(list(store.glob("*.safetensors"))) == 1  # the same GLM, not fitted again
    assert first.glm_ is not None and other.glm_ is not None
    assert other.glm_.get_config() == first.glm_.get_config()
    assert other.glm_cv_ == first.glm_cv_
    # Exactly the GLM a fit without the store gives.
    alone = MultimodalEstimator(preset="none", fusion="late", **params).fit(train)
    for part in ("glm", "model"):
        np.testing.assert_array_equal(
            other.predict_output(test, part=part)["proba"],
            alone.predict_output(test, part=part)["proba"],
        )
