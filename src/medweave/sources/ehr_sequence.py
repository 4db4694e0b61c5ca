"""The EHR event model as event sequences: each patient's records before the index date.

Where :func:`medweave.sources.ehr_sql.ehr_features` aggregates ``mw_events`` into one
row of statistics per patient, :func:`ehr_sequences` keeps the records themselves, for the
sequence encoders (``gru``, ``transformer``). The window and the leakage guard are those
of the features: a record is used when it is dated in ``[index_date - lookback_days,
index_date]`` (the index date itself included, as for the features), and the others are
counted in the audit as ``after_index``, ``before_lookback``, ``unknown_patient``,
``no_person_record``, ``missing_date`` or ``missing_code``, and the values are checked as
for the features (:data:`~medweave.sources.ehr_sql.CHECKS`: text that is not a number,
or not finite, is an error, or with ``on_error: skip`` a record left out and counted as
``value:not_a_number`` / ``value:non_finite``). Every code is kept (no ``rare_code``):
the model's vocabulary is chosen on each fold's training patients.

The block is of kind ``sequence``: ``events`` holds one row per record, ``patient_id``
(str), ``days_before_index`` (int32, >= 0), ``code`` (``{domain}:{vocabulary}/{code}``,
as in the feature names, e.g. ``measurement:LOINC/1988-5``) and ``value`` (float64, the
measurement value, NaN when there is none), sorted by patient (in the index's order),
oldest record first, then by code and value, so that every database gives the same table.
**Presence is evidence**, as for the features: a patient is present when they have a
``mw_persons`` row and at least one coded record in the window; the others are counted in
the audit's missing patients as ``no_person_record`` or ``no_records_in_window``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medweave.cohort._audit import Audit
from medweave.cohort._block import EVENT_COLUMNS, ModalityBlock
from medweave.sources._ehr_model import DOMAINS, domain_list
from medweave.sources.ehr_sql import (
    BAD_VALUE,
    SqlEngine,
    _events_joined,
    audit_records,
    checked_records,
    person_rows,
    presence,
    window_sql,
)

__all__ = ["ehr_sequences", "sequence_sql"]


def sequence_sql(
    *, joined: str, domains: Sequence[str], lookback_days: int, has_person: str = "TRUE"
) -> str:
    """The records of cohort patients (with a person row) in their window, without bad
    values (DuckDB dialect): ``pos`` (the patient's row of ``mw_index``), ``domain``,
    ``vocabulary``, ``code``, ``days_before`` and ``value``; records without vocabulary or
    code are included (to be counted)."""
    window = window_sql(domains=domains, lookback_days=lookback_days, has_person=has_person)
    return f"""
SELECT i.pos, e.domain, e.vocabulary, e.code,
       CAST(i.index_date - e.event_date AS INTEGER) AS days_before,
       CAST(e.value AS DOUBLE) AS value
FROM {joined}
WHERE {window}
  AND NOT {BAD_VALUE}"""


def ehr_sequences(
    engine: SqlEngine,
    *,
    index: pd.DataFrame,
    lookback_days: int,
    audit: Audit,
    source: str,
    domains: Iterable[str] = DOMAINS,
    on_error: Literal["raise", "skip"] = "raise",
) -> ModalityBlock:
    """The event sequence of every cohort patient from ``mw_events`` (see module doc).

    ``index`` has ``patient_id`` and ``index_date``; the block holds one row per index
    patient (ids as str, in the index's order), kind ``sequence``, named ``source``.
    Records with no date, or a value that breaks the value checks, are an
    :class:`InputError` naming their table unless ``on_error`` is ``"skip"``, when they are
    counted (``missing_date``, ``value:...``). ``present`` is false for patients without a
    person row or a record in the window.
    """
    doms = domain_list(domains)
    patient_ids, counts = checked_records(
        engine,
        index=index,
        domains=doms,
        lookback_days=lookback_days,
        source=source,
        on_error=on_error,
        audit=audit,
    )
    ids = np.asarray(patient_ids, dtype=object)
    joined, has_person = _events_joined(engine)
    rows = engine.execute(
        sequence_sql(
            joined=joined, domains=doms, lookback_days=lookback_days, has_person=has_person
        )
    )
    coded = pc.and_(pc.is_valid(rows.column("vocabulary")), pc.is_valid(rows.column("code")))
    uncoded = rows.num_rows - int(pc.sum(pc.cast(coded, pa.int64())).as_py() or 0)
    rows = rows.filter(coded)
    events = _event_table(rows, ids)
    has_record = np.zeros(len(ids), dtype=bool)
    has_record[_int_array(rows.column("pos"))] = True
    present = presence(
        audit, source, has_person=person_rows(engine, len(ids)), has_record=has_record
    )

    audit_records(audit, source, counts, missing_code=uncoded)
    audit.used(source, len(events), patients=int(present.sum()))
    return ModalityBlock(
        name=source,
        kind="sequence",
        ids=ids.tolist(),
        x=np.zeros((len(ids), 0), dtype=np.float32),
        feature_names=[],
        present=present,
        events=events,
        meta={
            "lookback_days": int(lookback_days),
            "domains": doms,
            "codes": int(events["code"].nunique()),
            "events": len(events),
            "engine": engine.dialect,
        },
    )


def _event_table(rows: pa.Table, ids: np.ndarray) -> pd.DataFrame:
    """The records of :func:`sequence_sql` (with a code) as the sorted ``events`` table.

    Sorting happens here, on the bytes of the codes, because database collations differ.
    """
    code = pc.binary_join_element_wise(
        pc.binary_join_element_wise(rows.column("domain"), rows.column("vocabulary"), ":"),
        rows.column("code"),
        "/",
    )
    table = pa.table(
        {
            "pos": pc.cast(rows.column("pos"), pa.int64()),
            "days_before_index": pc.cast(rows.column("days_before"), pa.int32()),
            "code": pc.cast(code, pa.string()),
            "value": pc.cast(rows.column("value"), pa.float64()),
        }
    )
    order = pc.sort_indices(
        table,
        sort_keys=[
            ("pos", "ascending"),
            ("days_before_index", "descending"),
            ("code", "ascending"),
            ("value", "ascending"),
        ],
    )  # nulls (no value) last
    table = table.take(order)
    pos = _int_array(table.column("pos"))
    return pd.DataFrame(
        {
            "patient_id": ids[pos] if len(pos) else np.asarray([], dtype=object),
            "days_before_index": table.column("days_before_index").to_numpy(),
            "code": np.asarray(table.column("code").to_pylist(), dtype=object),
            "value": pc.fill_null(table.column("value"), np.nan).to_numpy(),
        },
        columns=list(EVENT_COLUMNS),
    )


def _int_array(values: pa.ChunkedArray) -> np.ndarray:
    out: np.ndarray = pc.cast(values, pa.int64()).to_numpy()
    return out
