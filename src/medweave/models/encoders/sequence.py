"""``gru`` and ``transformer``: encoders of a patient's event sequence before the index date.

The batch is a dict (see :mod:`medweave.models.encoders._base`): ``codes`` (n, L) long with
0 for padding, ``values`` (n, L) float, ``days`` (n, L) float days before the index date and
``mask`` (n, L) bool, True for a real event. Each event becomes one token: the code's
embedding plus a linear map of its value (``value_transform="symlog"``: sign(v) log(1 + |v|),
robust to raw units) and time features of ``days`` (log-scaled recency and sine/cosine
over 1 month, 1 year and 10 years). Positions whose mask is False are never read: their
code, value and day may hold anything (changing them does not change the output), and a
patient with no event gets a learned "no history" embedding, finite like every other row.

* ``gru``: the events ordered oldest first (by ``days``, so the input order does not
  matter), run through a GRU as a packed sequence, the final hidden state projected.
* ``transformer``: a learned summary token and the events through a TransformerEncoder
  with a key padding mask (the summary token is never masked, so the attention is defined
  for a patient without events); the summary token's output is projected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from medweave.errors import InputError
from medweave.models.encoders._base import ENCODERS, Encoder, InputSpec
from medweave.models.encoders.tabular import check_dropout, check_kind, check_positive

__all__ = ["EventEmbedding", "GRUEncoder", "SequenceTransformerEncoder", "unpack_sequence_batch"]

_PERIODS_DAYS = (30.0, 365.0, 3650.0)
_VALUE_TRANSFORMS = ("symlog", "none")
_KEYS = ("codes", "values", "days", "mask")


def unpack_sequence_batch(
    batch: Mapping[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``codes, values, days, mask`` of a sequence batch, checked, padding neutralised.

    At positions where ``mask`` is False the code becomes 0 and value and day 0, so nothing
    downstream depends on what the padding held; non-finite values and days become 0.
    """
    if not isinstance(batch, Mapping):
        raise InputError(
            f"sequence encoders take a dict with keys {', '.join(_KEYS)}, "
            f"got {type(batch).__name__}"
        )
    missing = [k for k in _KEYS if k not in batch]
    if missing:
        raise InputError(
            f"sequence batch lacks key(s) {', '.join(missing)}; need {', '.join(_KEYS)}"
        )
    codes, values, days, mask = (batch[k] for k in _KEYS)
    if codes.dim() != 2 or any(t.shape != codes.shape for t in (values, days, mask)):
        raise InputError(
            "sequence batch: codes, values, days and mask must all be (n, L); got "
            + ", ".join(f"{k} {tuple(batch[k].shape)}" for k in _KEYS)
        )
    mask = mask.bool()
    codes = torch.where(mask, codes.long(), torch.zeros_like(codes, dtype=torch.long))
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    values = torch.where(mask, torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), zero)
    zero_d = torch.zeros((), dtype=days.dtype, device=days.device)
    days = torch.where(mask, torch.nan_to_num(days, nan=0.0, posinf=0.0, neginf=0.0), zero_d)
    return codes, values.float(), days.float(), mask


