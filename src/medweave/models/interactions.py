"""A penalised GLM with pairwise cross-modal interactions, averaged with the networks
(``MultimodalEstimator(interactions=rank)``).

Two things early-stopped networks leave on the table with a thousand or so outcomes:

* some of the linear signal — a well-penalised regression on the same inputs is often as
  good as the network, and the two make different errors;
* effects that live in the product of two modalities — air pollution that harms more when
  an inflammation module is high, a drug that works for one molecular subtype. The
  stopping rule sees the main effects level off before a product of two small weights,
  whose gradient is small, has grown.

A penalised model of the right shape, fitted to convergence, learns both from the same
data:

    b + Σ_m 1[m present] · w_m · x_m
      + Σ_{a<b} 1[a, b present] · Σ_r (P_ab,r · x_a)(Q_ab,r · x_b)

``x_m`` are the vector inputs: the prepared features of the feature modalities (tabular,
omics, exposure: standardised features or principal components) and the frozen stage-1
embeddings of pretrained image encoders. Pairs are formed among the feature modalities
only — measured variables, the classical gene x environment setting; an image embedding's
many learned dimensions would add far more pair parameters than signal. A missing modality
adds nothing (its terms are masked, not read as zeros). ``w`` carries an L2 penalty; ``P``
and ``Q`` too, which on a factorised matrix is a nuclear-norm penalty on ``P Qᵀ``: it
shrinks each pair's interaction towards low rank and, when it does not pay, to exactly
zero. The bias ``b`` has one entry per output column (the bins of a discrete hazard model
share the rest: proportional odds); the task's own loss is minimised (logistic, Cox partial
likelihood, discrete-time likelihood, squared error).

Penalties are chosen by K-fold cross-validation of that loss: the main effects' first
(among :data:`MAIN_PENALTIES`), then the pairs' given it (among :data:`PAIR_PENALTIES`, or
none). Fits are full-batch L-BFGS to convergence, so the answer does not depend on a
stopping epoch. The estimator averages the GLM's output (logit, log-risk) with its
networks', with equal weight: a two-family ensemble, whose weights are fixed rather than
fitted because the networks' in-sample outputs would flatter them.

Numerical trouble never ends a run. A trial step of the line search where the loss or its
gradient is not finite (the Efron partial likelihood overflows float32 beyond a log-risk of
about 88 when times are tied; a logit of ±inf makes the logistic loss NaN) is rejected as
infinitely bad, and the line search bisects back towards the last finite point. A candidate
penalty whose fit still fails is left out of the cross-validation; a final fit that fails
falls back, with a logged warning, to a safer setting — no pairs, then the strongest main
penalty, then the intercept alone — and :attr:`CrossModalGLM.fallback` (kept in bundles)
says what happened and what was used.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold
from torch import nn

__all__ = ["FOLDS", "MAIN_PENALTIES", "PAIR_PENALTIES", "CrossModalGLM", "fit_glm"]

log = logging.getLogger(__name__)

#: Candidate penalties (per patient: the term is ``penalty / n · Σ‖w‖²``).
MAIN_PENALTIES = (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
PAIR_PENALTIES = tuple(float(f"{p:.3g}") for p in np.geomspace(5.0, 320.0, 13))
#: Cross-validation folds that choose the penalties.
FOLDS = 5


class CrossModalGLM(nn.Module):
    """The GLM above: ``out_dim`` outputs, main effects over ``main`` (modality -> input
    width) and rank-``rank`` pair terms among the modalities of ``pairs`` (a
    ``pair_penalty`` of None: no pairs). ``fallback`` is None for a fit that converged with
    the penalties cross-validation chose, else what went wrong and the safer setting used."""

    def __init__(
        self,
        main: dict[str, int],
        pairs: list[str],
        *,
        out_dim: int = 1,
        rank: int = 1,
        main_penalty: float = 1.0,
        pair_penalty: float | None = None,
        fallback: str | None = None,
    ) -> None:
        super().__init__()
        if int(rank) != rank or rank < 1:
            raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
        self.main = {m: int(d) for m, d in main.items()}
        self.pair_modalities = list(pairs)
        self.rank = int(rank)
        self.main_penalty = main_penalty
        self.pair_penalty = pair_penalty
        self.fallback = fallback
        with_pairs = pair_penalty is not None
        self.pairs = list(itertools.combinations(self.pair_modalities, 2)) if with_pairs else []
        self.out_dim = int(out_dim)
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(d)) for d in self.main.values()])
        dims = self.main
        self.left = nn.ParameterList(
            [nn.Parameter(0.1 * torch.randn(dims[a], self.rank)) for a, _ in self.pairs]
        )
        self.right = nn.ParameterList(
            [nn.Parameter(0.1 * torch.randn(dims[b], self.rank)) for _, b in self.pairs]
        )
        self.bias = nn.Parameter(torch.zeros(self.out_dim))
        # Inputs are standardised over the training patients who have the modality, so one
        # penalty suits features and embeddings of any scale (set by fit_glm).
        for i, d in enumerate(self.main.values()):
            self.register_buffer(f"center{i}", torch.zeros(d))
            self.register_buffer(f"scale{i}", torch.ones(d))

    def standardise(self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
        """Set the centre and scale of every input from these (training) patients."""
        for i, m in enumerate(self.main):
            x = inputs[m][masks[m]].to(torch.float32)
            if len(x):
                sd = x.std(dim=0, unbiased=False)
                getattr(self, f"center{i}").copy_(x.mean(dim=0))
                getattr(self, f"scale{i}").copy_(torch.where(sd > 0, sd, torch.ones_like(sd)))

    def _standardised(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            m: (inputs[m].to(torch.float32) - getattr(self, f"center{i}"))
            / getattr(self, f"scale{i}")
            for i, m in enumerate(self.main)
        }

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> CrossModalGLM:
        """A fitted GLM rebuilt from :meth:`get_config` and its ``state_dict`` (bundles, the
        encoder store), frozen and in evaluation mode."""
        g = cls(**config)
        g.load_state_dict(state)
        g.requires_grad_(requires_grad=False)
        return g.eval()

    def get_config(self) -> dict[str, Any]:
        return {
            "main": self.main,
            "pairs": self.pair_modalities,
            "out_dim": self.out_dim,
            "rank": self.rank,
            "main_penalty": self.main_penalty,
            "pair_penalty": self.pair_penalty,
            "fallback": self.fallback,
        }

    def forward(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The GLM's output (logit, log-risk), shape (n, out_dim)."""
        inputs = self._standardised(inputs)
        n = inputs[next(iter(self.main))].shape[0]
        out = torch.zeros(n)
        zero = torch.zeros(())
        for m, w in zip(self.main, self.weights, strict=True):
            out = out + torch.where(masks[m], inputs[m] @ w, zero)
        for (a, b), p, q in zip(self.pairs, self.left, self.right, strict=True):
            term = ((inputs[a] @ p) * (inputs[b] @ q)).sum(1)
            out = out + torch.where(masks[a] & masks[b], term, zero)
        return out[:, None] + self.bias

    def loss_penalty(self, n: int) -> torch.Tensor:
        """The penalty term for ``n`` training patients."""
        total = self.main_penalty / n * sum(w.square().sum() for w in self.weights)
        if self.pair_penalty is not None:
            squares = sum(w.square().sum() for w in [*self.left, *self.right])
            total = total + self.pair_penalty / n * squares
        return torch.as_tensor(total)


