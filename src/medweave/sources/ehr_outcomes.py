"""Index dates and outcomes from the EHR event model (:mod:`medweave.sources.ehr_sql`).

:func:`first_occurrence` dates each person's index at their first record of a concept
set; :func:`outcome_from_events` finds the first outcome event (a concept, or death)
after the index date, censored at the end of observation. :func:`open_engine` opens an
OMOP CDM with the event model's views built.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from medweave.errors import InputError
from medweave.sources._ehr_model import DOMAINS, domain_list, in_list, index_table
from medweave.sources._sql import SqlEngine

__all__ = ["first_occurrence", "open_engine", "outcome_from_events"]

_CODE_RE = re.compile(r"^(?P<vocab>[^/]+)/(?P<code>.+)$")


def _concept_set(engine: SqlEngine, concepts: Sequence[int | str], *, what: str) -> pa.Table:
    """``concepts`` (OMOP concept ids or 'VOCABULARY/CODE') as (vocabulary, code) rows."""
    if isinstance(concepts, str | int) or not len(concepts):
        raise InputError(
            f"{what}: expected a non-empty list of OMOP concept ids or 'VOCABULARY/CODE' "
            f"strings such as 'SNOMED/13645005', got {concepts!r}"
        )
    pairs: set[tuple[str, str]] = set()
    ids: list[int] = []
    for c in concepts:
        if isinstance(c, bool):
            raise InputError(f"{what}: {c!r} is not a concept")
        if isinstance(c, int) or (isinstance(c, str) and c.strip().isdigit()):
            ids.append(int(c))
            pairs.add(("OMOP", str(int(c))))
            continue
        m = _CODE_RE.match(str(c).strip())
        if not m:
            raise InputError(
                f"{what}: concept {c!r} is neither an OMOP concept id nor "
                "'VOCABULARY/CODE' (e.g. 'LOINC/1988-5')"
            )
        pairs.add((m["vocab"].strip(), m["code"].strip()))
    if ids and engine.has("mw_concepts"):
        listed = ", ".join(str(i) for i in sorted(set(ids)))
        found = engine.execute(
            f"SELECT vocabulary, code FROM mw_concepts WHERE concept_id IN ({listed})"
        )
        pairs.update(zip(found.column(0).to_pylist(), found.column(1).to_pylist(), strict=True))
    rows = sorted((str(v), str(c)) for v, c in pairs if v is not None and c is not None)
    return pa.table(
        {
            "vocabulary": pa.array([v for v, _ in rows], type=pa.string()),
            "code": pa.array([c for _, c in rows], type=pa.string()),
        }
    )


def first_occurrence(
    engine: SqlEngine,
    concepts: Sequence[int | str],
    *,
    domains: Iterable[str] = DOMAINS,
) -> tuple[list[str], pd.DataFrame]:
    """Index dates: each person's first dated record of any concept in ``concepts``.

    ``concepts`` holds OMOP concept ids (ints or digit strings, resolved through
    ``mw_concepts`` when the source has one; events of unmapped concepts carry vocabulary
    ``OMOP``) or ``'VOCABULARY/CODE'`` strings. Returns every person id of ``mw_persons``
    (sorted), and the frame of ``patient_id`` (str) and ``index_date`` (datetime64) of the
    persons with such a record, sorted by patient.
    """
    engine.require("mw_events", purpose="find first occurrences")
    engine.require("mw_persons", purpose="find first occurrences")
    doms = domain_list(domains)
    engine.register("mw_concept_set", _concept_set(engine, concepts, what="index concepts"))
    out = engine.execute(
        f"""
SELECT e.patient_id, MIN(e.event_date) AS index_date
FROM mw_events AS e
JOIN mw_concept_set AS s ON e.vocabulary = s.vocabulary AND e.code = s.code
WHERE e.domain IN ({in_list(doms)})
  AND e.event_date IS NOT NULL
  AND e.patient_id IN (SELECT patient_id FROM mw_persons)
