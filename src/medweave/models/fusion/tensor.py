"""Low-rank tensor fusion (LMF; Liu et al., ACL 2018, "Efficient Low-rank Multimodal
Fusion with Modality-Specific Factors").

Tensor fusion (Zadeh et al. 2017) takes the outer product ``Z = [1; z_1] ⊗ ... ⊗ [1; z_M]``
of the modality vectors each augmented with a constant 1 (so that every subset of
modalities, unimodal terms included, has its own block of ``Z``) and maps it linearly,
``out = W · Z + b``. LMF factorises the weight tensor with rank ``r``,
``W = sum_r w_r W_1^r ⊗ ... ⊗ W_M^r``, which gives without ever forming ``Z``

    out = sum_r w_r  prod_m ( W_m^r [1; z_m] ) + b          (product elementwise over out_dim)

Here ``z_m = dropout(tanh(A_m x_m + a_m))`` is a small modality subnetwork of width
``hidden`` and ``W_m^r`` is ``factors[m][r]`` of shape ``(1 + hidden, out_dim)``; row 0
multiplies the constant 1 (the factor's *bias row*).

**Missing modalities.** For a patient who lacks modality ``m`` only the constant part of
``[1; z_m]`` is used: the factor is ``W_m^r[0]``, the bias row, whatever ``x_m`` holds. In
the full tensor this keeps exactly the blocks of ``Z`` that do not involve ``m`` (the outer
product of the other modalities), i.e. the modality is *dropped* from the interaction,
not entered as an observation: an observed ``x_m = 0`` still gives ``z_m = tanh(a_m)`` and a
different output. The bias rows are initialised near 1, so at initialisation a missing
modality is close to the multiplicative identity. A patient with no modality gets
``sum_r w_r prod_m W_m^r[0] + b``: learned, finite.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from medweave.models.fusion._base import FUSIONS, Fusion
from medweave.models.fusion._common import check_in_dims, check_int, check_rate, gather

__all__ = ["TensorFusion"]


@FUSIONS.register(
    "tensor",
    description="low-rank multimodal tensor fusion (LMF); a missing modality leaves the product",
)
class TensorFusion(Fusion):
    """Low-rank multimodal fusion with modality-specific factors.

    Options: ``rank`` (number of rank-1 terms), ``hidden`` (width of each modality's
    subnetwork output ``z_m``), ``dropout`` (on ``z_m``).
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        out_dim: int = 64,
        rank: int = 4,
        hidden: int = 32,
        dropout: float = 0.1,
    ) -> None:
        check_in_dims(in_dims)
        Fusion.__init__(self, in_dims, out_dim=check_int("out_dim", out_dim))
        self.rank = check_int("rank", rank)
        self.hidden = check_int("hidden", hidden)
        self.dropout = check_rate("dropout", dropout)
        self.subnet = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(d, self.hidden), nn.Tanh(), nn.Dropout(self.dropout))
                for d in self.in_dims.values()
            ]
        )
        factors = []
        for _ in self.modalities:
            f = torch.randn(self.rank, 1 + self.hidden, self.out_dim) / math.sqrt(self.hidden)
            f[:, 0] = 1.0 + 0.1 * torch.randn(self.rank, self.out_dim)
            factors.append(nn.Parameter(f))
        self.factors = nn.ParameterList(factors)
        self.rank_weights = nn.Parameter(torch.randn(self.rank) / math.sqrt(self.rank))
        self.bias = nn.Parameter(torch.zeros(self.out_dim))

    def get_config(self) -> dict[str, Any]:
        return {
            "out_dim": self.out_dim,
            "rank": self.rank,
            "hidden": self.hidden,
            "dropout": self.dropout,
        }

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        xs, present = gather(self, embeddings, masks)
        product: torch.Tensor | None = None
        for j, (x, subnet, factor) in enumerate(zip(xs, self.subnet, self.factors, strict=True)):
            factor = factor.to(x.dtype)
            data = torch.einsum("nk,rko->nro", subnet(x), factor[:, 1:])
            # bias row always; the data term only for patients who have the modality
            term = factor[:, 0] + torch.where(
                present[:, j, None, None], data, torch.zeros((), dtype=x.dtype, device=x.device)
            )
            product = term if product is None else product * term
        assert product is not None  # in_dims is never empty
        return torch.einsum("r,nro->no", self.rank_weights.to(product.dtype), product) + self.bias