def fit_glm(
    loss: Any,
    inputs: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    target: torch.Tensor,
    *,
    out_dim: int,
    pairs: list[str],
    rank: int,
    seed: int,
    strata: np.ndarray | None = None,
    main_penalties: tuple[float, ...] = MAIN_PENALTIES,
    pair_penalties: tuple[float, ...] = PAIR_PENALTIES,
) -> tuple[CrossModalGLM, dict[str, float]]:
    """Choose the penalties by cross-validation and fit the GLM on every patient.

    ``loss(out, target)`` is the task's loss of outputs (n, ``out_dim``); ``inputs`` /
    ``masks`` the vector inputs and presence of every modality with main effects; ``pairs``
    the modalities among which pairs are formed; ``strata`` the classes to stratify the
    folds by; ``main_penalties`` / ``pair_penalties`` the candidates. Returns the fitted GLM
    and the mean validation loss of each candidate (``"main=…"``, ``"main=…,pairs=…"``;
    ``inf`` for a candidate whose fit or validation loss was not finite in some fold).
    Never raises for numerical trouble: see the module's docstring.
    """
    n = len(target)
    dims = {m: int(x.shape[1]) for m, x in inputs.items()}
    if strata is not None:
        split = StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(np.zeros(n), strata)
    else:
        split = KFold(FOLDS, shuffle=True, random_state=seed).split(np.zeros(n))
    folds = [(torch.as_tensor(tr), torch.as_tensor(va)) for tr, va in split]
    fit = functools.partial(
        _fit,
        loss,
        inputs,
        masks,
        target,
        seed=seed,
        dims=dims,
        pairs=pairs,
        out_dim=out_dim,
        rank=rank,
    )

    def cv_loss(main_penalty: float, pair_penalty: float | None) -> float:
        losses = []
        for tr, va in folds:
            try:
                g = fit(tr, main_penalty, pair_penalty)
            except _Diverged:
                return math.inf
            with torch.no_grad():
                losses.append(float(loss(g(_rows(inputs, va), _rows(masks, va)), target[va])))
        value = float(np.mean(losses))
        # A NaN would make min() below depend on the candidates' order.
        return value if math.isfinite(value) else math.inf

    def label(main_penalty: float, pair_penalty: float | None) -> str:
        return f"main={main_penalty:g}" + (
            "" if pair_penalty is None else f",pairs={pair_penalty:g}"
        )

    cv: dict[str, float] = {}
    _path(cv, main_penalties, lambda p: label(p, None), lambda p: cv_loss(p, None))
    main = min(
        (p for p in main_penalties if label(p, None) in cv), key=lambda p: cv[label(p, None)]
    )
    pair: float | None = None
    trouble = []
    if not math.isfinite(cv[label(main, None)]):
        # No candidate fits: the strongest penalty is the best-conditioned problem.
        main = max(main_penalties)
        trouble.append("no main-effect penalty gave a finite cross-validated loss")
    elif len(pairs) >= 2:
        _path(cv, pair_penalties, lambda p: label(main, p), lambda p: cv_loss(main, p))
        pair = min(
            (p for p in (None, *pair_penalties) if label(main, p) in cv),
            key=lambda p: cv[label(main, p)],
        )
    if failed := [k for k, v in cv.items() if not math.isfinite(v)]:
        log.warning(
            "interactions GLM: %d of %d candidate penalties did not fit with a finite loss "
            "in every fold and were left out (%s)",
            len(failed),
            len(cv),
            ", ".join(failed[:4]) + (", …" if len(failed) > 4 else ""),
        )
    return _final_fit(fit, torch.arange(n), main, pair, max(main_penalties), trouble), cv