class EventEmbedding(nn.Module):
    """One token per event: code embedding + linear(value and time features)."""

    n_time_features = 1 + 2 * len(_PERIODS_DAYS)
    omega: torch.Tensor

    def __init__(self, vocab_size: int, dim: int, *, value_transform: str, dropout: float) -> None:
        super().__init__()
        if value_transform not in _VALUE_TRANSFORMS:
            raise InputError(
                f"unknown value_transform {value_transform!r}; use one of "
                f"{', '.join(_VALUE_TRANSFORMS)}"
            )
        self.value_transform = value_transform
        self.code = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.features = nn.Linear(1 + self.n_time_features, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.register_buffer(
            "omega", torch.tensor([2 * math.pi / p for p in _PERIODS_DAYS], dtype=torch.float32)
        )

    def forward(
        self, codes: torch.Tensor, values: torch.Tensor, days: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        if self.value_transform == "symlog":
            values = torch.sign(values) * torch.log1p(values.abs())
        recency = torch.log1p(days.clamp(min=0.0)) / math.log1p(3650.0)
        phase = days.unsqueeze(-1) * self.omega
        feats = torch.cat(
            [values.unsqueeze(-1), recency.unsqueeze(-1), torch.sin(phase), torch.cos(phase)], -1
        )
        tokens = self.drop(self.norm(self.code(codes) + self.features(feats)))
        return torch.where(mask.unsqueeze(-1), tokens, torch.zeros_like(tokens))


def _check_spec(name: str, spec: InputSpec) -> int:
    check_kind(name, spec, ("sequence",))
    if len(spec.shape) != 1 or spec.shape[0] < 1:
        raise InputError(
            f"encoder {name!r}: sequence input shape must be (max_len,), got {tuple(spec.shape)}"
        )
    if spec.vocab_size < 2:
        raise InputError(
            f"encoder {name!r}: vocab_size must be the number of codes + 1 (0 = padding), "
            f"at least 2; got {spec.vocab_size}"
        )
    return int(spec.vocab_size)


@ENCODERS.register("gru", description="GRU over the event sequence (packed, oldest event first)")
class GRUEncoder(Encoder):
    """Event tokens of ``embed_dim`` through a ``num_layers`` GRU of ``hidden_size``."""

    input_kinds: ClassVar[tuple[str, ...]] = ("sequence",)

    def __init__(
        self,
        spec: InputSpec,
        *,
        out_dim: int = 64,
        embed_dim: int = 32,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.1,
        value_transform: str = "symlog",
    ) -> None:
        Encoder.__init__(self, spec, out_dim=check_positive(out_dim, key="out_dim"))
        vocab = _check_spec("gru", spec)
        self.embed_dim = check_positive(embed_dim, key="embed_dim")
        self.hidden_size = check_positive(hidden_size, key="hidden_size")
        self.num_layers = check_positive(num_layers, key="num_layers")
        self.bidirectional = bool(bidirectional)
        self.dropout = check_dropout(dropout)
        self.value_transform = value_transform
        self.embed = EventEmbedding(
            vocab, self.embed_dim, value_transform=value_transform, dropout=self.dropout
        )
        self.gru = nn.GRU(
            self.embed_dim,
            self.hidden_size,
            num_layers=self.num_layers,
            batch_first=True,
            bidirectional=self.bidirectional,
            dropout=self.dropout if self.num_layers > 1 else 0.0,
        )
        width = self.hidden_size * (2 if self.bidirectional else 1)
        self.empty = nn.Parameter(torch.randn(width) * 0.02)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, self.out_dim))

    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-able."""
        return {
            "out_dim": self.out_dim,
            "embed_dim": self.embed_dim,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout,
            "value_transform": self.value_transform,
        }

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        codes, values, days, mask = unpack_sequence_batch(batch)
        n, length = codes.shape
        lengths = mask.sum(dim=1)
        if length == 0:
            state = self.empty.unsqueeze(0).expand(n, -1)
            out: torch.Tensor = self.head(state)
            return out
        # real events oldest first (largest days before index), padding last
        key = torch.where(mask, -days, torch.full_like(days, math.inf))
        order = torch.argsort(key, dim=1, stable=True)
        codes, values, days, mask = (t.gather(1, order) for t in (codes, values, days, mask))
        tokens = self.embed(codes, values, days, mask)
        packed = pack_padded_sequence(
            tokens, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, h = self.gru(packed)  # (layers * directions, n, hidden)
        dirs = 2 if self.bidirectional else 1
        last = h[-dirs:].transpose(0, 1).reshape(n, -1)
        state = torch.where((lengths > 0).unsqueeze(1), last, self.empty.expand(n, -1))
        out = self.head(state)
        return out


@ENCODERS.register(
    "transformer",
    description="Transformer encoder over the event sequence (key padding mask, summary token)",
)
class SequenceTransformerEncoder(Encoder):
    """``n_layers`` pre-norm Transformer layers of width ``d_model`` and ``n_heads`` heads."""

    input_kinds: ClassVar[tuple[str, ...]] = ("sequence",)

    def __init__(
        self,
        spec: InputSpec,
        *,
        out_dim: int = 64,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        ff_dim: int = 128,
        dropout: float = 0.1,
        value_transform: str = "symlog",
    ) -> None:
        Encoder.__init__(self, spec, out_dim=check_positive(out_dim, key="out_dim"))
        vocab = _check_spec("transformer", spec)
        self.d_model = check_positive(d_model, key="d_model")
        self.n_heads = check_positive(n_heads, key="n_heads")
        if self.d_model % self.n_heads:
            raise InputError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_layers = check_positive(n_layers, key="n_layers")
        self.ff_dim = check_positive(ff_dim, key="ff_dim")
        self.dropout = check_dropout(dropout)
        self.value_transform = value_transform
        self.embed = EventEmbedding(
            vocab, self.d_model, value_transform=value_transform, dropout=self.dropout
        )
        self.summary = nn.Parameter(torch.randn(self.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            self.d_model,
            self.n_heads,
            dim_feedforward=self.ff_dim,
            dropout=self.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, self.n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(self.d_model), nn.Linear(self.d_model, self.out_dim))

    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-able."""
        return {
            "out_dim": self.out_dim,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "n_layers": self.n_layers,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "value_transform": self.value_transform,
        }

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        codes, values, days, mask = unpack_sequence_batch(batch)
        n = codes.shape[0]
        tokens = self.embed(codes, values, days, mask)
        tokens = torch.cat([self.summary.expand(n, 1, -1), tokens], dim=1)
        padding = torch.cat([torch.zeros(n, 1, dtype=torch.bool, device=mask.device), ~mask], 1)
        h = self.encoder(tokens, src_key_padding_mask=padding)
        out: torch.Tensor = self.head(h[:, 0])
        return out
