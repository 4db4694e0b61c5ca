"""Broken inputs for these readers (see ``tests/sources/broken/__init__.py``)."""

from __future__ import annotations

from medweave.testing.readers import BrokenInput

CASES: list[BrokenInput] = []
