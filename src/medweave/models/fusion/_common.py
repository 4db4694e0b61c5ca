"""Helpers shared by the fusion strategies: option checks, MLPs, masked gathering."""

from __future__ import annotations

import torch
from torch import nn

from medweave.errors import InputError
from medweave.models.fusion._base import Fusion

__all__ = ["check_in_dims", "check_int", "check_rate", "gather", "mlp"]


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
