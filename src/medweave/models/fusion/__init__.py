"""Fusion strategies, registered by name (see ``medweave list``)."""

from __future__ import annotations

from medweave.models.fusion._base import FUSIONS, Fusion, build_fusion

__all__ = ["FUSIONS", "Fusion", "build_fusion"]
