"""Cohort and ModalityBlock: alignment at the door, presence masks, save/load, MuData."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medweave.cohort import Audit, Cohort, ModalityBlock
from medweave.errors import InputError


def _patients(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "index_date": pd.date_range("2020-01-01", periods=n),
            "outcome": [i % 2 == 0 for i in range(n)],
        }
    )


def _block(ids: list[str], p: int = 3, name: str = "labs") -> ModalityBlock:
    x = np.arange(len(ids) * p, dtype=float).reshape(len(ids), p)
    names = [f"{name}_{j}" for j in range(p)]
    return ModalityBlock(name=name, kind="tabular", ids=ids, x=x, feature_names=names)


def test_block_is_aligned_with_presence_mask() -> None:
    cohort = Cohort(_patients(), modalities={"labs": _block(["p3", "p1"])})
    block = cohort.modalities["labs"]
    assert block.ids == cohort.ids
    assert block.present.tolist() == [False, True, False, True, False]
    assert np.isnan(block.x[0]).all()  # absent rows are NaN, never zeros pretending to be data
    np.testing.assert_array_equal(block.x[3], [0, 1, 2])
    assert cohort.presence().loc["p1", "labs"]


def test_block_with_unknown_ids_is_an_error_naming_it() -> None:
    with pytest.raises(InputError, match=r"block 'labs'.*'zz'.*5 patients"):
        Cohort(_patients(), modalities={"labs": _block(["p1", "zz"])})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": np.zeros((3, 2))}, r"x has shape \(3, 2\), expected \(2, p\)"),
        ({"feature_names": ["a"]}, "2 columns but 1 feature names"),
        ({"ids": ["a", "a"]}, "'a' appears more than once"),
        ({"kind": "video"}, "kind 'video'"),
        ({"present": np.ones(3, bool)}, r"present has shape \(3,\)"),
    ],
)
def test_block_validates_at_the_door(kwargs: dict, match: str) -> None:
    args = {
        "name": "b",
        "kind": "tabular",
        "ids": ["a", "b"],
        "x": np.zeros((2, 2)),
        "feature_names": ["f", "g"],
        **kwargs,
    }
    with pytest.raises(InputError, match=match):
        ModalityBlock(**args)


def test_duplicate_patients_rejected() -> None:
    patients = _patients()
    patients.loc[4, "patient_id"] = "p0"
    with pytest.raises(InputError, match="'p0' appears more than once"):
        Cohort(patients)


def test_save_load_round_trip(tmp_path: Path) -> None:
    audit = Audit()
    audit.read("labs", 10)
    audit.exclude_rows("labs", "after_index", 3)
    images = ModalityBlock(
        name="ct",
        kind="image",
        ids=["p0", "p2"],
        x=np.zeros((2, 0)),
        feature_names=[],
        paths=["a.dcm", "b.dcm"],
    )
    cohort = Cohort(
        _patients(), modalities={"labs": _block(["p1", "p2"]), "ct": images}, audit=audit
    )
    cohort.save(tmp_path / "c")
    back = Cohort.load(tmp_path / "c")
    pd.testing.assert_frame_equal(back.patients, cohort.patients)
    for name in ("labs", "ct"):
        a, b = cohort.modalities[name], back.modalities[name]
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.present, b.present)
        assert a.feature_names == b.feature_names and a.kind == b.kind
    assert back.modalities["ct"].paths == ["a.dcm", None, "b.dcm", None, None]
    assert back.audit.to_dict() == cohort.audit.to_dict()


def test_load_rejects_other_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a medweave cohort folder"):
        Cohort.load(tmp_path)


def test_mudata_round_trip() -> None:
    cohort = Cohort(
        _patients(),
        modalities={
            "labs": _block(["p1", "p2", "p4"]),
            "genes": _block(["p0", "p1", "p2", "p3", "p4"], p=4, name="genes"),
        },
    )
    mdata = cohort.to_mudata()
    assert mdata.mod["labs"].n_obs == 3  # only patients who have the modality
    assert mdata.n_obs == 5
    assert mdata.obsm["labs"].sum() == 3  # MuData's presence map
    back = Cohort.from_mudata(mdata)
    assert back.ids == cohort.ids
    np.testing.assert_array_equal(
        back.modalities["labs"].present, cohort.modalities["labs"].present
    )
    np.testing.assert_array_equal(
        np.nan_to_num(back.modalities["labs"].x, nan=-1),
        np.nan_to_num(cohort.modalities["labs"].x, nan=-1),
    )
    assert back.patients["outcome"].tolist() == cohort.patients["outcome"].tolist()


def test_mudata_writes_to_h5mu_and_reads_back(tmp_path: Path) -> None:
    """The standard MuData file: dates travel as ISO strings and come back as dates."""
    import mudata

    cohort = Cohort(_patients(), modalities={"labs": _block(["p1", "p2", "p4"])})
    cohort.to_mudata().write(tmp_path / "cohort.h5mu")
    back = Cohort.from_mudata(mudata.read_h5mu(tmp_path / "cohort.h5mu"))
    assert back.ids == cohort.ids
    pd.testing.assert_series_equal(back.patients["index_date"], cohort.patients["index_date"])
    np.testing.assert_array_equal(
        back.modalities["labs"].present, cohort.modalities["labs"].present
    )


def test_take_restricts_patients_and_blocks() -> None:
    cohort = Cohort(_patients(), modalities={"labs": _block(["p1", "p3"])})
    sub = cohort.take([3, 0])
    assert sub.ids == ["p3", "p0"]
    assert sub.modalities["labs"].present.tolist() == [True, False]
    np.testing.assert_array_equal(sub.modalities["labs"].x[0], cohort.modalities["labs"].x[3])


def _sequence(ids: list[str] | None = None) -> ModalityBlock:
    events = pd.DataFrame(
        {
            "patient_id": ["p1", "p1", "p3", "p4"],
            "days_before_index": np.array([30, 2, 5, 0], dtype=np.int32),
            "code": ["measurement:LOINC/1988-5", "visit:Visit/IP", "drug:RxNorm/8640", "x:Y/1"],
            "value": [4.2, np.nan, np.nan, 1.0],
        }
    )
    return ModalityBlock(
        name="seq",
        kind="sequence",
        ids=ids or ["p1", "p3", "p4"],
        x=np.zeros((len(ids or "abc"), 0)),
        feature_names=[],
        events=events,
    )


def test_sequence_events_survive_save_load_take_and_mudata(tmp_path: Path) -> None:
    labs = _block(["p0", "p1", "p2"])
    cohort = Cohort(_patients(), modalities={"seq": _sequence(), "labs": labs})
    assert cohort.modalities["seq"].present.tolist() == [False, True, False, True, True]
    cohort.save(tmp_path / "c")
    back = Cohort.load(tmp_path / "c")
    seq = back.modalities["seq"]
    assert seq.kind == "sequence" and seq.x.shape == (5, 0)
    pd.testing.assert_frame_equal(seq.events, cohort.modalities["seq"].events)
    np.testing.assert_array_equal(seq.present, cohort.modalities["seq"].present)
    # take (a fold) and reindex keep the events of the kept patients only.
    sub = back.take([3, 0, 2])
    assert sub.modalities["seq"].present.tolist() == [True, False, False]
    assert sub.modalities["seq"].events["patient_id"].tolist() == ["p3"]
    block = _sequence()
    block.present[1] = False  # p3's events are not read as data: reindex drops them
    moved = block.reindex(["p4", "p1", "p3", "p9"])
    assert moved.events["patient_id"].tolist() == ["p1", "p1", "p4"]
    assert moved.present.tolist() == [True, True, False, False]
    mdata = cohort.to_mudata()
    assert len(mdata.mod["seq"].uns["events"]) == 4
    again = Cohort.from_mudata(mdata)
    pd.testing.assert_frame_equal(again.modalities["seq"].events, cohort.modalities["seq"].events)
    np.testing.assert_array_equal(again.modalities["seq"].present, cohort.modalities["seq"].present)


@pytest.mark.parametrize(
    ("events", "match"),
    [
        (None, "a sequence block needs events"),
        (pd.DataFrame({"patient_id": ["p1"], "code": ["a"]}), "lack the column"),
        (
            pd.DataFrame(
                {"patient_id": ["zz"], "days_before_index": [1], "code": ["a"], "value": [0.0]}
            ),
            r"events of 1 patient\(s\) not among the block's 3 patient ids",
        ),
    ],
)
def test_sequence_block_validates_its_events(events: pd.DataFrame | None, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        ModalityBlock(
            name="seq",
            kind="sequence",
            ids=["p1", "p3", "p4"],
            x=np.zeros((3, 0)),
            feature_names=[],
            events=events,
        )
    assert "zz" not in str(err.value)  # no patient identifiers in messages