GROUP BY e.patient_id"""
    ).to_pandas()
    persons = engine.execute(
        "SELECT DISTINCT patient_id FROM mw_persons WHERE patient_id IS NOT NULL"
    )
    out["patient_id"] = out["patient_id"].astype(str)
    out["index_date"] = pd.to_datetime(out["index_date"])
    out = out.sort_values("patient_id", kind="stable").reset_index(drop=True)
    return sorted(str(v) for v in persons.column(0).to_pylist()), out


def outcome_from_events(
    engine: SqlEngine,
    index: pd.DataFrame,
    *,
    concepts: Sequence[int | str] | None = None,
    death: bool = False,
    horizon_days: int | None,
) -> pd.DataFrame:
    """Outcomes after the index date from events of ``concepts`` and/or death.

    The event is the first record of a concept in ``concepts`` dated after the index date,
    or death (``mw_death``) on or after it, whichever comes first. Per index patient (in
    the index's order): ``time`` (days from the index date to the event, or to the end of
    observation when there is none: the last ``mw_observation`` end date, else the
    patient's last record or death; censored), ``event`` (bool) and ``outcome`` (bool:
    the event within ``horizon_days``; any event when it is None). An empty ``concepts``
    list counts as none.
    """
    if concepts is not None and not isinstance(concepts, str) and not len(concepts):
        concepts = None
    if concepts is None and not death:
        raise InputError("outcome: give concepts, death: true, or both")
    if horizon_days is not None and int(horizon_days) <= 0:
        raise InputError(f"outcome: horizon_days is {horizon_days}, expected > 0")
    engine.require("mw_events", purpose="find outcome events")
    if death:
        engine.require("mw_death", purpose="use death as the outcome")
    idx = index_table(index)
    engine.register("mw_index", idx)
    parts = []
    if concepts is not None:
        engine.register("mw_concept_set", _concept_set(engine, concepts, what="outcome concepts"))
        parts.append(
            """SELECT e.patient_id, MIN(e.event_date) AS event_date
  FROM mw_events AS e
  JOIN mw_concept_set AS s ON e.vocabulary = s.vocabulary AND e.code = s.code
  JOIN mw_index AS i ON e.patient_id = i.patient_id
  WHERE e.event_date > i.index_date
  GROUP BY e.patient_id"""
        )
    if death:
        parts.append(
            """SELECT d.patient_id, MIN(d.death_date) AS event_date
  FROM mw_death AS d
  JOIN mw_index AS i ON d.patient_id = i.patient_id
  WHERE d.death_date >= i.index_date
  GROUP BY d.patient_id"""
        )
    if engine.has("mw_observation"):
        ends = "SELECT patient_id, MAX(end_date) AS end_date FROM mw_observation GROUP BY 1"
    else:
        last = ["SELECT patient_id, MAX(event_date) AS end_date FROM mw_events GROUP BY 1"]
        if engine.has("mw_death"):
            last.append("SELECT patient_id, MAX(death_date) AS end_date FROM mw_death GROUP BY 1")
        ends = (
            "SELECT patient_id, MAX(end_date) AS end_date FROM ("
            + " UNION ALL ".join(last)
            + ") AS u GROUP BY 1"
        )
    events = " UNION ALL ".join(parts)
    res = engine.execute(
        f"""
WITH ev AS ({events}),
first_event AS (SELECT patient_id, MIN(event_date) AS event_date FROM ev GROUP BY 1),
ends AS ({ends})
SELECT i.patient_id,
       f.event_date - i.index_date AS event_days,
       o.end_date - i.index_date AS end_days
FROM mw_index AS i
LEFT JOIN first_event AS f ON i.patient_id = f.patient_id
LEFT JOIN ends AS o ON i.patient_id = o.patient_id"""
    ).to_pandas()
    ids = [str(v) for v in idx.column("patient_id").to_pylist()]
    res = res.set_index(res["patient_id"].astype(str)).reindex(ids)
    event_days = res["event_days"].to_numpy(dtype=np.float64, na_value=np.nan)
    end_days = res["end_days"].to_numpy(dtype=np.float64, na_value=np.nan)
    event = ~np.isnan(event_days)
    horizon = np.inf if horizon_days is None else float(horizon_days)
    time = np.where(event, event_days, np.nan_to_num(end_days, nan=0.0))
    time = np.maximum(time, 0.0)
    return pd.DataFrame(
        {
            "patient_id": ids,
            "outcome": event & (time <= horizon),
            "time": time,
            "event": event,
        }
    )


def open_engine(
    *,
    database: str | Path | None = None,
    url: str | None = None,
    schema: str | None = None,
    base_dir: Path | None = None,
    id_column: Literal["person_source_value", "person_id"] = "person_source_value",
    domains: Iterable[str] = DOMAINS,
) -> SqlEngine:
    """A session over an OMOP CDM with the event-model views built (close it after use).

    ``database`` is a DuckDB file (relative to ``base_dir``), ``url`` a PostgreSQL URL;
    see :func:`medweave.sources.omop.open_omop`.
    """
    from medweave.sources.omop import open_omop

    path: Path | None = None
    if database is not None:
        path = Path(database).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
    return open_omop(
        database=path, url=url, schema=schema, id_column=id_column, domains=list(domains)
    )
