"""``mlp``: a multilayer perceptron over preprocessed numeric features.

The fold-fitted preprocessing has already imputed the features, added missing-value
indicator columns and scaled them, so the encoder sees a dense float matrix. Normalisation
is LayerNorm (per row), which behaves the same for a batch of one as for a batch of many
and makes every row's output independent of the other rows. Integer-coded categorical
columns can be embedded (``categorical={column: cardinality}``) instead of read as numbers;
a value that is not one of ``0 .. cardinality - 1`` (out of range, fractional after
imputation, or not finite) maps to a shared "unknown" embedding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from medweave.errors import InputError
from medweave.models.encoders._base import ENCODERS, Encoder, InputSpec

__all__ = ["FLAT_KINDS", "MLPEncoder", "check_kind", "make_activation", "mlp_stack"]

#: input kinds whose batch is a float matrix (n, n_features)
FLAT_KINDS: tuple[str, ...] = ("tabular", "exposure", "omics", "embedding")

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
_NORMS = ("layer", "none")


def check_kind(name: str, spec: InputSpec, kinds: Sequence[str]) -> None:
    """Raise :class:`InputError` unless ``spec.kind`` is one of ``kinds``."""
    if spec.kind not in kinds:
        raise InputError(
            f"encoder {name!r} takes {', '.join(kinds)} inputs, not {spec.kind!r}; "
            "choose another encoder for this modality"
        )


def check_flat(name: str, spec: InputSpec) -> int:
    """The number of features of a flat input spec (kind and shape checked)."""
    check_kind(name, spec, FLAT_KINDS)
    if len(spec.shape) != 1 or spec.shape[0] < 1:
        raise InputError(
            f"encoder {name!r}: {spec.kind} input shape must be (n_features,) with "
            f"n_features >= 1, got {tuple(spec.shape)}"
        )
    return int(spec.shape[0])


def make_activation(name: str) -> nn.Module:
    """``gelu``, ``relu`` or ``silu``."""
    if name not in _ACTIVATIONS:
        raise InputError(f"unknown activation {name!r}; use one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def check_dropout(value: float, *, key: str = "dropout") -> float:
    if not 0.0 <= float(value) < 1.0:
        raise InputError(f"{key} must be in [0, 1), got {value}")
    return float(value)


def check_positive(value: int, *, key: str) -> int:
    if int(value) != value or int(value) < 1:
        raise InputError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


def mlp_stack(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    *,
    dropout: float,
    activation: str,
    norm: str,
) -> nn.Sequential:
    """Linear -> LayerNorm -> activation -> dropout per hidden size, then a linear output."""
    if norm not in _NORMS:
        raise InputError(f"unknown norm {norm!r}; use one of {', '.join(_NORMS)}")
    layers: list[nn.Module] = []
    width = in_dim
    for i, h in enumerate(hidden):
        h = check_positive(h, key=f"hidden[{i}]")
        layers.append(nn.Linear(width, h))
        if norm == "layer":
            layers.append(nn.LayerNorm(h))
        layers.append(make_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def _categorical(value: Mapping[int | str, int] | None, n_features: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for key, card in (value or {}).items():
        try:
            col = int(key)
        except (TypeError, ValueError):
            raise InputError(f"categorical: column {key!r} is not an integer index") from None
        if not 0 <= col < n_features:
            raise InputError(
                f"categorical: column {col} is outside the {n_features} input features"
            )
        if int(card) != card or int(card) < 1:
            raise InputError(f"categorical: column {col} has cardinality {card!r}; need >= 1")
        out[col] = int(card)
    return dict(sorted(out.items()))


@ENCODERS.register("mlp", description="MLP over preprocessed numeric features (tabular, exposure)")
class MLPEncoder(Encoder):
    """A LayerNorm MLP, with optional embeddings for integer-coded categorical columns.

    ``hidden`` are the hidden layer sizes (empty: a single linear layer), ``dropout`` the
    dropout after each hidden layer, ``activation`` ``gelu``/``relu``/``silu``, ``norm``
    ``layer`` or ``none``. ``categorical`` maps a column index to its number of categories;
    each such column is embedded in ``embedding_dim`` dimensions (default
    ``min(16, (cardinality + 1) // 2 + 1)``) and concatenated to the numeric columns.
    """

    input_kinds: ClassVar[tuple[str, ...]] = ("tabular", "exposure", "omics", "embedding")
    numeric_index: torch.Tensor

    def __init__(
        self,
        spec: InputSpec,
        *,
        out_dim: int = 64,
        hidden: Sequence[int] = (64,),
        dropout: float = 0.1,
        activation: str = "gelu",
        norm: str = "layer",
        categorical: Mapping[int | str, int] | None = None,
        embedding_dim: int | None = None,
    ) -> None:
        Encoder.__init__(self, spec, out_dim=check_positive(out_dim, key="out_dim"))
        n_features = check_flat("mlp", spec)
        self.hidden = [int(h) for h in hidden]
        self.dropout = check_dropout(dropout)
        self.activation = activation
        self.norm = norm
        self.categorical = _categorical(categorical, n_features)
        self.embedding_dim = (
            None if embedding_dim is None else check_positive(embedding_dim, key="embedding_dim")
        )
        numeric = [c for c in range(n_features) if c not in self.categorical]
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long))
        self.embeddings = nn.ModuleList()
        width = len(numeric)
        for card in self.categorical.values():
            dim = self.embedding_dim or min(16, (card + 1) // 2 + 1)
            # index ``card`` is the shared "unknown" category
            self.embeddings.append(nn.Embedding(card + 1, dim))
            width += dim
        self.net = mlp_stack(
            width,
            self.hidden,
            self.out_dim,
            dropout=self.dropout,
            activation=activation,
            norm=norm,
        )

    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-able (column keys as strings)."""
        return {
            "out_dim": self.out_dim,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "activation": self.activation,
            "norm": self.norm,
            "categorical": {str(k): v for k, v in self.categorical.items()},
            "embedding_dim": self.embedding_dim,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x.index_select(1, self.numeric_index)]
        for (column, card), emb in zip(self.categorical.items(), self.embeddings, strict=True):
            col = x[:, column]
            code = torch.round(torch.nan_to_num(col, nan=-1.0, posinf=-1.0, neginf=-1.0))
            valid = (code == col) & (code >= 0) & (code < card)
            idx = torch.where(valid, code, torch.full_like(code, card)).long()
            parts.append(emb(idx))
        h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        out: torch.Tensor = self.net(h)
        return out
