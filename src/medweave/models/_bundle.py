"""The JSON half of every model bundle: ``bundle.json``, checked for its format on load."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medweave.errors import InputError

if TYPE_CHECKING:  # the baselines read bundles without torch's encoders
    from medweave.models.encoders import InputSpec

__all__ = ["jsonable", "read_bundle_meta", "spec_from_json", "spec_to_json"]


def read_bundle_meta(path: str | os.PathLike[str], *, fmt: str, what: str) -> dict[str, Any]:
    """``path/bundle.json`` as a dict; a clear error when it is missing or of another
    format (``what`` names the kind of bundle in the message)."""
    root = Path(path)
    meta_path = root / "bundle.json"
    if not meta_path.is_file():
        raise InputError(f"{root}: not a medweave {what} bundle (no bundle.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != fmt:
        raise InputError(f"{meta_path}: format {meta.get('format')!r}, expected {fmt!r}")
    return dict(meta)


def jsonable(obj: Any) -> Any:
    """Parameters as JSON values: tuples as lists, numpy scalars as Python numbers,
    timestamps and paths as text."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, pd.Timestamp):
        return str(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def spec_to_json(spec: InputSpec) -> dict[str, Any]:
    """An encoder's input spec as JSON (``feature_groups``, e.g. gene sets, and a sequence
    encoder's ``vocab_size``, when it has them)."""
    out: dict[str, Any] = {"kind": spec.kind, "shape": list(spec.shape)}
    if spec.vocab_size:  # sequence encoders
        out["vocab_size"] = int(spec.vocab_size)
    if spec.feature_groups:  # name -> input column indices
        out["feature_groups"] = {k: list(v) for k, v in spec.feature_groups.items()}
    return out


def spec_from_json(data: dict[str, Any]) -> InputSpec:
    """The :class:`InputSpec` written by :func:`spec_to_json`."""
    from medweave.models.encoders import InputSpec

    groups = {str(k): [int(i) for i in v] for k, v in data.get("feature_groups", {}).items()}
    return InputSpec(
        kind=data["kind"],
        shape=tuple(data["shape"]),
        vocab_size=int(data.get("vocab_size", 0)),
        feature_groups=groups,
    )
