"""Readers, one per format, registered by name (see ``medweave list``)."""

from __future__ import annotations

from medweave.sources._base import ReadContext, Reader, SourceSpec, available, get, register

__all__ = ["ReadContext", "Reader", "SourceSpec", "available", "get", "register"]
