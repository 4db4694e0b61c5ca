"""The encoder contract: one modality's batch in, an (n, out_dim) embedding out.

Every encoder is an ``nn.Module`` registered by name whose constructor takes the
modality's :class:`InputSpec` first and keyword-only options after it (``out_dim`` always
among them), and which declares ``out_dim``. ``forward`` receives the batch of that
modality for *all* patients of the batch, including those who lack it; their rows are
placeholders (finite values) the encoder may compute on, but the fusion ignores them
through the presence mask. Encoders must therefore never produce NaN or Inf for any row.

Batches by kind:

* ``tabular`` / ``omics`` / ``exposure`` / ``embedding``: float tensor (n, n_features),
  already preprocessed (imputed, scaled) by the fold-fitted preprocessing;
* ``image``: float tensor (n, channels, *spatial);
* ``sequence``: dict with ``codes`` (n, L) long (0 = padding), ``values`` (n, L) float,
  ``days`` (n, L) float (days before the index date), ``mask`` (n, L) bool.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from medweave.models._registry import Registry

__all__ = ["ENCODERS", "Encoder", "InputSpec", "build_encoder"]

InputKind = Literal["tabular", "omics", "exposure", "embedding", "image", "sequence"]


@dataclass(frozen=True)
class InputSpec:
    """What an encoder is told about its modality's input."""

    kind: InputKind
    shape: tuple[int, ...]  # per patient: (n_features,), (channels, *spatial) or (max_len,)
    vocab_size: int = 0  # sequence encoders: number of codes + 1 (0 = padding)
    feature_groups: dict[str, list[int]] = field(default_factory=dict)  # e.g. gene sets


class Encoder(nn.Module, metaclass=abc.ABCMeta):
    """Base class: subclasses set ``self.out_dim`` in their constructor."""

    out_dim: int

    def __init__(self, spec: InputSpec, *, out_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.out_dim = int(out_dim)

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments (JSON-able), to rebuild it from a bundle."""


#: name -> encoder class
ENCODERS: Registry[type[Encoder]] = Registry("encoder")


def build_encoder(name: str, spec: InputSpec, **params: Any) -> Encoder:
    """Instantiate the encoder registered as ``name`` for ``spec``."""
    return ENCODERS.get(name)(spec, **params)
