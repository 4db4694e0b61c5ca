"""Image sources: the dicom, nifti and image readers, de-identification and load_image.

Real files this project did not write (pydicom's and nibabel's bundled test data, read
from the installed wheels, never downloaded), files written here with pydicom and Pillow,
and the synthetic cohort.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydantic import ValidationError
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from medweave.cohort import Audit, ModalityBlock
from medweave.errors import InputError
from medweave.sources import ReadContext, available, get
from medweave.sources.imaging import DicomSpec, deidentify, load_image
from medweave.synth import synthesize

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
INDEX_DATE = "2020-06-01"


def bundled(name: str) -> Path:
    """A pydicom test file shipped inside the installed wheel (no download)."""
    found = get_testdata_file(name, download=False)
    assert isinstance(found, str), f"{name} is not bundled with the installed pydicom"
    return Path(found)


def make_ctx(
    base: Path, ids: list[str], *, dates: list[str] | None = None, lookback: int = 3650
) -> ReadContext:
    index = pd.DataFrame(
        {
            "patient_id": ids,
            "index_date": pd.to_datetime(dates or [INDEX_DATE] * len(ids)),
        }
    )
    return ReadContext(index=index, lookback_days=lookback, audit=Audit(), base_dir=base)


def read(kind: str, ctx: ReadContext, **keys: Any) -> ModalityBlock:
    reader, spec_cls = get(kind)
    return reader(spec_cls(name="img", type=kind, **keys), ctx)


def resampled(n: int, old: float, new: float) -> float:
    """Voxels along an axis after resampling: the extent between the outer voxel centres."""
    return (n - 1) * old / new + 1


def audit_of(ctx: ReadContext) -> dict[str, Any]:
    return ctx.audit.to_dict()["sources"]["img"]


def copy_dicom(
    src: Path, dst: Path, *, patient: str, date: str | None = "20200101", **tags: Any
) -> Path:
    """A copy of ``src`` with a chosen PatientID and StudyDate (None: no date tags at all)."""
    ds = pydicom.dcmread(src)
    ds.PatientID = patient
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        if keyword in ds:
            delattr(ds, keyword)
    if date is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.StudyDate = date
    with warnings.catch_warnings():  # pydicom warns about the invalid values tests write
        warnings.simplefilter("ignore")
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


def test_readers_are_registered_with_strict_specs() -> None:
    types = available()
    assert {"dicom", "nifti", "image"} <= set(types)
    with pytest.raises(ValidationError):
        DicomSpec(name="x", type="dicom", path="p", modalty="CT")  # type: ignore[call-arg]
    _, spec = get("nifti")
    with pytest.raises(ValidationError):
        spec(name="x", type="nifti", path="p")  # the manifest is required


# --- pydicom's bundled files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundled")
    copy_dicom(bundled("CT_small.dcm"), root / "ct" / "CT_small.dcm", patient="p-ct")
    copy_dicom(bundled("MR_small.dcm"), root / "mr" / "MR_small.dcm", patient="p-mr")
    copy_dicom(bundled("examples_rgb_color.dcm"), root / "us" / "rgb.dcm", patient="p-us")
    copy_dicom(bundled("rtdose.dcm"), root / "rt" / "rtdose.dcm", patient="p-rt")
    copy_dicom(bundled("test-SR.dcm"), root / "sr" / "report.dcm", patient="p-ct")
    return root


def test_dicom_reader_on_bundled_files(bundled_dir: Path) -> None:
    ids = ["p-ct", "p-mr", "p-us", "p-rt", "p-none"]
    # The RT dose is a 3-D volume among 2-D images: one source holds one dimensionality.
    with pytest.raises(
        InputError,
        match=r"rt/rtdose\.dcm: a 3-D image \(shape 15 x 10 x 10\) in source 'img', whose "
        r"other 3 images are 2-D",
    ):
        read("dicom", make_ctx(bundled_dir, ids), path=".")
    ctx = make_ctx(bundled_dir, ids)
    block = read("dicom", ctx, path=".", on_error="skip")
    assert block.kind == "image" and block.x.shape == (3, 0) and block.feature_names == []
    assert block.ids == ["p-ct", "p-mr", "p-us"]  # cohort order
    assert block.paths is not None
    assert [Path(p).name for p in block.paths if p] == ["CT_small.dcm", "MR_small.dcm", "rgb.dcm"]
    img = block.meta["images"]
    assert img["p-ct"]["modality"] == "CT" and img["p-ct"]["shape"] == [128, 128]
    assert img["p-ct"]["spacing"] == pytest.approx([0.661468, 0.661468])
    assert img["p-mr"]["modality"] == "MR" and img["p-mr"]["shape"] == [64, 64]
    assert img["p-us"]["modality"] == "US" and img["p-us"]["channels"] == 3
    assert all(m["days_before_index"] == 152 for m in img.values())  # 2020-01-01 .. 06-01
    audit = audit_of(ctx)
    assert audit["rows_read"] == 5 and audit["rows_used"] == 3
    assert audit["excluded"] == {"no_image": 1, "other_dimensions": 1}
    assert audit["patients"] == 3
    assert audit["patients_missing"] == {"no_study": 1, "no_usable_study: other_dimensions": 1}
    rt = read("dicom", make_ctx(bundled_dir, ["p-rt"]), path="rt").meta["images"]["p-rt"]
    assert rt["kind"] == "multiframe" and rt["shape"] == [15, 10, 10]
    assert rt["spacing"] == pytest.approx([5.0, 10.0, 10.0])


def test_modality_filter_keeps_one_modality(bundled_dir: Path) -> None:
    ctx = make_ctx(bundled_dir, ["p-ct", "p-mr", "p-us", "p-rt"])
    block = read("dicom", ctx, path=".", modality="mr")
    assert block.ids == ["p-mr"]
    assert audit_of(ctx)["excluded"] == {"no_image": 1, "other_modality": 3}


def test_load_ct_gives_hounsfield_units(bundled_dir: Path) -> None:
    path = bundled_dir / "ct" / "CT_small.dcm"
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) != 0  # the rescale matters for this file
    out = load_image(path, intensity="window", window=(-3000.0, 3000.0))
    assert out.shape == (1, 128, 128) and out.dtype == np.float32
    np.testing.assert_allclose(out[0] * 6000.0 - 3000.0, hu, atol=0.05)
    z = load_image(path)  # default z-score
    assert abs(float(z.mean())) < 1e-4 and float(z.std()) == pytest.approx(1.0, abs=1e-3)


def test_load_multiframe_and_colour(bundled_dir: Path) -> None:
    ds = pydicom.dcmread(bundled_dir / "rt" / "rtdose.dcm")
    dose = ds.pixel_array * float(ds.DoseGridScaling)
    top = float(dose.max())
    out = load_image(bundled_dir / "rt" / "rtdose.dcm", intensity="window", window=(0.0, top))
    assert out.shape == (1, 15, 10, 10)
    np.testing.assert_allclose(out[0] * top, dose, rtol=1e-5, atol=1e-9)
    rgb = pydicom.dcmread(bundled_dir / "us" / "rgb.dcm").pixel_array.astype(np.float64)
    col = load_image(bundled_dir / "us" / "rgb.dcm", intensity="minmax")
    assert col.shape == (3, 240, 320)
    red = (rgb[..., 0] - rgb[..., 0].min()) / (rgb[..., 0].max() - rgb[..., 0].min())
    np.testing.assert_allclose(col[0], red, atol=1e-5)


def test_load_palette_and_monochrome1(tmp_path: Path) -> None:
    palette = bundled("examples_palette.dcm")
    ds = pydicom.dcmread(palette)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    out = load_image(palette, intensity="window", window=(0.0, 65535.0))
    assert out.shape == (3, 350, 800)
    np.testing.assert_allclose(out * 65535.0, np.moveaxis(rgb, -1, 0), atol=0.05)
    # MONOCHROME1: low values are bright; the loader inverts to the usual sense.
    mono1 = copy_dicom(
        bundled("CT_small.dcm"),
        tmp_path / "m1.dcm",
        patient="p",
        PhotometricInterpretation="MONOCHROME1",
    )
    ct = pydicom.dcmread(mono1)
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    inv = load_image(mono1, intensity="window", window=(-3000.0, 3000.0))[0] * 6000.0 - 3000.0
    np.testing.assert_allclose(inv, hu.max() + hu.min() - hu, atol=0.05)


def write_enhanced(path: Path, hu: np.ndarray) -> None:
    """An enhanced multi-frame file: frames stored top-down, per-frame rescale in the
    functional groups, spacing in the shared groups (as scanners write them)."""
    n = hu.shape[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    uid = generate_uid(entropy_srcs=["enhanced"])
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["enhanced", "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["enhanced", "series"])
    ds.PatientID, ds.Modality, ds.StudyDate = "pe", "CT", "20200101"
    ds.NumberOfFrames, ds.Rows, ds.Columns = n, hu.shape[1], hu.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], "4.0"
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, stored = [], []
    for f in range(n):
        k = n - 1 - f  # stored frame f holds slice k: positions descend
        slope, intercept = (1.0, -1024.0) if k % 2 == 0 else (2.0, -2048.0)
        stored.append(np.round((hu[k] - intercept) / slope).astype(np.uint16))
        item, position, value = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, 4.0 * k]
        value.RescaleSlope, value.RescaleIntercept = str(slope), str(intercept)
        item.PlanePositionSequence = Sequence([position])
        item.PixelValueTransformationSequence = Sequence([value])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack(stored).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_enhanced_multiframe_is_ordered_and_rescaled_per_frame(
    tmp_path: Path, series_volume: np.ndarray
) -> None:
    write_enhanced(tmp_path / "enh.dcm", series_volume)
    ctx = make_ctx(tmp_path, ["pe"])
    block = read("dicom", ctx, path="enh.dcm")
    meta = block.meta["images"]["pe"]
    assert meta["kind"] == "multiframe" and meta["shape"] == [5, 16, 12]
    assert meta["spacing"] == pytest.approx([4.0, 0.5, 0.5])
    out = load_image(tmp_path / "enh.dcm", intensity="window", window=(-3000.0, 3000.0))
    np.testing.assert_allclose(out[0] * 6000.0 - 3000.0, series_volume, atol=0.05)


def test_series_date_stands_in_for_a_missing_study_date(tmp_path: Path) -> None:
    copy_dicom(
        bundled("MR_small.dcm"), tmp_path / "s.dcm", patient="p", date=None, SeriesDate="20200201"
    )
    ctx = make_ctx(tmp_path, ["p"])
    block = read("dicom", ctx, path=".")
    assert block.meta["images"]["p"]["days_before_index"] == 121


def test_constant_image_normalises_without_nan(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 9), 7, dtype=np.uint8)).save(tmp_path / "flat.png")
    for intensity in ("zscore", "minmax"):
        out = load_image(tmp_path / "flat.png", intensity=intensity)  # type: ignore[arg-type]
        assert out.shape == (1, 8, 9) and np.isfinite(out).all()


def test_load_resamples_and_resizes_deterministically(bundled_dir: Path) -> None:
    path = bundled_dir / "ct" / "CT_small.dcm"  # 128 x 128 at 0.661468 mm
    coarse = load_image(path, spacing=(1.322936, 1.322936))
    assert coarse.shape[0] == 1 and coarse.shape[1] == coarse.shape[2]
    assert abs(coarse.shape[1] - resampled(128, 0.661468, 1.322936)) <= 0.5
    padded = load_image(path, spacing=(1.322936, 1.322936), spatial_size=(80, 50))
    assert padded.shape == (1, 80, 50)
    resized = load_image(path, spatial_size=(32, 40), intensity="minmax")
    assert resized.shape == (1, 32, 40)
    assert resized.min() >= 0.0 and resized.max() <= 1.0
    again = load_image(path, spatial_size=(32, 40), intensity="minmax")
    assert np.array_equal(resized, again)


def test_load_image_rejects_bad_options(bundled_dir: Path) -> None:
    path = bundled_dir / "ct" / "CT_small.dcm"
    with pytest.raises(InputError, match="spatial_size has 3 values"):
        load_image(path, spatial_size=(8, 8, 8))
    with pytest.raises(InputError, match="needs window"):
        load_image(path, intensity="window")  # CT_small has no WindowCenter
    with pytest.raises(InputError, match="intensity"):
        load_image(path, intensity="gamma")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="low < high"):
        load_image(path, intensity="window", window=(100.0, -100.0))
    with pytest.raises(InputError, match="not found"):
        load_image(bundled_dir / "nothing.dcm")


# --- a multi-file series ------------------------------------------------------------------------


def write_series(folder: Path, hu: np.ndarray, *, patient: str, names: list[str]) -> None:
    """Slices k = 0..n-1 of ``hu`` on a tilted plane, k ascending along the normal.

    InstanceNumber runs backwards and each slice has its own rescale, so stacking by
    file name, by InstanceNumber or without the rescale gives a different volume.
    """
    folder.mkdir(parents=True, exist_ok=True)
    angle = np.deg2rad(20.0)
    row_dir, col_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(angle), np.sin(angle)])
    normal = np.cross(row_dir, col_dir)
    series_uid = generate_uid(entropy_srcs=[patient, "series"])
    study_uid = generate_uid(entropy_srcs=[patient, "study"])
    for k in range(hu.shape[0]):
        slope, intercept = (1.0, -1024.0) if k % 2 == 0 else (2.0, -2048.0)
        stored = np.round((hu[k] - intercept) / slope).astype(np.uint16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        uid = generate_uid(entropy_srcs=[patient, str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.PatientName, ds.Modality = patient, "Series^Patient", "CT"
        ds.StudyDate = "20190301"
        ds.SeriesNumber, ds.InstanceNumber = 3, hu.shape[0] - k
        origin = np.array([-10.0, 5.0, 30.0]) + 2.5 * k * normal
        ds.ImagePositionPatient = [round(float(v), 6) for v in origin]
        ds.ImageOrientationPatient = [*row_dir.tolist(), *[round(float(v), 8) for v in col_dir]]
        ds.PixelSpacing = [0.8, 0.9]
        ds.SliceThickness = "2.5"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = str(slope), str(intercept)
        ds.PixelData = stored.tobytes()
        pydicom.dcmwrite(folder / names[k], ds, enforce_file_format=True)


@pytest.fixture
def series_volume() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(-500, 500, size=(5, 16, 12)).astype(np.float64) * 2


def test_series_is_stacked_along_the_normal_with_rescale(
    tmp_path: Path, series_volume: np.ndarray
) -> None:
    names = ["c.dcm", "a.dcm", "e.dcm", "b.dcm", "d.dcm"]
    write_series(tmp_path / "ps" / "series3", series_volume, patient="ps", names=names)
    ctx = make_ctx(tmp_path, ["ps"], dates=["2019-06-01"])
    block = read("dicom", ctx, path="ps")
    assert block.paths == [str(tmp_path / "ps" / "series3")]  # the folder holds the series
    meta = block.meta["images"]["ps"]
    assert meta["kind"] == "series" and meta["n_files"] == 5
    assert meta["shape"] == [5, 16, 12]
    assert meta["spacing"] == pytest.approx([2.5, 0.8, 0.9], abs=1e-5)
    assert audit_of(ctx)["rows_used"] == 5
    out = load_image(block.paths[0], intensity="window", window=(-3000.0, 3000.0))
    assert out.shape == (1, 5, 16, 12)
    np.testing.assert_allclose(out[0] * 6000.0 - 3000.0, series_volume, atol=0.05)
    # The same series as a path list in shuffled order stacks the same way.
    files = [str(tmp_path / "ps" / "series3" / n) for n in sorted(names)]
    listed = load_image(os.pathsep.join(files), intensity="window", window=(-3000.0, 3000.0))
    assert np.array_equal(listed, out)


def test_series_with_other_files_is_stored_as_a_path_list(
    tmp_path: Path, series_volume: np.ndarray
) -> None:
    """Two series of different slice counts in one folder: each is a path list, and the
    default image size resamples both to one 3-D grid."""
    from medweave.models._prep_image import resolve_image_size

    names = [f"s{k}.dcm" for k in range(5)]
    write_series(tmp_path / "mixed", series_volume, patient="ps", names=names)
    others = [f"t{k}.dcm" for k in range(3)]
    write_series(tmp_path / "mixed", series_volume[:3], patient="pm", names=others)
    block = read(
        "dicom", make_ctx(tmp_path, ["ps", "pm"], dates=["2019-06-01", INDEX_DATE]), path="mixed"
    )
    assert block.paths is not None
    for listed, files in zip(block.paths, (names, others), strict=True):
        assert listed is not None and listed.split(os.pathsep) == [
            str(tmp_path / "mixed" / n) for n in files
        ]
    assert [block.meta["images"][p]["shape"] for p in block.ids] == [[5, 16, 12], [3, 16, 12]]
    size = resolve_image_size(block, "auto")
    assert size == (8, 16, 12)  # the median depth, 4, raised to the least of 8
    assert {load_image(str(p), spatial_size=size).shape for p in block.paths} == {(1, *size)}


def test_series_with_a_missing_slice(tmp_path: Path, series_volume: np.ndarray) -> None:
    names = [f"s{k}.dcm" for k in range(5)]
    write_series(tmp_path / "gap", series_volume, patient="ps", names=names)
    (tmp_path / "gap" / "s2.dcm").unlink()
    with pytest.raises(InputError, match=r"s3\.dcm.*ImagePositionPatient.*gap"):
        read("dicom", make_ctx(tmp_path, ["ps"], dates=["2019-06-01"]), path="gap")
    ctx = make_ctx(tmp_path, ["ps"], dates=["2019-06-01"])
    block = read("dicom", ctx, path="gap", on_error="skip")
    assert block.ids == []
    assert audit_of(ctx)["excluded"] == {"unreadable": 4}
    assert audit_of(ctx)["patients_missing"] == {"no_usable_study: unreadable": 1}


# --- which study: leakage guard, lookback, unknown patients -------------------------------------


def test_latest_study_on_or_before_the_index_date(tmp_path: Path) -> None:
    src = bundled("CT_small.dcm")
    for name, date in (("a", "20200110"), ("b", "20200301"), ("c", "20200601"), ("d", "20200602")):
        uid = generate_uid(entropy_srcs=[name])
        copy_dicom(
            src,
            tmp_path / "img" / f"{name}.dcm",
            patient="pl",
            date=date,
            StudyInstanceUID=uid,
            SeriesInstanceUID=generate_uid(entropy_srcs=[name, "series"]),
        )
    copy_dicom(src, tmp_path / "img" / "old.dcm", patient="po", date="20100101")
    copy_dicom(src, tmp_path / "img" / "stranger.dcm", patient="someone-else", date="20200101")
    ctx = make_ctx(tmp_path, ["pl", "po"], lookback=365)
    block = read("dicom", ctx, path="img")
    assert block.ids == ["pl"]
    assert block.paths == [str(tmp_path / "img" / "c.dcm")]  # on the index day is allowed
    assert block.meta["images"]["pl"]["days_before_index"] == 0
    audit = audit_of(ctx)
    assert audit["excluded"] == {
        "after_index": 1,
        "before_lookback": 1,
        "older_study": 2,
        "unknown_patient": 1,
    }
    assert audit["rows_read"] == 6 and audit["rows_used"] == 1
    assert audit["patients_missing"] == {"no_usable_study: before_lookback": 1}
    # A PatientID from a header that is not in the cohort is counted, never listed.
    assert "someone-else" not in repr(ctx.audit.to_dict())


def test_only_studies_after_the_index_date(tmp_path: Path) -> None:
    copy_dicom(bundled("MR_small.dcm"), tmp_path / "late.dcm", patient="pa", date="20200715")
    ctx = make_ctx(tmp_path, ["pa"])
    block = read("dicom", ctx, path="late.dcm")  # one file as the path
    assert block.ids == []
    assert audit_of(ctx)["excluded"] == {"after_index": 1}


# --- bad DICOM input ----------------------------------------------------------------------------


def _truncated(folder: Path) -> Path:
    path = copy_dicom(bundled("CT_small.dcm"), folder / "cut.dcm", patient="p1")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_dicom(folder: Path) -> Path:
    path = folder / "notes.dcm"
    path.write_text("this is a text file, not an image\n" * 20)
    return path


def _no_date(folder: Path) -> Path:
    return copy_dicom(bundled("CT_small.dcm"), folder / "nodate.dcm", patient="p1", date=None)


def _bad_pixel_spacing(folder: Path) -> Path:
    """PixelSpacing written as text (VR LO) that is not numbers: a malformed file."""
    path = copy_dicom(bundled("CT_small.dcm"), folder / "badps.dcm", patient="p1")
    ds = pydicom.dcmread(path)
    del ds.PixelSpacing
    ds.add_new(0x00280030, "LO", "x\\y")
    ds.save_as(path)
    return path


def _real_truncated(folder: Path) -> Path:
    path = folder / "MR_truncated.dcm"
    shutil.copy(bundled("MR_truncated.dcm"), path)
    return path


@pytest.mark.parametrize(
    ("make", "message", "reason"),
    [
        (_truncated, r"cut\.dcm: file is truncated: tag PixelData", "unreadable"),
        (_not_dicom, r"notes\.dcm: not a DICOM file", "unreadable"),
        (_no_date, r"nodate\.dcm: tag StudyDate is missing", "missing_date"),
        (_bad_pixel_spacing, r"badps\.dcm: tag PixelSpacing", "unreadable"),
        (_real_truncated, r"MR_truncated\.dcm: file is truncated", "unreadable"),
    ],
)
def test_bad_dicom_raises_or_is_skipped(
    tmp_path: Path, make: Any, message: str, reason: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = make(folder)
    good = copy_dicom(bundled("MR_small.dcm"), folder / "good.dcm", patient="p2")
    ids = ["p1", "p2", "4MR1"]  # 4MR1: MR_truncated's own PatientID
    with pytest.raises(InputError, match=message):
        read("dicom", make_ctx(tmp_path, ids), path="in")
    ctx = make_ctx(tmp_path, ids)
    block = read("dicom", ctx, path="in", on_error="skip")
    assert block.ids == ["p2"] and block.paths == [str(good)]
    audit = audit_of(ctx)
    assert audit["excluded"] == {reason: 1}
    assert audit["rows_read"] == 2 and audit["rows_used"] == 1
    assert bad.exists()


def test_bad_study_date_names_the_tag_not_the_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy_dicom(bundled("CT_small.dcm"), tmp_path / "d.dcm", patient="p1", date="2020XY01")
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # writing the bad value above was logged too
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match=r"d\.dcm: tag StudyDate is not a DICOM date") as err:
            read("dicom", make_ctx(tmp_path, ["p1"]), path="d.dcm")
    assert "2020XY01" not in str(err.value)
    # pydicom's own warnings and log records quote values: none may escape the reader.
    assert not any("2020XY01" in str(w.message) for w in seen)
    assert "2020XY01" not in caplog.text


def test_malformed_header_value_is_not_echoed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = copy_dicom(bundled("CT_small.dcm"), tmp_path / "w.dcm", patient="p1")
    ds = pydicom.dcmread(path)
    ds.add_new(0x00200013, "LO", "Secret7")  # InstanceNumber is an IS (an integer)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # read back with the IS VR
    ds.save_as(path, enforce_file_format=True)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        block = read("dicom", make_ctx(tmp_path, ["p1"]), path="w.dcm")
    # A bad InstanceNumber does not matter for a single image; pydicom's warning quoting
    # the value (it could be anything a sender put there) is not let through.
    assert block.ids == ["p1"] and block.meta["images"]["p1"]["modality"] == "CT"
    assert not any("Secret7" in str(w.message) for w in seen)
    assert "Secret7" not in caplog.text


# --- de-identification --------------------------------------------------------------------------


def test_deidentify_basic_profile(tmp_path: Path) -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.PatientBirthDate = "19470101"
    ds.InstitutionName = "Riverton General Hospital"
    ds.AccessionNumber = "ACC123"
    ds.OtherPatientIDs = "MRN-998877"
    observer = Dataset()
    observer.VerifyingObserverName = "Doe^Jane"
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.add_new(0x60000010, "US", 16)  # an overlay plane
    assert any(e.tag.is_private for e in ds)
    name, study_uid = str(ds.PatientName), ds.StudyInstanceUID
    assert name
    clean = deidentify(ds)
    assert str(ds.PatientName) == name  # the input is untouched
    assert str(clean.PatientName) == "" and clean.PatientID == "" and clean.PatientBirthDate == ""
    assert clean.AccessionNumber == "" and clean.StudyDate == ""
    assert "InstitutionName" not in clean and "OtherPatientIDs" not in clean
    assert str(clean.VerifyingObserverSequence[0].VerifyingObserverName) == ""
    assert not any(e.tag.is_private for e in clean)
    assert 0x60000010 not in clean
    assert clean.StudyInstanceUID != study_uid
    assert deidentify(ds).StudyInstanceUID == clean.StudyInstanceUID  # deterministic
    assert clean.file_meta.MediaStorageSOPInstanceUID == clean.SOPInstanceUID
    assert clean.PatientIdentityRemoved == "YES"
    assert clean.Modality == "CT" and clean.Rows == 128  # what the models need stays
    clean.save_as(tmp_path / "clean.dcm")  # still a valid file, pixels included
    again = pydicom.dcmread(tmp_path / "clean.dcm")
    assert np.array_equal(again.pixel_array, ds.pixel_array)
    text = repr(again) + repr(clean)
    for value in (name, "19470101", "Riverton", "ACC123", "MRN-998877", "Doe^Jane"):
        assert value not in text


# --- the synthetic cohort -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    synthesize(out, n_patients=60, seed=5, workers=1)
    return out


def _identifiers(files: list[Path]) -> set[str]:
    values: set[str] = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        name = str(ds.PatientName)
        values |= {name, *[p for p in name.split("^") if len(p) >= 3]}
        values |= {str(ds.PatientBirthDate), str(ds.InstitutionName), str(ds.AccessionNumber)}
    assert all(values) and len(values) > 10
    return values


def synth_ctx(synth: Path) -> ReadContext:
    index = pd.read_parquet(synth / "index.parquet")[["patient_id", "index_date"]]
    return ReadContext(index=index, lookback_days=1095, audit=Audit(), base_dir=synth)


def test_synthetic_cohort_imaged_patients(synth: Path) -> None:
    ctx = synth_ctx(synth)
    block = read("dicom", ctx, path="imaging")
    truth = pd.read_parquet(synth / "truth" / "patients.parquet")
    imaged = set(truth.loc[truth["has_imaging"], "patient_id"].astype(str))
    assert 0 < len(imaged) < 60
    assert set(block.ids) == imaged
    files = sorted((synth / "imaging").glob("*.dcm"))
    audit = audit_of(ctx)
    assert audit["rows_read"] == len(files) == audit["rows_used"] == len(imaged)
    assert audit["patients_missing"] == {"no_study": 60 - len(imaged)}
    for pid, path in zip(block.ids, block.paths or [], strict=True):
        meta = block.meta["images"][pid]
        assert path == str(synth / "imaging" / f"{pid}.dcm")
        assert meta["modality"] == "CT" and meta["shape"] == [128, 128]
        assert meta["spacing"] == pytest.approx([2.7, 2.7])
        assert 0 <= meta["days_before_index"] <= 60
    text = repr(block.meta) + repr(block) + repr(ctx.audit.to_dict())
    leaked = [v for v in _identifiers(files) if v in text]
    assert leaked == []
    out = load_image(
        block.paths[0] or "", spatial_size=(64, 64), intensity="window", window=(-1000.0, 400.0)
    )
    assert out.shape == (1, 64, 64) and out.min() >= 0.0 and out.max() <= 1.0


def test_synthetic_errors_name_the_file_but_no_identifier(synth: Path, tmp_path: Path) -> None:
    files = sorted((synth / "imaging").glob("*.dcm"))[:4]
    secrets = _identifiers(files)
    folder = tmp_path / "imaging"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    cut, nodate, baddate, badtag = (folder / f.name for f in files)
    cut.write_bytes(cut.read_bytes()[:5000])
    ds = pydicom.dcmread(nodate)
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(nodate)
    ds = pydicom.dcmread(baddate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.StudyDate = str(ds.PatientBirthDate)[:4] + "9999"
    secrets.add(ds.StudyDate)
    ds.save_as(baddate)
    ds = pydicom.dcmread(badtag)
    ds.Rows = 0
    ds.save_as(badtag)
    messages = []
    for bad in (cut, nodate, baddate, badtag):
        ctx = synth_ctx(synth)
        one = tmp_path / "one" / bad.name
        one.parent.mkdir(exist_ok=True)
        shutil.copy(bad, one)
        with pytest.raises(InputError) as err:
            read("dicom", ctx, path=str(one))
        messages.append(str(err.value))
        one.unlink()
    assert all(Path(m.split(":")[0]).name in {f.name for f in files} for m in messages)
    assert any("StudyDate" in m for m in messages) and any("truncated" in m for m in messages)
    leaked = [v for v in secrets if any(v in m for m in messages)]
    assert leaked == []
    ctx = synth_ctx(synth)
    block = read("dicom", ctx, path=str(folder), on_error="skip")
    assert block.ids == []
    assert audit_of(ctx)["excluded"] == {"unreadable": 2, "missing_date": 1, "bad_date": 1}
    assert [v for v in secrets if v in repr(ctx.audit.to_dict())] == []


# --- NIfTI --------------------------------------------------------------------------------------


@pytest.fixture
def nifti_dir(tmp_path: Path) -> Path:
    root = tmp_path / "nii"
    (root / "sub").mkdir(parents=True)
    for name in ("anatomical.nii", "example4d.nii.gz", "standard.nii.gz"):
        shutil.copy(NIBABEL_DATA / name, root / "sub" / name)
    pd.DataFrame(
        {
            "patient_id": ["n1", "n2", "n3", "n3", "n4", "stranger"],
            "path": [
                "sub/anatomical.nii",
                "sub/example4d.nii.gz",
                "sub/standard.nii.gz",
                str(root / "sub" / "anatomical.nii"),
                "sub/standard.nii.gz",
                "sub/standard.nii.gz",
            ],
            "date": [
                "2020-01-01",
                "20200201",
                "2019-01-01",
                "2019-05-01",
                "2020-07-01",
                "2020-01-01",
            ],
        }
    ).to_csv(tmp_path / "manifest.csv", index=False)
    return root


def test_nifti_manifest(nifti_dir: Path) -> None:
    ctx = make_ctx(nifti_dir.parent, ["n1", "n2", "n3", "n4"])
    block = read("nifti", ctx, path="nii", manifest="manifest.csv")
    assert block.ids == ["n1", "n2", "n3"]
    sub = nifti_dir / "sub"
    assert block.paths == [
        str(sub / "anatomical.nii"),
        str(sub / "example4d.nii.gz"),
        str(sub / "anatomical.nii"),
    ]
    img = block.meta["images"]
    assert img["n1"]["shape"] == [33, 41, 25] and img["n1"]["spacing"] == [2.0, 2.0, 2.0]
    assert img["n2"]["shape"] == [128, 96, 24] and img["n2"]["channels"] == 2
    assert img["n2"]["days_before_index"] == 121
    assert img["n3"]["days_before_index"] == 397
    audit = audit_of(ctx)
    assert audit["rows_read"] == 6 and audit["rows_used"] == 3
    assert audit["excluded"] == {"after_index": 1, "older_study": 1, "unknown_patient": 1}
    assert ctx.audit.to_dict()["excluded_patients"]["count"] == 1  # 'stranger', from the manifest


def _volume(path: Path, shape: tuple[int, ...], seed: int) -> None:
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def test_nifti_source_of_mixed_dimensionality_is_refused_by_build(tmp_path: Path) -> None:
    """A 2-D image among 3-D volumes (of different depths) is found when the source is
    read, naming the file — not when a model first resamples it; skip leaves it out."""
    (tmp_path / "nii").mkdir()
    rows = []
    for i, shape in enumerate([(8, 8, 6), (8, 8, 10), (8, 8)]):
        _volume(tmp_path / "nii" / f"p{i}.nii.gz", shape, i)
        rows.append({"patient_id": f"p{i}", "path": f"p{i}.nii.gz", "date": "2020-01-01"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    ids = ["p0", "p1", "p2"]
    with pytest.raises(
        InputError,
        match=r"p2\.nii\.gz: a 2-D image \(shape 8 x 8\) in source 'img', whose other 2 "
        r"images are 3-D \(1 such images\); .* on_error: skip",
    ):
        read("nifti", make_ctx(tmp_path, ids), path="nii", manifest="m.csv")
    ctx = make_ctx(tmp_path, ids)
    block = read("nifti", ctx, path="nii", manifest="m.csv", on_error="skip")
    assert block.ids == ["p0", "p1"] and len(block.paths or []) == 2
    assert set(block.meta["images"]) == {"p0", "p1"}
    audit = audit_of(ctx)
    assert audit["excluded"] == {"other_dimensions": 1} and audit["rows_used"] == 2
    assert audit["patients_missing"] == {"no_usable_study: other_dimensions": 1}


def test_load_nifti(nifti_dir: Path) -> None:
    path = nifti_dir / "sub" / "anatomical.nii"
    data = np.asarray(nib.load(path).get_fdata())  # type: ignore[attr-defined]
    lo, hi = float(data.min()) - 1, float(data.max()) + 1
    out = load_image(path, intensity="window", window=(lo, hi))
    assert out.shape == (1, 33, 41, 25)
    np.testing.assert_allclose(out[0] * (hi - lo) + lo, data, rtol=1e-5, atol=1e-3)
    four = load_image(nifti_dir / "sub" / "example4d.nii.gz", spacing=(4.0, 4.0, 4.4))
    assert four.shape[0] == 2  # two volumes, as channels
    for got, n, old, new in zip(
        four.shape[1:], (128, 96, 24), (2.0, 2.0, 2.2), (4.0, 4.0, 4.4), strict=True
    ):
        assert abs(got - resampled(n, old, new)) <= 0.5
    assert np.allclose(four.reshape(2, -1).mean(axis=1), 0.0, atol=1e-4)


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x01 not a nifti header " * 30)


def _cut_gz(path: Path) -> None:
    data = (NIBABEL_DATA / "example4d.nii.gz").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _cut_nii(path: Path) -> None:
    data = (NIBABEL_DATA / "anatomical.nii").read_bytes()
    path.write_bytes(data[: len(data) - 100])


@pytest.mark.parametrize(
    ("name", "spoil"), [("bad.nii", _garbage), ("bad.nii.gz", _cut_gz), ("cut.nii", _cut_nii)]
)
def test_corrupt_nifti(nifti_dir: Path, name: str, spoil: Any) -> None:
    spoil(nifti_dir / "sub" / name)
    manifest = nifti_dir.parent / "m2.csv"
    pd.DataFrame(
        {
            "patient_id": ["n1", "n2"],
            "path": [f"sub/{name}", "sub/standard.nii.gz"],
            "date": ["2020-01-01"] * 2,
        }
    ).to_csv(manifest, index=False)
    with pytest.raises(InputError, match=re.escape(f"{name}: ")):
        read("nifti", make_ctx(nifti_dir.parent, ["n1", "n2"]), path="nii", manifest="m2.csv")
    ctx = make_ctx(nifti_dir.parent, ["n1", "n2"])
    block = read("nifti", ctx, path="nii", manifest="m2.csv", on_error="skip")
    assert block.ids == ["n2"]
    assert audit_of(ctx)["excluded"] == {"unreadable": 1}


def test_bad_manifests(nifti_dir: Path) -> None:
    base = nifti_dir.parent
    pd.DataFrame(
        {"patient_id": ["n1"], "file": ["sub/anatomical.nii"], "date": ["2020-01-01"]}
    ).to_csv(base / "nocol.csv", index=False)
    with pytest.raises(InputError, match=r"nocol\.csv: no column 'path'"):
        read("nifti", make_ctx(base, ["n1"]), path="nii", manifest="nocol.csv")
    shutil.copy(NIBABEL_DATA / "standard.nii.gz", base / "outside.nii.gz")
    pd.DataFrame(
        {
            "patient_id": ["n1", "n2", "n3", "n4"],
            "path": [
                "../outside.nii.gz",
                "sub/missing.nii",
                "sub/standard.nii.gz",
                "sub/anatomical.nii",
            ],
            "date": ["2020-01-01", "2020-01-01", "01/02/2020", ""],
        }
    ).to_csv(base / "rows.csv", index=False)
    with pytest.raises(InputError, match=r"rows\.csv: line 2: .*outside\.nii\.gz is not under"):
        read("nifti", make_ctx(base, ["n1", "n2", "n3", "n4"]), path="nii", manifest="rows.csv")
    ctx = make_ctx(base, ["n1", "n2", "n3", "n4"])
    block = read("nifti", ctx, path="nii", manifest="rows.csv", on_error="skip")
    assert block.ids == []
    assert audit_of(ctx)["excluded"] == {
        "bad_date": 1,
        "missing_date": 1,
        "missing_file": 1,
        "outside_path": 1,
    }


# --- PNG / JPEG ---------------------------------------------------------------------------------


@pytest.fixture
def png_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    root = tmp_path / "png"
    root.mkdir()
    grey16 = rng.integers(0, 60000, size=(40, 50)).astype(np.uint16)
    Image.fromarray(grey16).save(root / "g16.png")
    np.save(tmp_path / "g16.npy", grey16)
    Image.fromarray(rng.integers(0, 255, size=(30, 20), dtype=np.uint8)).save(root / "g8.png")
    Image.fromarray(rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)).save(root / "rgb.png")
    Image.fromarray(rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)).save(root / "photo.jpg")
    pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d"],
            "path": ["g16.png", "g8.png", "rgb.png", "photo.jpg"],
            "date": ["2020-05-01"] * 4,
        }
    ).to_csv(tmp_path / "pics.csv", index=False)
    return root


def test_png_and_jpeg(png_dir: Path) -> None:
    ctx = make_ctx(png_dir.parent, ["a", "b", "c", "d"])
    block = read("image", ctx, path="png", manifest="pics.csv")
    assert block.ids == ["a", "b", "c", "d"]
    img = block.meta["images"]
    assert img["a"]["shape"] == [40, 50] and img["a"]["channels"] == 1
    assert img["c"]["shape"] == [24, 32] and img["c"]["channels"] == 3
    assert img["d"]["days_before_index"] == 31
    grey16 = np.load(png_dir.parent / "g16.npy").astype(np.float64)
    out = load_image(png_dir / "g16.png", intensity="minmax")
    assert out.shape == (1, 40, 50)
    expected = (grey16 - grey16.min()) / (grey16.max() - grey16.min())
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    assert load_image(png_dir / "rgb.png", spatial_size=(12, 16)).shape == (3, 12, 16)
    assert load_image(png_dir / "photo.jpg").shape == (3, 24, 32)
    with pytest.raises(InputError, match="needs window"):
        load_image(png_dir / "g8.png", intensity="window")


def test_truncated_png(png_dir: Path) -> None:
    data = (png_dir / "g16.png").read_bytes()
    (png_dir / "g16.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"g16\.png: cannot be read as an image"):
        read("image", make_ctx(png_dir.parent, ["a", "b"]), path="png", manifest="pics.csv")
    ctx = make_ctx(png_dir.parent, ["a", "b", "c", "d"])
    block = read("image", ctx, path="png", manifest="pics.csv", on_error="skip")
    assert block.ids == ["b", "c", "d"]
    assert audit_of(ctx)["excluded"] == {"unreadable": 1}
