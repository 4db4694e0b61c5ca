"""Late fusion: one head per modality, combined with learned weights over present ones.

Each modality ``m`` has its own head (an MLP from its embedding to ``out_dim``): a
prediction-level representation made from that modality alone. The heads are combined
with learned modality weights ``w = softmax(a)`` taken over the modalities the patient
*has*: ``out = sum_{m present} exp(a_m) head_m(x_m) / sum_{m present} exp(a_m)``. A missing
modality has weight exactly 0 and its head is never evaluated on its row; the weights are
renormalised per patient, so a patient with one modality gets exactly that head's output.
A patient with no modality gets a learned "nothing observed" vector.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medweave.models.fusion._base import FUSIONS, Fusion
from medweave.models.fusion._common import check_in_dims, check_int, check_rate, gather, mlp

__all__ = ["LateFusion"]


@FUSIONS.register(
    "late",
    description="one head per modality, softmax-weighted over the modalities present",
)
class LateFusion(Fusion):
    """Per-modality heads averaged with learned weights renormalised over present modalities.

    Options: ``hidden`` (head width), ``layers`` (linear layers per head, >= 1), ``dropout``.
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        out_dim: int = 64,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        check_in_dims(in_dims)
        Fusion.__init__(self, in_dims, out_dim=check_int("out_dim", out_dim))
        self.hidden = check_int("hidden", hidden)
        self.layers = check_int("layers", layers)
        self.dropout = check_rate("dropout", dropout)
        self.heads = nn.ModuleList(
            [
                mlp(d, self.out_dim, hidden=self.hidden, layers=self.layers, dropout=self.dropout)
                for d in self.in_dims.values()
            ]
        )
        self.logits: torch.Tensor
        if len(self.modalities) > 1:
            self.logits = nn.Parameter(torch.zeros(len(self.modalities)))
        else:  # a single modality always has weight 1: nothing to learn
            self.register_buffer("logits", torch.zeros(1))
        self.nothing = nn.Parameter(0.1 * torch.randn(self.out_dim))

    def get_config(self) -> dict[str, Any]:
        return {
            "out_dim": self.out_dim,
            "hidden": self.hidden,
            "layers": self.layers,
            "dropout": self.dropout,
        }

    def modality_weights(self, present: torch.Tensor) -> torch.Tensor:
        """(n, M) weights: softmax of the logits over each row's present modalities.

        ``present`` is the (n, M) bool presence matrix (columns in ``self.modalities``
        order). Missing modalities get exactly 0; a row with nothing present gets all 0.
        """
        scores = torch.exp(self.logits - self.logits.max().detach())  # finite, > 0
        weights = scores * present.to(scores.dtype)
        total = weights.sum(dim=1, keepdim=True)
        return weights / torch.where(total > 0, total, torch.ones_like(total))

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        xs, present = gather(self, embeddings, masks)
        weights = self.modality_weights(present).to(xs[0].dtype)
        out = torch.zeros(xs[0].shape[0], self.out_dim, dtype=xs[0].dtype, device=xs[0].device)
        for j, (x, head) in enumerate(zip(xs, self.heads, strict=True)):
            # a missing row's head output is multiplied by an exact 0 weight; `gather` has
            # already replaced its input, so nothing of it (not even NaN) comes through
            out = out + weights[:, j, None] * head(x)
        nothing = ~present.any(dim=1, keepdim=True)
        return torch.where(nothing, self.nothing.to(out.dtype), out)
