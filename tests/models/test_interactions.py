"""The penalised GLM with pairwise cross-modal interactions (medweave.models.interactions)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medweave.models.interactions import PAIR_PENALTIES, CrossModalGLM, fit_glm
from medweave.models.tasks import BinaryTask, CoxTask, DiscreteHazardTask


def _data(
    n: int, *, interaction: float, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], np.ndarray]:
    """Three feature modalities on different scales; the risk has main effects and, with
    ``interaction``, the product of a direction of ``a`` and one of ``b``. ``b`` is missing
    for a quarter of the patients (its rows hold junk, which the masks must hide)."""
    rng = np.random.default_rng(seed)
    x = {m: rng.normal(size=(n, d)) for m, d in (("a", 6), ("b", 8), ("c", 5))}
    present = {m: np.ones(n, bool) for m in x}
    present["b"] = rng.random(n) > 0.25
    eta = 0.8 * x["a"][:, 0] + 0.5 * x["c"][:, 2]
    eta = eta + present["b"] * (0.5 * x["b"][:, 1] + interaction * x["a"][:, 1] * x["b"][:, 2])
    x["b"][~present["b"]] = 50.0
    x["c"] = 100.0 * x["c"] + 7.0  # the GLM standardises its inputs
    inputs = {m: torch.from_numpy(v.astype(np.float32)) for m, v in x.items()}
    masks = {m: torch.from_numpy(v) for m, v in present.items()}
    return inputs, masks, eta


def _binary(eta: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(len(eta)) < 1 / (1 + np.exp(-(eta - 0.5)))).astype(np.int64)


def _binary_fit(
    n: int, interaction: float, seed: int = 0
) -> tuple[CrossModalGLM, dict[str, float]]:
    inputs, masks, eta = _data(n, interaction=interaction, seed=seed)
    y = _binary(eta)
    task = BinaryTask()
    task.fit_target(y)
    target = torch.as_tensor(task.encode_target(y))
    pairs = ["a", "b", "c"]
    return fit_glm(
        task.loss, inputs, masks, target, out_dim=1, pairs=pairs, rank=1, seed=0, strata=y
    )


def test_a_term_counts_only_when_its_modalities_are_present() -> None:
    g = CrossModalGLM({"a": 3, "b": 2, "c": 4}, ["a", "b", "c"], rank=2, pair_penalty=1.0)
    assert g.pairs == [("a", "b"), ("a", "c"), ("b", "c")]
    with torch.no_grad():
        for w in g.weights:
            w.normal_()
    x = {"a": torch.randn(5, 3), "b": torch.randn(5, 2), "c": torch.randn(5, 4)}
    only_a = {m: torch.zeros(5, dtype=torch.bool) for m in x}
    only_a["a"] = torch.ones(5, dtype=torch.bool)
    with torch.no_grad():
        before = g(x, only_a)
        # Whatever a missing modality's rows hold, they change nothing.
        x["b"][:] = 1e6
        x["c"][:] = -1e6
        np.testing.assert_array_equal(g(x, only_a).numpy(), before.numpy())
        every = {m: torch.ones(5, dtype=torch.bool) for m in x}
        assert not torch.allclose(g(x, every), before)
    assert before.shape == (5, 1)


def test_cross_validation_finds_a_planted_interaction() -> None:
    g, cv = _binary_fit(1500, interaction=1.2)
    assert g.pair_penalty is not None and g.pair_penalty in PAIR_PENALTIES
    no_pairs = cv[f"main={g.main_penalty:g}"]
    assert cv[f"main={g.main_penalty:g},pairs={g.pair_penalty:g}"] < no_pairs - 0.01
    # On new patients the GLM ranks better than the true main effects alone would.
    inputs, masks, eta = _data(1000, interaction=1.2, seed=5)
    y = _binary(eta, 6)
    with torch.no_grad():
        score = g(inputs, masks).numpy().ravel()
    main_only = eta - 1.2 * masks["b"].numpy() * (
        inputs["a"][:, 1].numpy() * inputs["b"][:, 2].numpy()
    )
    assert roc_auc_score(y, score) > roc_auc_score(y, main_only) + 0.02


def _largest_pair_weight(g: CrossModalGLM) -> float:
    return max((float(w.abs().max()) for w in [*g.left, *g.right]), default=0.0)


def test_no_pairs_kept_when_there_is_no_interaction() -> None:
    g, _ = _binary_fit(1200, interaction=0.0)
    # Dropped, or shrunk to nothing by the nuclear-norm penalty (a planted one is ~1).
    assert _largest_pair_weight(g) < 0.01
    planted, _ = _binary_fit(1500, interaction=1.2)
    assert _largest_pair_weight(planted) > 0.3


def test_survival_tasks_fit_their_own_likelihood() -> None:
    inputs, masks, eta = _data(1200, interaction=1.0, seed=2)
    rng = np.random.default_rng(3)
    t_event = rng.exponential(1000 * np.exp(-eta))
    t_cens = rng.uniform(100, 2000, len(eta))
    y = (np.minimum(t_event, t_cens), t_event <= t_cens)
    for task in (CoxTask(), DiscreteHazardTask(n_bins=6)):
        task.fit_target(y)
        target = torch.as_tensor(task.encode_target(y))
        g, _ = fit_glm(
            task.loss,
            inputs,
            masks,
            target,
            out_dim=task.out_dim,
            pairs=["a", "b", "c"],
            rank=1,
            seed=0,
        )
        assert g.pair_penalty is not None
        with torch.no_grad():
            out = g(inputs, masks).numpy()
        assert out.shape == (len(eta), task.out_dim)
        assert task.score(task.predict(out), y) > 0.7


def _tied_cox(
    n: int, genes: int, *, seed: int
) -> tuple[CoxTask, dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """A small survival cohort like the real ones of issue 17: 40 events, times tied on a
    12-month grid (Efron's partial likelihood overflows float32 beyond a log-risk of ~88
    when times are tied), and far more expression features than patients."""
    rng = np.random.default_rng(seed)
    x = {m: rng.normal(size=(n, d)) for m, d in (("a", 10), ("b", genes), ("c", 5))}
    eta = x["a"][:, 0] + 0.5 * x["b"][:, :20].sum(1) / np.sqrt(20)
    t = np.exp(-eta) * rng.exponential(size=n)
    cut = np.sort(t)[40]
    event = t <= cut
    time = np.where(event, t, cut * (1 + 3 * rng.random(n)))
    time = np.ceil(time / time.max() * 12)
    task = CoxTask()
    task.fit_target((time, event))
    inputs = {m: torch.from_numpy(v.astype(np.float32)) for m, v in x.items()}
    masks = {m: torch.ones(n, dtype=torch.bool) for m in x}
    return task, inputs, masks, torch.as_tensor(task.encode_target((time, event)))


def test_a_small_tied_survival_cohort_fits_where_lbfgs_overflowed() -> None:
    # Before the guard, L-BFGS met a NaN loss in one fold's line search and ended with
    # "RuntimeError: value cannot be converted to type float without overflow".
    task, inputs, masks, target = _tied_cox(120, 2000, seed=1)
    g, cv = fit_glm(
        task.loss,
        inputs,
        masks,
        target,
        out_dim=1,
        pairs=["a", "b", "c"],
        rank=1,
        seed=0,
        main_penalties=(300.0,),
        pair_penalties=(80.0,),
    )
    assert all(np.isfinite(v) for v in cv.values())
    assert g.fallback is None  # the line search stepped back: the fit itself converged
    with torch.no_grad():
        assert torch.isfinite(g(inputs, masks)).all()


def test_a_loss_that_is_nan_beyond_a_step_is_stepped_back_from() -> None:
    # NaN beyond |output| 2, like Efron's likelihood beyond 88: torch's line search read
    # NaN as neither better nor worse and failed (IndexError, or a float overflow).
    task, inputs, masks, target = _tied_cox(80, 20, seed=0)

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = task.loss(out, y)
        return torch.where(out.detach().abs().max() > 2.0, torch.nan, value)

    g, _ = fit_glm(
        loss,
        inputs,
        masks,
        target,
        out_dim=1,
        pairs=["a", "b", "c"],
        rank=1,
        seed=0,
        main_penalties=(3.0,),
        pair_penalties=(5.0,),
    )
    with torch.no_grad():
        out = g(inputs, masks)
    assert torch.isfinite(out).all() and float(out.abs().max()) <= 2.0
    assert g.fallback is None


@pytest.mark.parametrize("where", ["every fit", "the fit on every patient"])
def test_a_fit_that_cannot_converge_falls_back_with_a_warning(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    task, inputs, masks, target = _tied_cox(80, 20, seed=0)
    n = len(target)

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = task.loss(out, y)
        broken = where == "every fit" or len(out) == n
        return value * torch.nan if broken else value

    with caplog.at_level(logging.WARNING, logger="medweave.models.interactions"):
        g, cv = fit_glm(
            loss,
            inputs,
            masks,
            target,
            out_dim=1,
            pairs=["a", "b", "c"],
            rank=1,
            seed=0,
            main_penalties=(3.0, 30.0),
            pair_penalties=(5.0,),
        )
    assert g.fallback is not None and g.fallback.endswith("used a constant output of zero")
    assert "the fit with main penalty 30" in g.fallback
    assert "the intercept alone failed" in g.fallback
    assert "fell back to a safer setting" in caplog.text
    if where == "every fit":
        assert cv == {"main=3": math.inf, "main=30": math.inf}
        assert g.fallback.startswith("no main-effect penalty gave a finite")
        assert "were left out" in caplog.text
    else:
        assert all(math.isfinite(v) for v in cv.values())
    with torch.no_grad():
        assert torch.equal(g(inputs, masks), torch.zeros(n, 1))
    # The account travels with the GLM (bundles, the encoder store).
    again = CrossModalGLM.from_state(g.get_config(), g.state_dict())
    assert again.fallback == g.fallback
