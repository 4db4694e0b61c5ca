"""The fusion contract: per-modality embeddings and presence masks in, one vector out.

A fusion is an ``nn.Module`` registered by name; its constructor takes ``in_dims``
(modality -> embedding size) and keyword-only options (``out_dim`` always among them).
``forward(embeddings, masks)`` takes ``dict[modality, (n, d_m)]`` float tensors and
``dict[modality, (n,)]`` bool tensors (True = the patient has the modality) and returns
``(n, out_dim)``. A missing modality is a normal state, never an exception, and never a
zero vector pretending to be data: rows whose mask is False must not influence the output
(changing them must not change it), and a patient with no modality at all still gets a
finite output (a learned "nothing observed" state).
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from medweave.models._registry import Registry

__all__ = ["FUSIONS", "Fusion", "build_fusion"]


class Fusion(nn.Module, metaclass=abc.ABCMeta):
    """Base class: subclasses set up their layers; ``out_dim`` is declared here."""

    out_dim: int

    def __init__(self, in_dims: dict[str, int], *, out_dim: int) -> None:
        super().__init__()
        self.in_dims = dict(in_dims)
        self.modalities = list(in_dims)
        self.out_dim = int(out_dim)

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """The keyword options (JSON-able, with ``out_dim``): ``cls(in_dims, **config)``."""

    @abc.abstractmethod
    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """(n, out_dim) from per-modality embeddings and presence masks."""


#: name -> fusion class
FUSIONS: Registry[type[Fusion]] = Registry("fusion")


def build_fusion(name: str, in_dims: dict[str, int], **params: Any) -> Fusion:
    """Instantiate the fusion registered as ``name``."""
    return FUSIONS.get(name)(in_dims, **params)
