"""The reader contract and registry.

A reader turns one source in its field's format into a :class:`ModalityBlock` for the
patients it finds. It is registered by name with a pydantic spec class whose fields are the
YAML keys of that source in ``cohort.yaml`` (config keys are constructor arguments). A
reader validates at the door: bad input raises :class:`InputError` naming the file and
row, key or tag; rows it does not use (dated after the index date, outside the lookback,
unknown patient) are counted in the audit with their reason.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from medweave.cohort._audit import Audit
from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError

__all__ = [
    "ReadContext",
    "Reader",
    "SourceSpec",
    "available",
    "get",
    "register",
]


class SourceSpec(BaseModel):
    """Keys every source has; each reader's spec adds its own. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str
    on_error: Literal["raise", "skip"] = "raise"


@dataclass
class ReadContext:
    """What a reader may know about the cohort: patients, index dates, window, audit.

    ``index`` has one row per cohort patient: ``patient_id`` (str) and ``index_date``
    (datetime64). Records dated after a patient's index date must not be used, and are
    counted in the audit as ``after_index``; records before ``index_date - lookback_days``
    are counted as ``before_lookback``.
    """

    index: pd.DataFrame
    lookback_days: int
    audit: Audit
    base_dir: Path

    def resolve(self, path: str | Path) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p


Reader = Callable[[SourceSpec, ReadContext], ModalityBlock]


@dataclass(frozen=True)
class _Entry:
    reader: Reader
    spec: type[SourceSpec]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, *, spec: type[SourceSpec], description: str) -> Callable[[Reader], Reader]:
    """Register a reader under ``name`` (one canonical name, no aliases)."""

    def wrap(fn: Reader) -> Reader:
        if name in _REGISTRY:
            raise ValueError(f"source type {name!r} is already registered")
        _REGISTRY[name] = _Entry(fn, spec, description)
        return fn

    return wrap


def get(name: str) -> tuple[Reader, type[SourceSpec]]:
    """The reader and spec class registered as ``name``, with a did-you-mean if unknown."""
    _load_builtin()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = (
            f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(sorted(_REGISTRY))}"
        )
        raise InputError(f"unknown source type {name!r}; {hint}")
    entry = _REGISTRY[name]
    return entry.reader, entry.spec


def available() -> dict[str, str]:
    """Registered source types and their one-line descriptions."""
    _load_builtin()
    return {k: v.description for k, v in sorted(_REGISTRY.items())}


def _load_builtin() -> None:
    # Importing the package registers the built-in readers.
    import medweave.sources  # noqa: F401
