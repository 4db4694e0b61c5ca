"""Preprocessing of event sequences (kind ``sequence``), fitted on training patients.

The vocabulary is the codes seen in at least ``min_count`` training patients, sorted;
code ``k`` of it has id ``k + 1``, any other code the out-of-vocabulary id ``len + 1``, and
0 is padding. Values are standardised per code with the median and interquartile range
of its training values (the standard deviation when the IQR is 0, else 1), so the raw
units of a laboratory do not matter; a record without a value, or of an unknown code,
gets 0. Each patient keeps the ``max_len`` most recent events, oldest first. The state is
the vocabulary (JSON) and two arrays, ``center`` and ``scale``, one entry per code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from medweave.cohort import ModalityBlock
from medweave.errors import InputError

__all__ = ["fit_sequence", "sequence_inputs"]


def fit_sequence(
    block: ModalityBlock, train: np.ndarray, *, max_len: int, min_count: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and config of the sequence preprocessing, from the patients at ``train``
    (positions in ``block`` of training patients who have the modality)."""
    if int(max_len) < 1 or int(min_count) < 1:
        raise InputError(
            f"modality {block.name!r}: sequence_max_len is {max_len} and sequence_min_count "
            f"{min_count}; both must be >= 1"
        )
    events = _events(block, block.name)
    ids = np.asarray(block.ids, dtype=object)[train]
    ev = events[events["patient_id"].isin(set(ids))]
    patients = ev.groupby("code", sort=True)["patient_id"].nunique()
    vocab = sorted(str(c) for c in patients.index[patients.to_numpy() >= int(min_count)])
    if not vocab:
        raise InputError(
            f"modality {block.name!r}: no event code is seen in at least {min_count} of the "
            f"{len(train)} training patients; lower sequence_min_count or use more patients"
        )
    center, scale = np.zeros(len(vocab)), np.ones(len(vocab))
    where = {code: k for k, code in enumerate(vocab)}
    values = ev[ev["code"].isin(where) & np.isfinite(ev["value"].to_numpy(np.float64))]
    for code, v in values.groupby("code", sort=False)["value"]:
        k = where[str(code)]
        center[k], scale[k] = _robust_scale(v.to_numpy(np.float64))
    config = {"max_len": int(max_len), "min_count": int(min_count), "vocabulary": vocab}
    return {"center": center, "scale": scale}, config


def sequence_inputs(
    block: ModalityBlock, arrays: dict[str, np.ndarray], config: dict[str, Any], *, name: str
) -> dict[str, torch.Tensor]:
    """The batch of the sequence encoders for every patient of ``block``: ``codes``,
    ``values``, ``days`` and ``mask``, (n, L) with L the longest kept sequence (at most
    ``max_len``); patients without the modality have an empty (all-padding) row."""
    events = _events(block, name)
    vocab = pd.Index(config["vocabulary"])
    n, max_len = len(block.ids), int(config["max_len"])
    pos = pd.Index(block.ids).get_indexer(pd.Index(events["patient_id"]))
    keep = pos >= 0
    keep[keep] = block.present[pos[keep]]
    ev = events[keep]
    pos = pos[keep]
    k = vocab.get_indexer(pd.Index(ev["code"]))  # -1: not in the vocabulary
    if len(ev) and (k < 0).all():
        codes = pd.unique(ev["code"])
        raise InputError(
            f"modality {name!r}: none of the {len(codes)} event codes of the cohort (e.g. "
            f"{', '.join(map(str, codes[:3]))}) is in the model's vocabulary of {len(vocab)} "
            f"codes (e.g. {', '.join(vocab[:3])}); build the cohort with the same source and "
            "code vocabularies as for training"
        )
    known = k >= 0
    with np.errstate(invalid="ignore"):
        z = (ev["value"].to_numpy(np.float64) - arrays["center"][k]) / arrays["scale"][k]
    z = np.where(known & np.isfinite(z), z, 0.0)
    codes = np.where(known, k + 1, len(vocab) + 1)
    days = ev["days_before_index"].to_numpy(np.float64)

    # The max_len most recent events of each patient, placed oldest first.
    order = np.lexsort((-np.arange(len(ev)), days, pos))
    sorted_pos = pos[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_pos, sorted_pos, side="left")
    take = order[rank < max_len]
    rank = rank[rank < max_len]
    count = np.bincount(pos[take], minlength=n)
    slot = count[pos[take]] - 1 - rank
    length = max(1, int(count.max()) if n else 1)
    out = {
        "codes": torch.zeros((n, length), dtype=torch.long),
        "values": torch.zeros((n, length), dtype=torch.float32),
        "days": torch.zeros((n, length), dtype=torch.float32),
        "mask": torch.zeros((n, length), dtype=torch.bool),
    }
    at = (torch.from_numpy(pos[take]), torch.from_numpy(slot))
    out["codes"][at] = torch.from_numpy(codes[take].astype(np.int64))
    out["values"][at] = torch.from_numpy(z[take].astype(np.float32))
    out["days"][at] = torch.from_numpy(days[take].astype(np.float32))
    out["mask"][at] = True
    return out


def _events(block: ModalityBlock, name: str) -> pd.DataFrame:
    if not isinstance(block.events, pd.DataFrame):
        raise InputError(
            f"modality {name!r}: the cohort's sequence block has no events table; build it "
            "with an EHR source of form: sequence"
        )
    return block.events


def _robust_scale(v: np.ndarray) -> tuple[float, float]:
    """Median and IQR of ``v`` (the standard deviation when the IQR is 0, else 1)."""
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    spread = q75 - q25
    if not spread > 0:
        spread = float(np.std(v))
    return float(median), float(spread) if spread > 0 else 1.0
