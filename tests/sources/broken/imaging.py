"""Broken inputs of the image readers ``dicom``, ``nifti`` and ``image`` (PNG/JPEG).

Every entry writes tiny images (8 x 8 pixels, 4 x 4 x 4 voxels) with pydicom, nibabel
and Pillow next to a good image of patient P6, so that leaving the broken one out still
leaves a usable source.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    ParametricMapStorage,
    generate_uid,
)

from medweave.testing.readers import BrokenInput

Write = Callable[[Path], dict[str, Any]]
_DICOM = {"type": "dicom", "path": "scans"}


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2000, size=(8, 8)).astype(np.uint16)


def write_ct(
    path: Path,
    *,
    patient: str = "P1",
    date: str | None = "20200101",
    pixels: np.ndarray | None = None,
    syntax: UID = ExplicitVRLittleEndian,
) -> Path:
    """An 8 x 8 CT slice (None ``pixels``: random; ``date`` None: no date tag at all)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = syntax
    uid = generate_uid(entropy_srcs=[str(path)])
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(path), "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(path), "series"])
    ds.PatientID, ds.Modality = patient, "CT"
    if date is not None:
        with warnings.catch_warnings():  # pydicom warns about the invalid dates written here
            warnings.simplefilter("ignore")
            ds.StudyDate = date
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = 8, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    if syntax.is_compressed:  # a JPEG-LS stream that is only its start marker
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(60)])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = (_pixels() if pixels is None else pixels).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _dicom(spoil: Callable[[Path], None]) -> Write:
    """``scans/good.dcm`` for P6 and whatever ``spoil(scans)`` writes for P1."""

    def write(folder: Path) -> dict[str, Any]:
        scans = folder / "scans"
        write_ct(scans / "good.dcm", patient="P6", date="20200301")
        spoil(scans)
        return dict(_DICOM)

    return write


def _cut(*, at: Callable[[bytes], int]) -> Callable[[Path], None]:
    def spoil(scans: Path) -> None:
        path = write_ct(scans / "cut.dcm")
        data = path.read_bytes()
        path.write_bytes(data[: at(data)])

    return spoil


def _before_image_module(data: bytes) -> int:
    """Where the image pixel module starts (tag 0028,0002): the rest is cut away."""
    return data.index(b"\x28\x00\x02\x00")


def _header_only(scans: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["header-only"])
    pydicom.dcmwrite(scans / "meta.dcm", ds, enforce_file_format=True)


def _no_pixel_data(scans: Path) -> None:
    path = write_ct(scans / "nopix.dcm")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)


