"""Pairwise cross-modal interactions fitted over the networks' outputs."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medweave.models.interactions import PairwiseInteractions, fit_interactions
from medweave.models.tasks import BinaryTask, CoxTask


def _data(
    n: int, *, interaction: float, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    """Three feature modalities; the risk has main effects (the offset) and, with
    ``interaction``, the product of a direction of ``a`` and one of ``b``. ``b`` is missing
    for a quarter of the patients (zeros)."""
    rng = np.random.default_rng(seed)
    x = {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in (("a", 6), ("b", 8), ("c", 5))}
    present = {m: np.ones(n, bool) for m in x}
    present["b"] = rng.random(n) > 0.25
    x["b"][~present["b"]] = 0.0
    main = 0.8 * x["a"][:, 0] + 0.5 * x["b"][:, 1] + 0.5 * x["c"][:, 2]
    eta = main + interaction * x["a"][:, 1] * x["b"][:, 2] * present["b"]
    inputs = {m: torch.from_numpy(v) for m, v in x.items()}
    masks = {m: torch.from_numpy(v) for m, v in present.items()}
    return inputs, masks, main.astype(np.float32), eta


def _binary(eta: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(len(eta)) < 1 / (1 + np.exp(-(eta - 0.5)))).astype(np.int64)


def test_a_pair_term_counts_only_when_both_modalities_are_present() -> None:
    g = PairwiseInteractions({"a": 3, "b": 2, "c": 4}, rank=2)
    assert g.pairs == [("a", "b"), ("a", "c"), ("b", "c")]
    x = {"a": torch.randn(5, 3), "b": torch.randn(5, 2), "c": torch.randn(5, 4)}
    every = {m: torch.ones(5, dtype=torch.bool) for m in x}
    alone = {m: torch.tensor([True, False, False, False, False]) for m in x}
    alone["a"] = torch.ones(5, dtype=torch.bool)
    with torch.no_grad():
        g.bias.fill_(0.3)
        full, lone = g(x, every), g(x, alone)
        # Whatever a missing modality's inputs hold, a patient with one modality gets the bias.
        x["b"][1:] = 1e6
        np.testing.assert_allclose(g(x, alone)[1:].numpy(), 0.3)
    assert torch.equal(lone[0], full[0]) and not torch.allclose(full[1:], lone[1:])


def test_cross_validation_finds_a_planted_interaction() -> None:
    inputs, masks, main, eta = _data(1500, interaction=1.2)
    y = _binary(eta)
    task = BinaryTask()
    task.fit_target(y)
    target = torch.as_tensor(task.encode_target(y))
    offset = torch.from_numpy(main - 0.5)[:, None]
    g, cv = fit_interactions(task.loss, offset, inputs, masks, target, rank=1, seed=0, strata=y)
    assert g is not None and g.penalty > 0
    assert min(v for k, v in cv.items() if k != "none") < cv["none"] - 0.01
    # The learned term tracks the planted product on new patients.
    new_inputs, new_masks, new_main, new_eta = _data(1000, interaction=1.2, seed=5)
    with torch.no_grad():
        learned = g(new_inputs, new_masks).numpy()
    planted = new_inputs["a"][:, 1].numpy() * new_inputs["b"][:, 2].numpy()
    both = new_masks["b"].numpy()
    assert np.corrcoef(learned[both], planted[both])[0, 1] > 0.8
    y_new = _binary(new_eta, 6)
    assert roc_auc_score(y_new, new_main + learned) > roc_auc_score(y_new, new_main) + 0.02


def test_no_interaction_kept_when_there_is_none() -> None:
    inputs, masks, main, eta = _data(1200, interaction=0.0)
    y = _binary(eta)
    task = BinaryTask()
    task.fit_target(y)
    target = torch.as_tensor(task.encode_target(y))
    offset = torch.from_numpy(main - 0.5)[:, None]
    g, cv = fit_interactions(task.loss, offset, inputs, masks, target, rank=1, seed=0, strata=y)
    # Either none is kept, or the one kept is shrunk to (almost) nothing.
    if g is not None:
        with torch.no_grad():
            assert float((g(inputs, masks) - g.bias).abs().max()) < 0.2
    assert cv["none"] <= min(cv.values()) + 1e-3


def test_a_cox_offset_gets_its_interaction_too() -> None:
    inputs, masks, main, eta = _data(1200, interaction=1.0, seed=2)
    rng = np.random.default_rng(3)
    t_event = rng.exponential(1000 * np.exp(-eta))
    t_cens = rng.uniform(100, 2000, len(eta))
    y = (np.minimum(t_event, t_cens), t_event <= t_cens)
    task = CoxTask()
    task.fit_target(y)
    target = torch.as_tensor(task.encode_target(y))
    offset = torch.from_numpy(main)[:, None]
    g, cv = fit_interactions(task.loss, offset, inputs, masks, target, rank=1, seed=0)
    assert g is not None
    assert min(cv.values()) < cv["none"] - 0.005
