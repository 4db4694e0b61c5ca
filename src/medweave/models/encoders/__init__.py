"""Modality encoders, registered by name (see ``medweave list``)."""

from __future__ import annotations

from medweave.models.encoders._base import ENCODERS, Encoder, InputSpec, build_encoder

__all__ = ["ENCODERS", "Encoder", "InputSpec", "build_encoder"]
