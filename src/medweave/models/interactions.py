"""Pairwise cross-modal interactions, fitted after the networks (``interactions=rank``).

An effect that lives in the product of two modalities — air pollution that harms more
when an inflammation module is high, a drug that works for one molecular subtype — is a
second-order signal. Networks early-stopped on a few hundred validation outcomes stop
before they learn it: the stopping rule sees the main effects level off, and a product of
two small weights has a small gradient. A penalised model of exactly that shape learns it
from the same data:

    g(x) = b + Σ_{a<b} 1[a, b present] · Σ_r (P_ab,r · x_a)(Q_ab,r · x_b)

over the prepared inputs ``x_m`` of the feature modalities (tabular, omics, exposure:
standardised features or principal components; images and event sequences have no fixed
feature vector and take no part), one rank-``r`` bilinear term per pair, added to the
networks' output (their logit or log-risk, the same ``g`` for every output column). A pair
counts only for patients who have both modalities — a missing modality adds nothing, it is
not read as zeros. The networks' output is a fixed offset; ``P`` and ``Q`` carry an L2
penalty, which on a factorised matrix is a nuclear-norm penalty on ``P Qᵀ`` (it shrinks
the pair's interaction towards low rank and to zero). The penalty is chosen by K-fold
cross-validation of the task's own loss among :data:`PENALTIES`, against the offset alone:
when no penalty beats it, no interaction is kept. Fits are full-batch L-BFGS to
convergence, so the answer does not depend on a stopping epoch.

The offset is the networks' in-sample output on their own training patients, a little
better than it will be on new patients; the cross-validation then under- rather than
over-states what the interactions add.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold
from torch import nn

__all__ = ["PENALTIES", "PairwiseInteractions", "fit_interactions"]

#: Penalties tried (per patient: the penalty term is ``penalty / n · Σ‖P‖² + ‖Q‖²``).
PENALTIES = tuple(float(f"{p:.3g}") for p in np.geomspace(5.0, 320.0, 13))
#: Cross-validation folds that choose the penalty.
FOLDS = 5


class PairwiseInteractions(nn.Module):
    """``g(x)`` above over the modalities ``dims`` (name -> input width), in their order."""

    def __init__(self, dims: dict[str, int], *, rank: int = 1, penalty: float = 0.0) -> None:
        super().__init__()
        if int(rank) != rank or rank < 1:
            raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
        self.dims = {m: int(d) for m, d in dims.items()}
        self.rank = int(rank)
        self.penalty = float(penalty)
        self.pairs = list(itertools.combinations(self.dims, 2))
        self.left = nn.ParameterList(
            [nn.Parameter(0.1 * torch.randn(self.dims[a], self.rank)) for a, _ in self.pairs]
        )
        self.right = nn.ParameterList(
            [nn.Parameter(0.1 * torch.randn(self.dims[b], self.rank)) for _, b in self.pairs]
        )
        self.bias = nn.Parameter(torch.zeros(1))

    def get_config(self) -> dict[str, Any]:
        return {"dims": self.dims, "rank": self.rank, "penalty": self.penalty}

    def forward(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``g`` per patient, shape (n,)."""
        n = inputs[next(iter(self.dims))].shape[0]
        out = self.bias.expand(n)
        for (a, b), p, q in zip(self.pairs, self.left, self.right, strict=True):
            both = (masks[a] & masks[b]).to(out.dtype)
            out = out + both * ((inputs[a].to(p.dtype) @ p) * (inputs[b].to(q.dtype) @ q)).sum(1)
        return out

    def norm(self) -> torch.Tensor:
        """Σ ‖P‖² + ‖Q‖² over the pairs (the penalised quantity)."""
        return sum((w.square().sum() for w in [*self.left, *self.right]), torch.zeros(()))


def fit_interactions(
    loss: Any,
    offset: torch.Tensor,
    inputs: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    target: torch.Tensor,
    *,
    rank: int,
    seed: int,
    strata: np.ndarray | None = None,
) -> tuple[PairwiseInteractions | None, dict[str, float]]:
    """Choose the penalty by cross-validation and fit the interactions on every patient.

    ``loss(out, target)`` is the task's loss of outputs (n, k); ``offset`` (n, k) the
    networks' outputs; ``inputs`` / ``masks`` the feature modalities' prepared inputs and
    presence (two or more modalities); ``strata`` the classes to stratify the folds by.
    Returns the fitted module (None when no penalty beats the offset alone) and the mean
    validation loss of each candidate (``"none"`` for the offset alone).
    """
    n = len(offset)
    dims = {m: int(x.shape[1]) for m, x in inputs.items()}
    split = (
        StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(np.zeros(n), strata)
        if strata is not None
        else KFold(FOLDS, shuffle=True, random_state=seed).split(np.zeros(n))
    )
    folds = list(split)
    cv: dict[str, float] = {}
    for penalty in (None, *PENALTIES):
        losses = []
        for tr, va in folds:
            tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
            g = _fit(loss, offset, inputs, masks, target, tr_t, dims, rank, penalty, seed)
            with torch.no_grad():
                out = offset[va_t] + g(_rows(inputs, va_t), _rows(masks, va_t))[:, None]
                losses.append(float(loss(out, target[va_t])))
        cv["none" if penalty is None else f"{penalty:g}"] = float(np.mean(losses))
    best = min(cv, key=cv.__getitem__)
    if best == "none":
        return None, cv
    every = torch.arange(n)
    return _fit(loss, offset, inputs, masks, target, every, dims, rank, float(best), seed), cv


def _rows(d: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {m: x[rows] for m, x in d.items()}


def _fit(
    loss: Any,
    offset: torch.Tensor,
    inputs: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    target: torch.Tensor,
    rows: torch.Tensor,
    dims: dict[str, int],
    rank: int,
    penalty: float | None,
    seed: int,
) -> PairwiseInteractions:
    """One full-batch L-BFGS fit on ``rows``; ``penalty`` None fits the bias alone."""
    torch.manual_seed(seed)
    g = PairwiseInteractions(dims, rank=rank, penalty=penalty or 0.0)
    x, k, off, y = _rows(inputs, rows), _rows(masks, rows), offset[rows], target[rows]
    params = list(g.parameters())
    if penalty is None:  # the offset and a bias alone: no pair terms
        with torch.no_grad():
            for w in [*g.left, *g.right]:
                w.zero_()
        params = [g.bias]
    opt = torch.optim.LBFGS(
        params,
        max_iter=300,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )
    weight = (penalty or 0.0) / len(rows)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss(off + g(x, k)[:, None], y) + weight * g.norm()
        value.backward()
        return value

    opt.step(closure)
    g.requires_grad_(requires_grad=False)
    return g.eval()
