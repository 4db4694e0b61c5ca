"""Intermediate concatenation: per-modality projections, masked, concatenated, MLP.

Each modality's embedding is projected to ``proj_dim`` (linear + GELU). For a patient who
lacks the modality the projection is replaced by a learned "missing" token of the same
width, and the presence mask is appended as 0/1 indicator features, so a missing block is
neither zeros nor indistinguishable from an observation. The concatenation goes through an
MLP to ``out_dim``; a patient with no modality gets the MLP of the missing tokens with all
indicators 0 (the learned "nothing observed" state).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medweave.models.fusion._base import FUSIONS, Fusion
from medweave.models.fusion._common import check_in_dims, check_int, check_rate, gather, mlp

__all__ = ["ConcatFusion"]


@FUSIONS.register(
    "concat",
    description="per-modality projections, learned missing tokens and indicators, concatenated",
)
class ConcatFusion(Fusion):
    """Intermediate fusion by concatenation of projected modalities.

    Options: ``proj_dim`` (width of each modality's projection), ``hidden`` (MLP width),
    ``layers`` (linear layers of the MLP, >= 1), ``dropout``.
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        out_dim: int = 64,
        proj_dim: int = 32,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        check_in_dims(in_dims)
        Fusion.__init__(self, in_dims, out_dim=check_int("out_dim", out_dim))
        self.proj_dim = check_int("proj_dim", proj_dim)
        self.hidden = check_int("hidden", hidden)
        self.layers = check_int("layers", layers)
        self.dropout = check_rate("dropout", dropout)
        self.proj = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(d, self.proj_dim), nn.GELU(), nn.Dropout(self.dropout))
                for d in self.in_dims.values()
            ]
        )
        self.missing = nn.ParameterList(
            [nn.Parameter(0.1 * torch.randn(self.proj_dim)) for _ in self.modalities]
        )
        width = len(self.modalities) * (self.proj_dim + 1)
        self.net = mlp(
            width, self.out_dim, hidden=self.hidden, layers=self.layers, dropout=self.dropout
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "out_dim": self.out_dim,
            "proj_dim": self.proj_dim,
            "hidden": self.hidden,
            "layers": self.layers,
            "dropout": self.dropout,
        }

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        xs, present = gather(self, embeddings, masks)
        blocks = []
        for j, (x, proj, fill) in enumerate(zip(xs, self.proj, self.missing, strict=True)):
            blocks.append(torch.where(present[:, j, None], proj(x), fill.to(x.dtype)))
        blocks.append(present.to(xs[0].dtype))
        return self.net(torch.cat(blocks, dim=1))