#: The penalty path stops once this many weaker penalties in a row have a cross-validated
#: loss above the best so far (the loss is, in practice, unimodal along the path).
PATH_PATIENCE = 2


def _path(
    cv: dict[str, float],
    penalties: tuple[float, ...],
    label: Any,
    loss: Any,
) -> None:
    """Cross-validate ``penalties`` from the strongest to the weakest into ``cv``, stopping
    after :data:`PATH_PATIENCE` candidates in a row that do not beat the best: the weak end
    of the path, where fits are slowest and overfit most, is only visited when it pays."""
    best, worse = math.inf, 0
    for p in sorted(penalties, reverse=True):
        value = loss(p)
        cv[label(p)] = value
        if value < best:
            best, worse = value, 0
        elif value > best + 1e-4 * abs(best):
            # a real rise; a flat stretch (a strong penalty holding the terms at zero) is
            # not one
            worse += 1
            if worse >= PATH_PATIENCE and math.isfinite(best):
                break


def _final_fit(
    fit: Any,
    rows: torch.Tensor,
    main: float,
    pair: float | None,
    strongest: float,
    trouble: list[str],
) -> CrossModalGLM:
    """The fit on every patient with the chosen penalties or, when it fails numerically,
    the first safer setting that fits: no pairs, then the ``strongest`` main penalty without
    pairs, then the intercept alone (weights at zero). Each fallback is logged as a warning
    and recorded in the GLM's ``fallback``, with the ``trouble`` met before."""
    chosen = f"main penalty {main:g}" + ("" if pair is None else f", pair penalty {pair:g}")
    settings: list[tuple[float, float | None, str]] = [(main, pair, chosen)]
    if pair is not None:
        settings.append((main, None, f"main penalty {main:g}, no pairs"))
    if main != strongest:
        settings.append((strongest, None, f"main penalty {strongest:g}, no pairs"))
    for i, (main_penalty, pair_penalty, label) in enumerate(settings):
        try:
            g = fit(rows, main_penalty, pair_penalty)
        except _Diverged as e:
            trouble.append(f"the fit with {label} failed ({e})")
            continue
        if i or trouble:
            g.fallback = _fallback(trouble, f"used {label}")
        return g
    try:
        g = fit(rows, strongest, None, only_bias=True)
        used = "used the intercept alone (weights zero)"
    except _Diverged as e:
        trouble.append(f"the intercept alone failed ({e})")
        g = fit(rows, strongest, None, only_bias=True, optimise=False)
        used = "used a constant output of zero"
    g.fallback = _fallback(trouble, used)
    return g


