"""What every part of the EHR event model shares: its domains, the cohort index as a
relation (``mw_index``), and SQL lists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa

from medweave.errors import InputError
from medweave.sources._sql import quote_literal

__all__ = ["DOMAINS", "Domain", "domain_list", "in_list", "index_table"]

Domain = Literal["condition", "drug", "measurement", "visit"]
DOMAINS: tuple[Domain, ...] = get_args(Domain)


def index_table(index: pd.DataFrame) -> pa.Table:
    """The cohort index as Arrow (patient_id string, index_date date32, pos int32)."""
    missing = [c for c in ("patient_id", "index_date") if c not in index.columns]
    if missing:
        raise InputError(
            f"cohort index: missing column(s) {', '.join(missing)}; expected patient_id and "
            "index_date"
        )
    if index["patient_id"].isna().any():
        raise InputError("cohort index: a patient_id is empty; every patient needs an id")
    ids = index["patient_id"].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputError(f"cohort index: patient_id {dup.iloc[0]!r} appears more than once")
    dates = pd.to_datetime(index["index_date"])
    if dates.isna().any():
        bad = ids[dates.isna().to_numpy()].iloc[0]
        raise InputError(f"cohort index: patient {bad!r} has no index_date")
    if dates.dt.tz is not None:
        dates = dates.dt.tz_localize(None)
    days = dates.to_numpy().astype("datetime64[D]")
    return pa.table(
        {
            "patient_id": pa.array(ids.to_numpy(dtype=object), type=pa.string()),
            "index_date": pa.array(days, type=pa.date32()),
            # Row of each patient in the block: the aggregation groups on it, not on text.
            "pos": pa.array(np.arange(len(ids), dtype=np.int32), type=pa.int32()),
        }
    )


def domain_list(domains: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(domains))
    bad = [d for d in out if d not in DOMAINS]
    if bad:
        raise InputError(f"EHR domains: {bad[0]!r} is not one of {', '.join(DOMAINS)}")
    if not out:
        raise InputError(f"EHR domains: none given; use some of {', '.join(DOMAINS)}")
    return out


def in_list(values: Sequence[str]) -> str:
    return ", ".join(quote_literal(v) for v in values)
