"""Transformers fitted inside each training fold (never on the patients they evaluate)."""

from __future__ import annotations

from medweave.preprocess.omics import OmicsTransformer

__all__ = ["OmicsTransformer"]
