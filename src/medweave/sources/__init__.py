"""Readers, one per format, registered by name (see ``medweave list``)."""

from __future__ import annotations

from medweave.sources._base import ReadContext, Reader, SourceSpec, available, get, register

__all__ = ["ReadContext", "Reader", "SourceSpec", "available", "get", "register"]

# Importing the built-in readers registers them.
from medweave.sources import exposures as _exposures  # noqa: E402, F401
from medweave.sources import omics as _omics  # noqa: E402, F401
from medweave.sources import tables as _tables  # noqa: E402, F401
