"""cohort.yaml validation: one-line errors naming the key, with the nearest valid key."""

from __future__ import annotations

from pathlib import Path

import pytest

from medweave.config import load_cohort_config, parse_cohort_config
from medweave.errors import InputError

BASE = {
    "index": {"rule": "column", "table": "index.parquet"},
    "outcome": {"binary": {"column": "outcome"}},
}


def test_minimal_config() -> None:
    config = parse_cohort_config(BASE)
    assert config.lookback_days == 365 and config.index.id_column == "patient_id"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lookbak_days": 3}, "lookbak_days: unknown key; did you mean 'lookback_days'?"),
        ({"lookback_days": 0}, "lookback_days: Input should be greater than 0 (got 0)"),
        (
            {"outcome": {"binary": {"colum": "y"}}},
            "outcome.binary.colum: unknown key; did you mean 'column'?",
        ),
        (
            {"index": {"rule": "colum", "table": "t"}},
            "index.rule: Input should be 'column', 'first_occurrence' or 'fixed' (got 'colum')",
        ),
        (
            {"index": {"rule": "fixed", "table": "t"}},
            "index: rule 'fixed' needs 'date' (YYYY-MM-DD)",
        ),
        ({"outcome": {}}, "outcome: name at least one of 'binary' or 'survival'"),
        (
            {"index": {"rule": "column", "table": "t", "columns": ["site", "outcome"]}},
            "index: columns: 'outcome' is a column the cohort sets itself",
        ),
        (
            {"index": {"rule": "column", "table": "t", "columns": ["site", "site"]}},
            "index: columns: 'site' is named twice",
        ),
        (
            {
                "index": {
                    "rule": "first_occurrence",
                    "database": "o.duckdb",
                    "concepts": [1],
                    "columns": ["site"],
                }
            },
            "index: columns: patient columns come from the index table, and rule "
            "'first_occurrence' has none",
        ),
        (
            {"sources": [{"name": "a", "type": "h5add", "path": "x"}]},
            "sources[0].type: unknown source type 'h5add'; did you mean 'h5ad'?",
        ),
        (
            {"sources": [{"name": "a", "type": "h5ad", "paht": "x"}]},
            "sources[0].paht: unknown key; did you mean 'path'?",
        ),
        ({"sources": [{"name": "a", "type": "h5ad"}]}, "sources[0].path: Field required"),
        (
            {
                "sources": [
                    {"name": "a", "type": "h5ad", "path": "x"},
                    {"name": "a", "type": "h5ad", "path": "y"},
                ]
            },
            "name 'a' is used twice",
        ),
    ],
)
def test_errors_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_cohort_config({**BASE, **change})
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_index_columns() -> None:
    config = parse_cohort_config({**BASE, "index": {**BASE["index"], "columns": ["site"]}})
    assert config.index.columns == ["site"]
    assert parse_cohort_config(BASE).index.columns == []


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "cohort.yaml"
    bad.write_text("index: [unclosed\n")
    with pytest.raises(InputError, match=r"cohort.yaml: line \d+ is not valid YAML"):
        load_cohort_config(bad)
    bad.write_text("index: {rule: column, table: t}\noutcome: {binary: {column: y}}\nsoures: []\n")
    with pytest.raises(
        InputError, match=r"^cohort.yaml: soures: unknown key; did you mean 'sources'\?"
    ):
        load_cohort_config(bad)
    with pytest.raises(InputError, match="file not found"):
        load_cohort_config(tmp_path / "missing.yaml")


def test_synth_writes_a_valid_cohort_yaml(cohort_dir: Path) -> None:
    config = load_cohort_config(cohort_dir / "cohort.yaml")
    assert [s.type for s in config.sources] == ["omop", "dicom", "h5ad", "exposures"]
