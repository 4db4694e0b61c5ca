"""Cross-modal attention: one token per modality, a [CLS] token, a Transformer encoder.

Each modality's embedding is projected to a token of width ``d_model`` and a learned
modality-type embedding is added. A learned [CLS] token is prepended and the sequence goes
through an ``nn.TransformerEncoder`` (pre-norm, GELU) with ``src_key_padding_mask = ~mask``:
a missing modality's token is a padding position, so no token (the [CLS] included) attends
to it in any layer, and its content has no effect on the output. The [CLS] position is
never masked, so a patient with no modality gets the encoder applied to the [CLS] token
alone: the learned "nothing observed" state. The output is the final [CLS] state projected
to ``out_dim``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medweave.errors import InputError
from medweave.models.fusion._base import FUSIONS, Fusion
from medweave.models.fusion._common import check_in_dims, check_int, check_rate, gather

__all__ = ["AttentionFusion"]


@FUSIONS.register(
    "attention",
    description="modality tokens + [CLS] through a Transformer encoder, missing ones masked out",
)
class AttentionFusion(Fusion):
    """Cross-modal self-attention over modality tokens, read out at a [CLS] token.

    Options: ``d_model`` (token width, divisible by ``heads``), ``heads``, ``layers``
    (encoder layers), ``ff_dim`` (feed-forward width; default ``2 * d_model``), ``dropout``.
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        out_dim: int = 64,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 2,
        ff_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        check_in_dims(in_dims)
        Fusion.__init__(self, in_dims, out_dim=check_int("out_dim", out_dim))
        self.d_model = check_int("d_model", d_model)
        self.heads = check_int("heads", heads)
        if self.d_model % self.heads:
            raise InputError(
                f"fusion option d_model={d_model} is not divisible by heads={heads}; "
                "choose d_model as a multiple of heads"
            )
        self.layers = check_int("layers", layers)
        self.ff_dim = 2 * self.d_model if ff_dim is None else check_int("ff_dim", ff_dim)
        self.dropout = check_rate("dropout", dropout)
        self.proj = nn.ModuleList([nn.Linear(d, self.d_model) for d in self.in_dims.values()])
        self.type_embedding = nn.Parameter(0.02 * torch.randn(len(self.modalities), self.d_model))
        self.cls = nn.Parameter(0.02 * torch.randn(self.d_model))
        layer = nn.TransformerEncoderLayer(
            self.d_model,
            self.heads,
            dim_feedforward=self.ff_dim,
            dropout=self.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer,
            self.layers,
            norm=nn.LayerNorm(self.d_model),
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(self.d_model, self.out_dim)

    def get_config(self) -> dict[str, Any]:
        return {
            "out_dim": self.out_dim,
            "d_model": self.d_model,
            "heads": self.heads,
            "layers": self.layers,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
        }

    def tokens(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (n, 1 + M, d_model) sequence ([CLS] first) and its (n, 1 + M) padding mask.

        The padding mask is True where a position must be ignored: the tokens of missing
        modalities. The [CLS] column is always False.
        """
        xs, present = gather(self, embeddings, masks)
        n = present.shape[0]
        toks = [self.cls.to(xs[0].dtype).expand(n, 1, self.d_model)]
        for j, (x, proj) in enumerate(zip(xs, self.proj, strict=True)):
            toks.append((proj(x) + self.type_embedding[j]).unsqueeze(1))
        cls_col = torch.zeros(n, 1, dtype=torch.bool, device=present.device)
        return torch.cat(toks, dim=1), torch.cat([cls_col, ~present], dim=1)

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        seq, padding = self.tokens(embeddings, masks)
        encoded = self.encoder(seq, src_key_padding_mask=padding)
        return self.head(encoded[:, 0])
