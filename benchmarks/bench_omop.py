"""Speed and memory of the OMOP reader's features against a hand-written DuckDB query.

Builds an OMOP CDM in DuckDB (default 100,000 persons, 10,000,000 measurement rows, plus
1,000,000 conditions, 1,000,000 drug exposures and 500,000 visits, a third of them after
the index date or before the lookback), then times `ehr_features` (reader `omop`: event
views, audit counts, aggregates pushed down, pivot to the wide matrix) and the floor: one
hand-written DuckDB query computing the same aggregates straight from the CDM tables.
Targets: within 1.5x of the floor, under 2 GB.

Each run is a fresh process (so neither inherits the other's memory); the best of
``--repeats`` runs is reported. Run with
`.venv/bin/python benchmarks/bench_omop.py [--persons N] [--measurements M] [--repeats R]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import duckdb
import pandas as pd

from _measure import measure
from medweave.synth.concepts import concept_table
from medweave.synth.omop import CDM_TABLES, LABS

TARGET_RATIO = 1.5
TARGET_BYTES = 2 * 1024**3
LOOKBACK = 1095
MIN_PATIENTS = 5

# Domain table -> (id column, concept column, date column, concepts, rows per person).
OTHER_TABLES = {
    "condition_occurrence": (
        "condition_occurrence_id",
        "condition_concept_id",
        "condition_start_date",
        [255573, 320128, 201826, 432867, 316139, 255848, 313217],
        10,
    ),
    "drug_exposure": (
        "drug_exposure_id",
        "drug_concept_id",
        "drug_exposure_start_date",
        [1154343, 1149380, 1551099, 1503297, 1308216, 1332418, 1545958, 1112807],
        10,
    ),
    "visit_occurrence": (
        "visit_occurrence_id",
        "visit_concept_id",
        "visit_start_date",
        [9201, 9202, 9203],
        5,
    ),
}

# The floor: the same aggregates as `ehr_features`, written by hand for this database
# (integer keys, vocabulary and code looked up at the end), without audit counts.
FLOOR_SQL = """
WITH ix AS (
  SELECT p.person_id, i.index_date
  FROM idx AS i JOIN cdm.main.person AS p ON p.person_source_value = i.patient_id
), ev AS (
  SELECT 'measurement' AS domain, x.person_id, x.measurement_concept_id AS cid,
         x.value_as_number AS value, ix.index_date - x.measurement_date AS days_before
  FROM cdm.main.measurement AS x JOIN ix ON x.person_id = ix.person_id
  WHERE x.measurement_date BETWEEN ix.index_date - {lookback} AND ix.index_date
  UNION ALL
  SELECT 'condition', x.person_id, x.condition_concept_id, NULL,
         ix.index_date - x.condition_start_date
  FROM cdm.main.condition_occurrence AS x JOIN ix ON x.person_id = ix.person_id
  WHERE x.condition_start_date BETWEEN ix.index_date - {lookback} AND ix.index_date
  UNION ALL
  SELECT 'drug', x.person_id, x.drug_concept_id, NULL,
         ix.index_date - x.drug_exposure_start_date
  FROM cdm.main.drug_exposure AS x JOIN ix ON x.person_id = ix.person_id
  WHERE x.drug_exposure_start_date BETWEEN ix.index_date - {lookback} AND ix.index_date
  UNION ALL
  SELECT 'visit', x.person_id, x.visit_concept_id, NULL, ix.index_date - x.visit_start_date
  FROM cdm.main.visit_occurrence AS x JOIN ix ON x.person_id = ix.person_id
  WHERE x.visit_start_date BETWEEN ix.index_date - {lookback} AND ix.index_date
), per AS (
  SELECT domain, person_id, cid, COUNT(*) AS n, MIN(days_before) AS days_since_last,
         FIRST(value ORDER BY days_before, value DESC) FILTER (WHERE value IS NOT NULL)
           AS v_last,
         AVG(value) AS v_mean, MIN(value) AS v_min, MAX(value) AS v_max,
         REGR_SLOPE(value, -CAST(days_before AS DOUBLE)) * 365.25 AS v_slope
  FROM ev GROUP BY domain, person_id, cid
), keep AS (
  SELECT domain, cid FROM per GROUP BY domain, cid HAVING COUNT(*) >= {min_patients}
)
SELECT per.*, c.vocabulary_id, c.concept_code
FROM per JOIN keep USING (domain, cid) LEFT JOIN cdm.main.concept AS c ON c.concept_id = per.cid
"""


def build(path: Path, *, persons: int, measurements: int) -> None:
    """An OMOP CDM DuckDB file with synthetic rows, generated in SQL; and its index."""
    con = duckdb.connect(str(path))
    try:
        for name, columns in CDM_TABLES.items():
            cols = ", ".join(f"{c} {t}" for c, t in columns)
            con.execute(f"CREATE TABLE {name} ({cols})")
        concepts = concept_table()  # noqa: F841 (read by DuckDB below)
        con.execute("INSERT INTO concept BY NAME SELECT * FROM concepts")
        con.execute(
            f"""INSERT INTO person BY NAME
            SELECT i + 1 AS person_id,
                   CASE WHEN i % 2 = 0 THEN 8507 ELSE 8532 END AS gender_concept_id,
                   1930 + CAST(hash(i) % 60 AS INTEGER) AS year_of_birth,
                   1 + CAST(hash(i + 1) % 12 AS INTEGER) AS month_of_birth,
                   1 + CAST(hash(i + 2) % 28 AS INTEGER) AS day_of_birth,
                   'P' || lpad(CAST(i + 1 AS VARCHAR), 7, '0') AS person_source_value
            FROM range({persons}) AS t(i)"""
        )
        con.execute(
            f"""CREATE TEMP TABLE idx AS
            SELECT i + 1 AS person_id,
                   DATE '2015-01-01' + CAST(hash(i * 13) % 3000 AS INTEGER) AS index_date
            FROM range({persons}) AS t(i)"""
        )
        # Records fall in [index - 1350, index + 449]: 25% after the index date, 14% before
        # the 1095-day lookback.
        labs = sorted(LABS)
        con.execute(
            f"""INSERT INTO measurement BY NAME
            SELECT r + 1 AS measurement_id, p.person_id,
                   list_extract({labs}, 1 + CAST(hash(r * 7) % {len(labs)} AS INTEGER))
                     AS measurement_concept_id,
                   p.index_date + (CAST(hash(r * 3) % 1800 AS INTEGER) - 1350)
                     AS measurement_date,
                   round(50 + (hash(r * 5) % 10000) / 100.0, 1) AS value_as_number,
                   8751 AS unit_concept_id, 'mg/L' AS unit_source_value
            FROM range({measurements}) AS t(r) JOIN idx AS p ON p.person_id = 1 + r % {persons}"""
        )
        for table, (id_col, concept_col, date_col, ids, per_person) in OTHER_TABLES.items():
            con.execute(
                f"""INSERT INTO {table} BY NAME
                SELECT r + 1 AS {id_col}, p.person_id,
                       list_extract({ids}, 1 + CAST(hash(r * 7) % {len(ids)} AS INTEGER))
                         AS {concept_col},
                       p.index_date + (CAST(hash(r * 3) % 1800 AS INTEGER) - 1350) AS {date_col}
                FROM range({persons * per_person}) AS t(r)
                JOIN idx AS p ON p.person_id = 1 + r % {persons}"""
            )
        con.execute(
            """INSERT INTO observation_period BY NAME
            SELECT person_id AS observation_period_id, person_id,
                   index_date - 2000 AS observation_period_start_date,
                   index_date + 500 AS observation_period_end_date
            FROM idx"""
        )
        index_path = str(path) + ".index.parquet"
        con.execute(
            f"""COPY (SELECT 'P' || lpad(CAST(person_id AS VARCHAR), 7, '0') AS patient_id,
                             index_date FROM idx ORDER BY person_id)
            TO '{index_path}' (FORMAT parquet)"""
        )
        con.execute("CHECKPOINT")
    finally:
        con.close()


def run_features(db: Path, index: pd.DataFrame) -> dict[str, Any]:
    from medweave.cohort._audit import Audit
    from medweave.sources.ehr_sql import ehr_features
    from medweave.sources.omop import open_omop

    audit = Audit()
    with open_omop(database=db) as engine:
        block = ehr_features(
            engine,
            index=index,
            lookback_days=LOOKBACK,
            audit=audit,
            source="ehr",
            min_patients=MIN_PATIENTS,
        )
    src = audit.sources["ehr"]
    return {
        "codes": int(block.meta["codes"]),
        "rows_used": src.rows_used,
        "shape": list(block.x.shape),
        "excluded": dict(src.excluded),
    }


def run_floor(db: Path, index: pd.DataFrame) -> dict[str, Any]:
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{db}' AS cdm (READ_ONLY)")
        con.register("idx", index)
        sql = FLOOR_SQL.format(lookback=LOOKBACK, min_patients=MIN_PATIENTS)
        table = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    n = table.column("n").to_pylist()
    codes = {
        (d, c)
        for d, c in zip(
            table.column("domain").to_pylist(), table.column("cid").to_pylist(), strict=True
        )
    }
    return {"codes": len(codes), "rows_used": int(sum(n)), "rows": table.num_rows}


def child(variant: str, db: Path) -> None:
    if variant == "features":  # imported before timing, as a running pipeline would have
        import medweave.sources.omop  # noqa: F401
    index = pd.read_parquet(str(db) + ".index.parquet")
    fn = run_features if variant == "features" else run_floor
    result, seconds, peak = measure(lambda: fn(db, index))
    print(json.dumps({"seconds": seconds, "peak": peak, **result}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--measurements", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", type=Path, help="reuse (or keep) the database at this path")
    parser.add_argument("--child", choices=["features", "floor"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.db)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="medweave-bench-omop-"))
    db = args.db or tmp / "omop.duckdb"
    try:
        if not db.exists():
            t0 = time.perf_counter()
            build(db, persons=args.persons, measurements=args.measurements)
            print(f"built {db.name}: {time.perf_counter() - t0:.1f} s")
        runs: dict[str, list[dict[str, Any]]] = {"floor": [], "features": []}
        for _ in range(args.repeats):
            for variant in runs:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", variant, "--db", str(db)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    floor, feats = runs["floor"], runs["features"]
    best_floor = min(r["seconds"] for r in floor)
    best_feats = min(r["seconds"] for r in feats)
    peak_floor = min(r["peak"] for r in floor)
    peak_feats = max(r["peak"] for r in feats)
    ratio = best_feats / best_floor
    same = feats[0]["codes"] == floor[0]["codes"] and feats[0]["rows_used"] == floor[0]["rows_used"]
    print(
        f"OMOP features, {args.persons:,} persons, {args.measurements:,} measurements, "
        f"{os.cpu_count()} cores, best of {args.repeats}"
    )
    print(
        f"  floor (hand-written DuckDB query)  {best_floor:6.2f} s  "
        f"{peak_floor / 1024**2:6.0f} MiB   runs: "
        + ", ".join(f"{r['seconds']:.2f}" for r in floor)
    )
    print(
        f"  ehr_features (reader omop)         {best_feats:6.2f} s  "
        f"{peak_feats / 1024**2:6.0f} MiB   runs: "
        + ", ".join(f"{r['seconds']:.2f}" for r in feats)
    )
    print(f"  ratio {ratio:.2f}x (target < {TARGET_RATIO}x); peak memory target < 2048 MiB")
    print(
        f"  matrix {feats[0]['shape'][0]:,} x {feats[0]['shape'][1]}, "
        f"{feats[0]['codes']} codes, {feats[0]['rows_used']:,} records used, "
        f"excluded {feats[0]['excluded']}; same codes and records as the floor: {same}"
    )
    ok = same and ratio < TARGET_RATIO and peak_feats < TARGET_BYTES
    print("  result: " + ("within target" if ok else "OVER TARGET"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
