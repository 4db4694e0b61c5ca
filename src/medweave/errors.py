"""Errors that medweave raises for bad input.

Every message is one line that names the offending file, row, key or tag, says what
was expected, and how to fix it. The CLI turns :class:`InputError` into exit code 2.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input from the user (arguments, config or files): exit code 2 in the CLI."""