def _float_pixels(scans: Path) -> None:
    """A parametric map whose float pixels hold a NaN."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ParametricMapStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    uid = generate_uid(entropy_srcs=["float"])
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPClassUID, ds.SOPInstanceUID = ParametricMapStorage, uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["float", "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["float", "series"])
    ds.PatientID, ds.Modality, ds.StudyDate = "P1", "MR", "20200101"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.BitsAllocated = 8, 8, 1, 32
    values = np.arange(64, dtype=np.float32)
    values[9] = np.nan
    ds.FloatPixelData = values.tobytes()
    pydicom.dcmwrite(scans / "map.dcm", ds, enforce_file_format=True)


def _no_date(scans: Path) -> None:
    write_ct(scans / "nodate.dcm", date=None)


def _bad_date(scans: Path) -> None:
    write_ct(scans / "baddate.dcm", date="2020XY01")


def _stranger(scans: Path) -> None:
    write_ct(scans / "stranger.dcm", patient="Q9")


def _undecodable(scans: Path) -> None:
    write_ct(scans / "jls.dcm", syntax=JPEGLSLossless)


def _all_zero(scans: Path) -> None:
    """Stored 1024 everywhere, RescaleIntercept -1024: 0 HU in every pixel."""
    write_ct(scans / "zero.dcm", pixels=np.full((8, 8), 1024, dtype=np.uint16))


def _zero_size(scans: Path) -> None:
    (scans / "empty.dcm").write_bytes(b"")


def _not_dicom(scans: Path) -> None:
    (scans / "notes.dcm").write_text("a text file named like an image\n" * 10)


def _dangling_link(scans: Path) -> None:
    os.symlink(scans / "gone.dcm", scans / "link.dcm")


def _empty_folder(folder: Path) -> dict[str, Any]:
    (folder / "scans").mkdir()
    return dict(_DICOM)


# --- NIfTI and PNG/JPEG through a manifest ---------------------------------------------------


def _manifest(
    kind: str,
    rows: list[tuple[str, str, str]],
    files: dict[str, Callable[[Path], None]],
    *,
    header: str = "patient_id,path,date",
) -> Write:
    """``imgs/`` with ``files`` and the good image of P6, and ``manifest.csv`` listing
    ``rows`` (patient, path under imgs, date) after P6's row."""

    def write(folder: Path) -> dict[str, Any]:
        imgs = folder / "imgs"
        imgs.mkdir()
        good = "good.nii.gz" if kind == "nifti" else "good.png"
        (_write_nifti if kind == "nifti" else _write_png)(imgs / good)
        for name, make in files.items():
            make(imgs / name)
        lines = [header, f"P6,{good},2020-03-01", *(",".join(r) for r in rows)]
        (folder / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return {"type": kind, "path": "imgs", "manifest": "manifest.csv"}

    return write


def _write_nifti(path: Path, data: np.ndarray | None = None) -> None:
    if data is None:
        data = np.random.default_rng(1).normal(size=(4, 4, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def _nifti_of(data: np.ndarray) -> Callable[[Path], None]:
    return lambda path: _write_nifti(path, data)


def _nan_background() -> np.ndarray:
    data = np.full((4, 4, 4), np.nan, dtype=np.float32)
    data[1:3, 1:3, 1:3] = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    return data


def _cut_nifti(path: Path) -> None:
    _write_nifti(path)
    path.write_bytes(path.read_bytes()[:-40])


def _write_png(path: Path, pixels: np.ndarray | None = None) -> None:
    if pixels is None:
        pixels = np.random.default_rng(2).integers(0, 255, size=(8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _text(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content)


_OK = "2020-01-01"

CASES: list[BrokenInput] = [
    # --- DICOM --------------------------------------------------------------------------------
    BrokenInput(
        "dicom: truncated in the pixel data",
        "dicom",
        _dicom(_cut(at=lambda data: len(data) - 50)),
        names=("cut.dcm", "truncated", "PixelData"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "dicom: truncated right after the header",
        "dicom",
        _dicom(_cut(at=_before_image_module)),
        names=("cut.dcm", "PixelData", "truncated"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "dicom: header only (file meta, no data set)",
        "dicom",
        _dicom(_header_only),
        names=("meta.dcm", "no data set"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "dicom: image without pixel data",
        "dicom",
        _dicom(_no_pixel_data),
        names=("nopix.dcm", "PixelData"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "dicom: no study date",
        "dicom",
        _dicom(_no_date),
        names=("nodate.dcm", "StudyDate"),
        skip_reason="missing_date",
    ),
    BrokenInput(
        "dicom: study date that is not a date",
        "dicom",
        _dicom(_bad_date),
        names=("baddate.dcm", "StudyDate"),
        skip_reason="bad_date",
    ),
    BrokenInput(
        "dicom: another patient's id",
        "dicom",
        _dicom(_stranger),
        names=(),
        skip_reason="unknown_patient",
        audited=True,
    ),
    BrokenInput(
        "dicom: compressed transfer syntax without a decoder",
        "dicom",
        _dicom(_undecodable),
        names=("jls.dcm", "PixelData"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "dicom: NaN in float pixel data",
        "dicom",
        _dicom(_float_pixels),
        names=("map.dcm", "pixels", "not finite"),
        skip_reason="pixels:non_finite",
    ),
    BrokenInput(
        "dicom: an image of one value (0 HU everywhere)",
        "dicom",
        _dicom(_all_zero),
        names=(),
        skip_reason="no_information",
        audited=True,
    ),
    BrokenInput(
        "dicom: a text file named .dcm",
        "dicom",
        _dicom(_not_dicom),
        names=("notes.dcm", "not a DICOM file"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "dicom: dangling symbolic link",
        "dicom",
        _dicom(_dangling_link),
        names=("link.dcm", "cannot be opened"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "dicom: zero-size file",
        "dicom",
        _dicom(_zero_size),
        names=("empty.dcm", "is empty (0 bytes)"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "dicom: empty folder",
        "dicom",
        _empty_folder,
        names=("scans", "no DICOM files", "key path"),
    ),
    # --- NIfTI ---------------------------------------------------------------------------------
    BrokenInput(
        "nifti: NaN in every voxel",
        "nifti",
        _manifest(
            "nifti",
            [("P1", "nan.nii.gz", _OK)],
            {"nan.nii.gz": _nifti_of(np.full((4, 4, 4), np.nan, dtype=np.float32))},
        ),
        names=("nan.nii.gz", "voxels", "64 of 64", "not finite"),
        skip_reason="voxels:non_finite",
    ),
    BrokenInput(
        "nifti: NaN background around valid voxels",
        "nifti",
        _manifest("nifti", [("P1", "bg.nii", _OK)], {"bg.nii": _nifti_of(_nan_background())}),
        names=("bg.nii", "voxels", "56 of 64", "not finite"),
        skip_reason="voxels:non_finite",
    ),
    BrokenInput(
        "nifti: all-zero volume",
        "nifti",
        _manifest(
            "nifti",
            [("P1", "zero.nii.gz", _OK)],
            {"zero.nii.gz": _nifti_of(np.zeros((4, 4, 4), dtype=np.float32))},
        ),
        names=(),
        skip_reason="no_information",
        audited=True,
    ),
    BrokenInput(
        "nifti: a 2-D image among 3-D volumes",
        "nifti",
        _manifest(
            "nifti",
            [("P1", "slice.nii.gz", _OK)],
            {"slice.nii.gz": _nifti_of(np.random.default_rng(3).normal(size=(4, 4)))},
        ),
        names=("slice.nii.gz", "2-D"),
        skip_reason="other_dimensions",
    ),
    BrokenInput(
        "nifti: zero-size file",
        "nifti",
        _manifest("nifti", [("P1", "empty.nii", _OK)], {"empty.nii": _text("")}),
        names=("empty.nii", "is empty (0 bytes)"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "nifti: truncated voxel data",
        "nifti",
        _manifest("nifti", [("P1", "cut.nii", _OK)], {"cut.nii": _cut_nifti}),
        names=("cut.nii", "truncated"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "nifti: manifest date with day and month ambiguous",
        "nifti",
        _manifest("nifti", [("P1", "good.nii.gz", "01/03/2020")], {}),
        names=("manifest.csv", "line 3", "'01/03/2020'", "ambiguous"),
        skip_reason="bad_date",
    ),
    BrokenInput(
        "nifti: manifest row pointing at a missing file",
        "nifti",
        _manifest("nifti", [("P1", "gone.nii.gz", _OK)], {}),
        names=("manifest.csv", "line 3", "gone.nii.gz", "not found"),
        skip_reason="missing_file",
    ),
    BrokenInput(
        "nifti: manifest path outside the image folder",
        "nifti",
        _manifest("nifti", [("P1", "../index.csv", _OK)], {}),
        names=("manifest.csv", "line 3", "is not under"),
        skip_reason="outside_path",
    ),
    BrokenInput(
        "nifti: manifest row of a patient outside the cohort",
        "nifti",
        _manifest("nifti", [("Q9", "good.nii.gz", _OK)], {}),
        names=(),
        skip_reason="unknown_patient",
        audited=True,
    ),
    # --- PNG/JPEG ------------------------------------------------------------------------------
    BrokenInput(
        "image: a PNG that is not a PNG",
        "image",
        _manifest("image", [("P1", "fake.png", _OK)], {"fake.png": _text("<html></html>\n")}),
        names=("fake.png", "cannot be read as an image"),
        skip_reason="unreadable",
    ),
    BrokenInput(
        "image: a picture of one grey value",
        "image",
        _manifest(
            "image",
            [("P1", "flat.png", _OK)],
            {"flat.png": lambda p: _write_png(p, np.full((8, 8), 128, dtype=np.uint8))},
        ),
        names=(),
        skip_reason="no_information",
        audited=True,
    ),
    BrokenInput(
        "image: manifest names a file that is no picture",
        "image",
        _manifest("image", [("P1", "notes.txt", _OK)], {"notes.txt": _text("notes\n")}),
        names=("manifest.csv", "line 3", "notes.txt", "is not a PNG or JPEG"),
        skip_reason="wrong_type",
    ),
    BrokenInput(
        "image: manifest date that is not a date",
        "image",
        _manifest("image", [("P1", "good.png", "last spring")], {}),
        names=("manifest.csv", "line 3", "'last spring'", "YYYY-MM-DD"),
        skip_reason="bad_date",
    ),
    BrokenInput(
        "image: manifest row without a patient id",
        "image",
        _manifest("image", [("", "good.png", _OK)], {}),
        names=("manifest.csv", "line 3", "patient_id is empty"),
        skip_reason="bad_row",
    ),
    BrokenInput(
        "image: manifest without a path column",
        "image",
        _manifest("image", [], {}, header="patient_id,file,date"),
        names=("manifest.csv", "'path'", "manifest"),
    ),
]
