"""Early fusion: the (passthrough) embeddings concatenated into one network.

Each patient's input is ``[x_1 | ... | x_M | indicators]``, where ``x_m`` is the modality's
embedding when the patient has it and a learned per-modality "missing" vector when not, and
the indicators are the presence mask as 0/1 features. Missing blocks are therefore never
zeros pretending to be data: the network sees a learned placeholder *and* is told that the
block is missing. A patient with no modality at all gets the MLP of the placeholders with
all indicators 0, a learned "nothing observed" state.

This module also holds the small helpers shared by the other strategies of this package
(argument checks, the MLP builder, and :func:`gather`, which validates a batch and sets the
rows of missing modalities aside).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medweave.models.fusion._base import FUSIONS, Fusion
from medweave.models.fusion._common import check_in_dims, check_int, check_rate, gather, mlp

__all__ = ["EarlyFusion"]

# -- early fusion -----------------------------------------------------------------------


@FUSIONS.register(
    "early",
    description="concatenated embeddings, learned missing vectors and presence indicators, MLP",
)
class EarlyFusion(Fusion):
    """Concatenate the modalities' embeddings, with learned fill-ins and indicators, into an MLP.

    Options: ``hidden`` (MLP width), ``layers`` (number of linear layers, >= 1), ``dropout``.
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        out_dim: int = 64,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        check_in_dims(in_dims)
        Fusion.__init__(self, in_dims, out_dim=check_int("out_dim", out_dim))
        self.hidden = check_int("hidden", hidden)
        self.layers = check_int("layers", layers)
        self.dropout = check_rate("dropout", dropout)
        self.missing = nn.ParameterList(
            [nn.Parameter(0.1 * torch.randn(d)) for d in self.in_dims.values()]
        )
        width = sum(self.in_dims.values()) + len(self.modalities)
        self.net = mlp(
            width, self.out_dim, hidden=self.hidden, layers=self.layers, dropout=self.dropout
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "out_dim": self.out_dim,
            "hidden": self.hidden,
            "layers": self.layers,
            "dropout": self.dropout,
        }

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        xs, present = gather(self, embeddings, masks)
        blocks = [
            torch.where(present[:, j, None], x, fill.to(x.dtype))
            for j, (x, fill) in enumerate(zip(xs, self.missing, strict=True))
        ]
        blocks.append(present.to(xs[0].dtype))
        return self.net(torch.cat(blocks, dim=1))
