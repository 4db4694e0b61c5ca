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

from medweave.errors import InputError
from medweave.models.fusion._base import FUSIONS, Fusion

__all__ = ["EarlyFusion"]


# -- shared helpers ---------------------------------------------------------------------


def check_in_dims(in_dims: dict[str, int]) -> None:
    """Raise :class:`InputError` unless ``in_dims`` maps modality names to positive sizes."""
    if not isinstance(in_dims, dict) or not in_dims:
        raise InputError(
            "fusion: in_dims must be a non-empty dict of modality -> embedding size, "
            f"got {in_dims!r}"
        )
    for name, dim in in_dims.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"fusion: modality names must be non-empty strings, got {name!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InputError(f"fusion: in_dims[{name!r}] = {dim!r}; expected a positive integer")


def check_int(option: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int, or :class:`InputError` naming the fusion option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"fusion option {option}={value!r}; expected an integer >= {minimum}")
    return int(value)


def check_rate(option: str, value: object) -> float:
    """``value`` as a float in [0, 1), or :class:`InputError` naming the fusion option."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise InputError(f"fusion option {option}={value!r}; expected a number in [0, 1)")
    return float(value)


def mlp(in_dim: int, out_dim: int, *, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """``layers`` linear layers (GELU and dropout between them), ``in_dim`` -> ``out_dim``."""
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        modules += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


def gather(
    fusion: Fusion, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Validate a batch; return the embeddings in modality order and the (n, M) presence.

    The rows of missing modalities are replaced by zeros *before any computation*, so that
    their content (anything, even NaN) cannot reach the output or the gradients. These
    zeros are a placeholder that every strategy then replaces (learned missing vector) or
    excludes (gate 0, attention padding); they are never used as an observation.
    """
    xs: list[torch.Tensor] = []
    present: list[torch.Tensor] = []
    n: int | None = None
    for name in fusion.modalities:
        if name not in embeddings or name not in masks:
            raise ValueError(
                f"fusion expects modalities {fusion.modalities}; got embeddings for "
                f"{sorted(embeddings)} and masks for {sorted(masks)}"
            )
        x, mask = embeddings[name], masks[name]
        if n is None:
            n = x.shape[0]
        if x.dim() != 2 or x.shape != (n, fusion.in_dims[name]):
            raise ValueError(
                f"fusion: embeddings[{name!r}] has shape {tuple(x.shape)}; expected "
                f"({n}, {fusion.in_dims[name]})"
            )
        if mask.shape != (n,):
            raise ValueError(
                f"fusion: masks[{name!r}] has shape {tuple(mask.shape)}; expected ({n},)"
            )
        mask = mask.to(device=x.device, dtype=torch.bool)
        xs.append(torch.where(mask[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device)))
        present.append(mask)
    return xs, torch.stack(present, dim=1)


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
