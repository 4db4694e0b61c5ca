"""``passthrough``: precomputed embeddings used as they are, or linearly projected.

For a modality whose features already are an embedding (a foundation model's output, a
cached image embedding): the identity when ``out_dim`` equals the number of features,
otherwise one linear projection to ``out_dim``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medweave.models.encoders._base import ENCODERS, Encoder, InputSpec
from medweave.models.encoders.tabular import check_flat, check_positive

__all__ = ["PassthroughEncoder"]


@ENCODERS.register(
    "passthrough",
    description="precomputed embeddings: identity, or one linear projection to out_dim",
)
class PassthroughEncoder(Encoder):
    """Identity if ``out_dim == n_features``, else ``nn.Linear(n_features, out_dim)``."""

    input_kinds: ClassVar[tuple[str, ...]] = ("embedding", "tabular", "exposure", "omics")

    def __init__(self, spec: InputSpec, *, out_dim: int = 64) -> None:
        Encoder.__init__(self, spec, out_dim=check_positive(out_dim, key="out_dim"))
        self.n_features = check_flat("passthrough", spec)
        self.proj: nn.Module = (
            nn.Identity()
            if self.out_dim == self.n_features
            else nn.Linear(self.n_features, self.out_dim)
        )

    @property
    def is_identity(self) -> bool:
        return isinstance(self.proj, nn.Identity)

    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-able."""
        return {"out_dim": self.out_dim}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(x)
        return out
