"""Image sources, what they let in: value checks (finite values, images with no
information), DICOM files cut short after their header, manifest dates, symbolic links,
and paths with spaces and accents. (test_imaging.py covers reading and loading.)"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medweave.errors import InputError
from medweave.sources import _imload
from medweave.sources._checks import DECLARED
from medweave.sources._dicom import find_dicom_files
from medweave.sources._imload import nifti_info
from medweave.sources._studies import ValueSummary
from tests.sources.broken.imaging import write_ct
from tests.sources.test_imaging import audit_of, make_ctx, read


def test_every_image_reader_declares_its_value_checks() -> None:
    for reader, unit in (("dicom", "pixels"), ("nifti", "voxels"), ("image", "pixels")):
        (checks,) = DECLARED[reader]
        assert checks.rule(unit).severity == "error" and checks.rule(unit).finite
        judged = checks.rule("image")
        assert judged.severity == "warn" and judged.audit_reason("no_information") == (
            "no_information"
        )


# --- DICOM ------------------------------------------------------------------------------------


def _cut_after_header(folder: Path) -> Path:
    """Cut where the image pixel module starts: no Rows, no PixelData, a CT SOP class."""
    path = write_ct(folder / "cut.dcm", patient="p1")
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\x28\x00\x02\x00")])
    return path


def _meta_only(folder: Path) -> Path:
    path = write_ct(folder / "meta.dcm", patient="p1")
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\x08\x00")])  # the data set's first group, 0008
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_cut_after_header, r"cut\.dcm: tag PixelData is missing but the file is an image"),
        (_meta_only, r"meta\.dcm: holds only its file meta header"),
    ],
)
def test_dicom_cut_short_after_its_header_is_an_error(
    tmp_path: Path, make: Any, message: str
) -> None:
    folder = tmp_path / "in"
    make(folder)
    good = write_ct(folder / "good.dcm", patient="p2")
    with pytest.raises(InputError, match=message):
        read("dicom", make_ctx(tmp_path, ["p1", "p2"]), path="in")
    ctx = make_ctx(tmp_path, ["p1", "p2"])
    block = read("dicom", ctx, path="in", on_error="skip")
    assert block.paths == [str(good)]
    assert audit_of(ctx)["excluded"] == {"unreadable": 1}  # not counted as no_image


def test_constant_dicom_is_left_out_with_a_warning_and_an_older_study_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flat = np.full((8, 8), 1024, dtype=np.uint16)  # 0 HU everywhere after the rescale
    write_ct(tmp_path / "s" / "new.dcm", patient="p1", date="20200301", pixels=flat)
    older = write_ct(tmp_path / "s" / "old.dcm", patient="p1", date="20190301")
    write_ct(tmp_path / "s" / "only.dcm", patient="p2", date="20200301", pixels=flat)
    caplog.set_level(logging.WARNING, logger="medweave.sources")
    ctx = make_ctx(tmp_path, ["p1", "p2"])
    block = read("dicom", ctx, path="s")  # a judgement call: not an error under raise
    assert block.ids == ["p1"] and block.paths == [str(older)]
    audit = audit_of(ctx)
    assert audit["excluded"] == {"no_information": 2}
    assert audit["patients_missing"] == {"no_usable_study: no_information": 1}
    assert "new.dcm (every one of its 64 pixels is 0)" in caplog.text
    assert "holds no information" in caplog.text


def test_dicom_pixels_of_every_file_of_a_series_are_checked(tmp_path: Path) -> None:
    from tests.sources.test_imaging import write_series

    hu = np.random.default_rng(0).integers(-500, 500, size=(4, 6, 5)).astype(np.float64)
    write_series(tmp_path / "ser", hu, patient="ps", names=[f"s{k}.dcm" for k in range(4)])
    ctx = make_ctx(tmp_path, ["ps"], dates=["2019-06-01"])
    assert read("dicom", ctx, path="ser").ids == ["ps"]
    write_series(tmp_path / "flat", hu * 0, patient="ps", names=[f"s{k}.dcm" for k in range(4)])
    ctx = make_ctx(tmp_path, ["ps"], dates=["2019-06-01"])
    assert read("dicom", ctx, path="flat").ids == []
    assert audit_of(ctx)["excluded"] == {"no_information": 4}  # the series' four files


def test_symlinked_folders_are_followed_once(tmp_path: Path) -> None:
    elsewhere = tmp_path / "archive" / "p1"
    write_ct(elsewhere / "a.dcm", patient="p1")
    root = tmp_path / "scans"
    write_ct(root / "p2" / "b.dcm", patient="p2")
    os.symlink(elsewhere, root / "p1")  # a linked patient folder
    os.symlink(root / "p1", root / "p1 copy")  # a second link to it (read once, first by name)
    os.symlink(root, root / "p2" / "loop")  # a link back up the tree
    files = find_dicom_files(root)
    assert [f.relative_to(root).as_posix() for f in files] == ["p1/a.dcm", "p2/b.dcm"]
    ctx = make_ctx(tmp_path, ["p1", "p2"])
    block = read("dicom", ctx, path="scans")
    assert block.ids == ["p1", "p2"]
    assert audit_of(ctx)["rows_read"] == 2 and audit_of(ctx)["rows_used"] == 2


# --- NIfTI --------------------------------------------------------------------------------------


def _nifti(path: Path, data: np.ndarray, *, slope: float = 1.0, inter: float = 0.0) -> None:
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def _manifest(base: Path, rows: list[tuple[str, str, str]], name: str = "m.csv") -> str:
    pd.DataFrame(rows, columns=["patient_id", "path", "date"]).to_csv(base / name, index=False)
    return name


def test_nifti_values_are_tallied_in_chunks_and_scaled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = np.random.default_rng(4).normal(size=(5, 6, 7)).astype(np.float64)
    data[2, 3, 4] = np.nan
    for name in ("v.nii", "v.nii.gz"):
        _nifti(tmp_path / name, data, slope=2.0, inter=1.0)
        monkeypatch.setattr(_imload, "_CHUNK", 7)  # chunks cut values in two
        values = ValueSummary("voxels")
        nifti_info(tmp_path / name, values=values)
        finite = data[np.isfinite(data)] * 2.0 + 1.0
        assert values.n == data.size and values.non_finite == 1
        assert values.low == pytest.approx(finite.min())
        assert values.high == pytest.approx(finite.max())
    stored = np.full((4, 4, 4), 3, dtype=np.int16)
    _nifti(tmp_path / "c.nii", stored, slope=2.0, inter=1.0)
    values = ValueSummary("voxels")
    nifti_info(tmp_path / "c.nii", values=values)
    assert (values.low, values.high) == (7.0, 7.0)  # in scaled units, as models see them


def test_nifti_nan_is_an_error_and_a_flat_volume_a_judgement_call(tmp_path: Path) -> None:
    nan = np.full((4, 4, 4), np.nan, dtype=np.float32)
    _nifti(tmp_path / "i" / "nan.nii.gz", nan)
    _nifti(tmp_path / "i" / "zero.nii", np.zeros((4, 4, 4), dtype=np.float32))
    _nifti(tmp_path / "i" / "ok.nii", np.arange(64, dtype=np.float32).reshape(4, 4, 4))
    m = _manifest(
        tmp_path,
        [
            ("n1", "nan.nii.gz", "2020-01-01"),
            ("n2", "zero.nii", "2020-01-01"),
            ("n3", "ok.nii", "2020-01-01"),
        ],
    )
    ids = ["n1", "n2", "n3"]
    with pytest.raises(InputError, match=r"nan\.nii\.gz \(64 of 64 voxels\): voxels nan is not"):
        read("nifti", make_ctx(tmp_path, ids), path="i", manifest=m)
    ctx = make_ctx(tmp_path, ids)
    block = read("nifti", ctx, path="i", manifest=m, on_error="skip")
    assert block.ids == ["n3"]
    audit = audit_of(ctx)
    assert audit["excluded"] == {"no_information": 1, "voxels:non_finite": 1}
    assert audit["patients_missing"] == {
        "no_usable_study: no_information": 1,
        "no_usable_study: voxels:non_finite": 1,
    }


def test_manifest_dates_are_iso_and_ambiguous_ones_refused(tmp_path: Path) -> None:
    _nifti(tmp_path / "i" / "ok.nii", np.arange(64, dtype=np.float32).reshape(4, 4, 4))
    rows = [("n1", "ok.nii", "20200102"), ("n2", "ok.nii", "2020-01-02T10:30:00")]
    ctx = make_ctx(tmp_path, ["n1", "n2"])
    block = read("nifti", ctx, path="i", manifest=_manifest(tmp_path, rows))
    assert [m["days_before_index"] for m in block.meta["images"].values()] == [151, 151]
    rows += [("n3", "ok.nii", "2020-01-02"), ("n4", "ok.nii", "02/03/2020")]
    m = _manifest(tmp_path, rows)
    with pytest.raises(InputError, match=r"m\.csv: line 5: date '02/03/2020' is ambiguous"):
        read("nifti", make_ctx(tmp_path, ["n1", "n2", "n3", "n4"]), path="i", manifest=m)


# --- paths --------------------------------------------------------------------------------------


def test_paths_with_spaces_and_accents(tmp_path: Path) -> None:
    base = tmp_path / "données patients"
    dcm = write_ct(base / "scans é" / "série 1" / "coupe n°1.dcm", patient="p1")
    ctx = make_ctx(base, ["p1"])
    assert read("dicom", ctx, path="scans é").paths == [str(dcm)]
    _nifti(base / "IRM cérébrale" / "tête 1.nii.gz", np.eye(4, dtype=np.float32)[:, :, None])
    (base / "photos").mkdir()
    Image.fromarray(np.eye(8, dtype=np.uint8) * 200).save(base / "photos" / "peau à droite.png")
    for kind, folder, file in (
        ("nifti", "IRM cérébrale", "tête 1.nii.gz"),
        ("image", "photos", "peau à droite.png"),
    ):
        m = _manifest(base, [("p1", file, "2020-01-01")], name=f"liste {kind} é.csv")
        block = read(kind, make_ctx(base, ["p1"]), path=folder, manifest=m)
        assert block.paths == [str(base / folder / file)]


def test_symlinked_folder_under_a_manifest_root_is_inside(tmp_path: Path) -> None:
    Image.fromarray(np.eye(8, dtype=np.uint8) * 200).save(tmp_path / "elsewhere.png")
    root = tmp_path / "pics"
    (root / "linked").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere.png", root / "linked" / "a.png")
    m = _manifest(
        tmp_path, [("p1", "linked/a.png", "2020-01-01"), ("p2", "../x.png", "2020-01-01")]
    )
    with pytest.raises(InputError, match=r"line 3: .*x\.png is not under"):
        read("image", make_ctx(tmp_path, ["p1", "p2"]), path="pics", manifest=m)
    ctx = make_ctx(tmp_path, ["p1", "p2"])
    block = read("image", ctx, path="pics", manifest=m, on_error="skip")
    assert block.ids == ["p1"] and audit_of(ctx)["excluded"] == {"outside_path": 1}
