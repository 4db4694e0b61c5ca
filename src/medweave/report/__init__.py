"""The one-page HTML report of a study, read from its results.json.

:func:`render` writes a self-contained ``report.html`` (inline CSS and SVG, no scripts,
nothing fetched from the network); :func:`validate_results` checks a results dict
against the schema 1.0 contract that :func:`load_schema` returns.
"""

from __future__ import annotations

from medweave.report._render import render
from medweave.report._schema import SCHEMA_VERSION, load_schema, validate_results

__all__ = ["SCHEMA_VERSION", "load_schema", "render", "validate_results"]
