"""Gated fusion: per-modality representations mixed by gates computed from them.

Each modality ``m`` is projected to ``h_m = tanh(W_m x_m + b_m)`` (width ``hidden``) and
scored per dimension, ``s_m = U_m h_m + c_m``. A learned "nothing observed" slot
``h_0`` with score ``s_0`` (both parameters) is always present. With ``gate="sigmoid"``
(default) the gates are ``g_m = sigmoid(s_m)`` and

    out = head( (g_0 h_0 + sum_{m present} g_m h_m) / (g_0 + sum_{m present} g_m) )

(a per-dimension convex combination; ``g_0 > 0`` keeps the normaliser positive). With
``gate="softmax"`` the weights are a softmax of the scores over the slot and the present
modalities. Either way a missing modality's gate is exactly 0, and a patient with no
modality gets ``head(h_0)``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from medweave.errors import InputError
from medweave.models.fusion._base import FUSIONS, Fusion
from medweave.models.fusion._common import check_in_dims, check_int, check_rate, gather

__all__ = ["GatedFusion"]

GateKind = Literal["sigmoid", "softmax"]


@FUSIONS.register(
    "gated",
    description="per-modality gates (sigmoid or softmax over present ones), missing gate = 0",
)
class GatedFusion(Fusion):
    """Gated sum of per-modality projections, normalised over the modalities present.

    Options: ``hidden`` (width of each h_m), ``gate`` (``"sigmoid"`` or ``"softmax"``),
    ``dropout`` (on the h_m).
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        out_dim: int = 64,
        hidden: int = 64,
        gate: GateKind = "sigmoid",
        dropout: float = 0.1,
    ) -> None:
        check_in_dims(in_dims)
        Fusion.__init__(self, in_dims, out_dim=check_int("out_dim", out_dim))
        self.hidden = check_int("hidden", hidden)
        if gate not in ("sigmoid", "softmax"):
            raise InputError(f"fusion option gate={gate!r}; expected 'sigmoid' or 'softmax'")
        self.gate: GateKind = gate
        self.dropout = check_rate("dropout", dropout)
        self.proj = nn.ModuleList([nn.Linear(d, self.hidden) for d in self.in_dims.values()])
        self.score = nn.ModuleList([nn.Linear(self.hidden, self.hidden) for _ in self.modalities])
        self.drop = nn.Dropout(self.dropout)
        self.nothing = nn.Parameter(0.1 * torch.randn(self.hidden))
        self.nothing_score = nn.Parameter(torch.zeros(self.hidden))
        self.head = nn.Linear(self.hidden, self.out_dim)

    def get_config(self) -> dict[str, Any]:
        return {
            "out_dim": self.out_dim,
            "hidden": self.hidden,
            "gate": self.gate,
            "dropout": self.dropout,
        }

    def gates(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (n, 1 + M, hidden) normalised weights and values, "nothing" slot first.

        Weights sum to 1 over the slot axis; a missing modality's weight is exactly 0.
        """
        xs, present = gather(self, embeddings, masks)
        n, dtype = present.shape[0], xs[0].dtype
        values = [self.nothing.to(dtype).expand(n, self.hidden)]
        scores = [self.nothing_score.to(dtype).expand(n, self.hidden)]
        for x, proj, score in zip(xs, self.proj, self.score, strict=True):
            h = self.drop(torch.tanh(proj(x)))
            values.append(h)
            scores.append(score(h))
        v = torch.stack(values, dim=1)
        s = torch.stack(scores, dim=1)
        slot = torch.ones(n, 1, dtype=torch.bool, device=present.device)
        keep = torch.cat([slot, present], dim=1)[:, :, None]
        if self.gate == "sigmoid":
            g = torch.where(keep, torch.sigmoid(s), torch.zeros((), dtype=dtype, device=s.device))
            # the slot's gate is > 0; the clamp only guards against its underflow
            weights = g / g.sum(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        else:
            weights = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=1)
        return weights, v

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        weights, values = self.gates(embeddings, masks)
        return self.head((weights * values).sum(dim=1))