def _fallback(trouble: list[str], used: str) -> str:
    """The fallback's account, logged as a warning."""
    text = "; ".join([*trouble, used])
    log.warning("interactions GLM fell back to a safer setting: %s", text)
    return text


def _rows(d: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {m: x[rows] for m, x in d.items()}


class _Diverged(Exception):
    """A fit whose optimiser stopped with an error or ended where its objective or
    parameters are not finite."""


#: What torch's L-BFGS raises when its line search meets NaN: ``RuntimeError: value cannot
#: be converted to type float without overflow`` (a NaN loss compares false with
#: everything, so the line search grows the step until it overflows a float) or an
#: ``IndexError`` from its bracket.
_OPTIMISER_ERRORS = (RuntimeError, ArithmeticError, IndexError, ValueError)


def _fit(
    loss: Any,
    inputs: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    target: torch.Tensor,
    rows: torch.Tensor,
    main_penalty: float,
    pair_penalty: float | None,
    *,
    seed: int,
    dims: dict[str, int],
    pairs: list[str],
    out_dim: int,
    rank: int,
    only_bias: bool = False,
    optimise: bool = True,
) -> CrossModalGLM:
    """One full-batch L-BFGS fit on ``rows`` (``only_bias``: of the intercept, the weights
    held at zero; not ``optimise``: no fit at all, every parameter zero). Raises
    :class:`_Diverged` when the fit fails numerically."""
    torch.manual_seed(seed)
    g = CrossModalGLM(
        dims,
        pairs,
        out_dim=out_dim,
        rank=rank,
        main_penalty=main_penalty,
        pair_penalty=pair_penalty,
    )
    x, k, y = _rows(inputs, rows), _rows(masks, rows), target[rows]
    g.standardise(x, k)
    params = [g.bias] if only_bias else list(g.parameters())
    if only_bias:
        with torch.no_grad():
            for w in [*g.weights, *g.left, *g.right]:
                w.zero_()
    if not optimise:
        g.requires_grad_(requires_grad=False)
        return g.eval()
    opt = torch.optim.LBFGS(
        params,
        max_iter=300,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def objective() -> torch.Tensor:
        return loss(g(x, k), y) + g.loss_penalty(len(rows))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = objective()
        value.backward()
        if math.isfinite(float(value.detach())) and all(
            p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params
        ):
            return value
        # A non-finite trial step is rejected as infinitely bad; NaN slopes make the
        # strong-Wolfe line search bisect its bracket towards the last finite point rather
        # than interpolate with an infinite value (whose cubic step would be NaN).
        for p in params:
            if p.grad is not None:
                p.grad.fill_(math.nan)
        return torch.tensor(math.inf)

    try:
        opt.step(closure)
    except _OPTIMISER_ERRORS as e:
        raise _Diverged(f"L-BFGS stopped: {e}") from e
    with torch.no_grad():
        final = float(objective())
    if not math.isfinite(final) or not all(bool(torch.isfinite(p).all()) for p in params):
        raise _Diverged(f"the objective is {final} at the end of L-BFGS")
    g.requires_grad_(requires_grad=False)
    return g.eval()
