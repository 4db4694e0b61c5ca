"""Readers, one per format, registered by name (see ``medweave list``)."""

from __future__ import annotations

# Importing the built-in readers registers them.
from medweave.sources import exposures, fhir, imaging, omics, omop, tables  # noqa: F401
from medweave.sources._base import ReadContext, Reader, SourceSpec, available, get, register

__all__ = ["ReadContext", "Reader", "SourceSpec", "available", "get", "register"]
