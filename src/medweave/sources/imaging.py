"""Image sources: DICOM (``dicom``), NIfTI (``nifti``) and PNG/JPEG (``image``).

Each reader returns an image block: one file, series folder or path list per patient in
``paths`` (pixels are read later, by :func:`load_image`), and in ``meta["images"]`` per
patient the non-identifying geometry (modality, shape, spacing, channels) and
``days_before_index`` instead of any date.

Per patient the latest study dated on or before the index date (and not before the
lookback window) is used. The audit counts every file (DICOM) or manifest row (NIfTI,
PNG/JPEG) as used or excluded, by reason: ``after_index``, ``before_lookback``,
``older_study`` (an earlier eligible study, or a second row for the same date),
``other_series`` (another series of the chosen study), ``unknown_patient``,
``other_modality``, ``no_image`` (DICOM without pixels: SR, RT plan), ``no_index_date``,
and under ``on_error: skip`` ``unreadable``, ``missing_date``, ``bad_date``, ``bad_row``,
``missing_file``, ``outside_path``, ``wrong_type``, ``other_dimensions`` and the value
checks' reasons.

Dimensionality: one source holds one — 2-D images (single DICOM files, PNG/JPEG, 2-D
NIfTI) or 3-D volumes (DICOM series and multi-frame files, 3-D NIfTI) — because a model
resamples all of a source's images to one grid (``image_size``; by default from the
images' shapes, :mod:`medweave.models._prep_image`: DICOM series of different slice
counts become volumes of one size). The more common dimensionality of the chosen images
is the source's (a tie: 3-D); an image of the other is an error naming its file, or
under ``on_error: skip`` left out and counted as ``other_dimensions``.

Value checks (:data:`DICOM_CHECKS`, :data:`NIFTI_CHECKS`, :data:`IMAGE_CHECKS`, applied
to the chosen study of each patient, whose values are read once): every pixel or voxel
is a finite number (NaN or inf is an error, ``pixels:non_finite`` / ``voxels:non_finite``
under skip; a NaN background is refused too, as it would turn the normalised image into
NaN); an image that holds one value throughout (all zero, constant, or empty) is a
judgement call: left out with a warning and counted as ``no_information`` whatever
``on_error`` says, and the patient's next eligible study is tried. A DICOM file that
should hold an image (an image SOP class, Rows or ImageType) but has no pixel data is
cut short: ``unreadable``, not ``no_image``.

Presence: a patient is present when one study of theirs inside the window passes every
check; the others are counted in the audit's ``patients_missing`` with the reasons of
their files (``no_usable_study: <reasons>``; ``no_study`` when the source holds nothing
for them).

DICOM headers are de-identified on ingest (:func:`deidentify`): the meta is taken from
the de-identified header; the PatientID and dates are read only to link a file to the
cohort. Messages name the file and the tag keyword, never a header value. PatientIDs not
in the cohort are counted, not listed.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._checks import Rule, ValueChecks
from medweave.sources._deid import deidentify
from medweave.sources._dicom import (
    DicomFile,
    FileProblem,
    find_dicom_files,
    parse_da,
    quiet_pydicom,
    read_dataset,
    read_header,
    slice_order,
)
from medweave.sources._dicom_pixels import frame_geometry, pixel_spacing, tally_pixels
from medweave.sources._imload import (
    PICTURE_SUFFIXES,
    is_nifti,
    load_image,
    nifti_info,
    picture_info,
)
from medweave.sources._io import data_row, read_frame, require_columns
from medweave.sources._studies import Candidate, Reading, ValueProblem, ValueSummary

__all__ = [
    "DICOM_CHECKS",
    "IMAGE_CHECKS",
    "NIFTI_CHECKS",
    "DicomSpec",
    "ImageSpec",
    "NiftiSpec",
    "deidentify",
    "load_image",
    "read_dicom_source",
    "read_image_source",
    "read_nifti_source",
]


class DicomSpec(SourceSpec):
    """``type: dicom``: a folder of DICOM files (searched recursively) or one file."""

    path: str
    modality: str | None = None  # keep only this DICOM Modality (CT, MR, CR, ...)


class NiftiSpec(SourceSpec):
    """``type: nifti``: NIfTI files under ``path`` listed in a manifest CSV.

    The manifest has columns ``patient_id``, ``path`` (relative to ``path`` if a folder,
    or to its folder if a file) and ``date`` (YYYY-MM-DD or YYYYMMDD).
    """

    path: str
    manifest: str


class ImageSpec(SourceSpec):
    """``type: image``: 2-D PNG/JPEG files under ``path`` listed in a manifest CSV."""

    path: str
    manifest: str


# --- value checks ---------------------------------------------------------------------------


def _image_checks(reader: str, unit: str, units_words: str) -> ValueChecks:
    return ValueChecks(
        reader,
        [
            Rule(unit, f"finite {units_words} (no NaN or inf, not even as a background)"),
            Rule(
                "image",
                f"an image whose {units_words} vary (not all zero or one value throughout)",
                severity="warn",
                reason="no_information",
            ),
        ],
    )


#: The values of the chosen DICOM series: pixels in modality units (after rescale).
DICOM_CHECKS = _image_checks("dicom", "pixels", "pixel values in modality units")
#: The voxels of the chosen NIfTI file (after scl_slope/scl_inter).
NIFTI_CHECKS = _image_checks("nifti", "voxels", "voxel values")
#: The pixels of the chosen PNG/JPEG file.
IMAGE_CHECKS = _image_checks("image", "pixels", "pixel values")


def _checked(values: ValueSummary, checks: ValueChecks, path: Path) -> None:
    """Raise :class:`ValueProblem` if the tallied values break ``checks``."""
    violations = values.violations(checks, path=path)
    if violations:
        raise ValueProblem(violations)


# --- DICOM -----------------------------------------------------------------------------


def _dicom_meta(files: list[DicomFile], spacing_z: float | None) -> dict[str, Any]:
    """Geometry from the de-identified header of the first file of the chosen series."""
    first = files[0]
    ds = read_dataset(first.path, header_only=True)
    try:
        with quiet_pydicom():
            clean = deidentify(ds)
    except Exception as exc:
        raise FileProblem(
            first.path, f"header cannot be de-identified ({type(exc).__name__})"
        ) from None
    in_plane = pixel_spacing(clean, first.path)
    frames = sum(f.frames for f in files)
    if len(files) == 1 and first.frames > 1:
        _, spacing_z = frame_geometry(clean, first.path, first.frames)
    kind = "series" if len(files) > 1 else ("multiframe" if first.frames > 1 else "single")
    shape = [first.rows, first.columns] if frames == 1 else [frames, first.rows, first.columns]
    spacing: list[float] | None = None
    if in_plane is not None:
        spacing = [*in_plane] if frames == 1 else None
        if frames > 1 and spacing_z is not None:
            spacing = [abs(spacing_z), *in_plane]
    with quiet_pydicom():
        photometric = str(clean.get("PhotometricInterpretation", "")).strip()
        modality = str(clean.get("Modality", "")).strip()
    return {
        "modality": modality,
        "kind": kind,
        "n_files": len(files),
        "shape": shape,
        "spacing": None if spacing is None else [round(float(v), 6) for v in spacing],
        "channels": 3 if first.samples > 1 or photometric == "PALETTE COLOR" else 1,
        "photometric": photometric,
    }


def _ancestor_counts(files: list[Path]) -> Counter[Path]:
    """How many scanned files lie below each folder (at any depth)."""
    counts: Counter[Path] = Counter()
    for f in files:
        for parent in f.parents:
            counts[parent] += 1
    return counts


def _series_path(ordered: list[DicomFile], counts: Counter[Path]) -> str:
    """The series folder if it holds exactly these files, else the files joined by pathsep."""
    if len(ordered) == 1:
        return str(ordered[0].path)
    folder = Path(os.path.commonpath([str(f.path) for f in ordered]))
    if counts.get(folder, 0) == len(ordered):
        return str(folder)
    return os.pathsep.join(str(f.path) for f in ordered)


def _dicom_build(
    files: list[DicomFile], counts: Counter[Path]
) -> Callable[[], tuple[str, dict[str, Any]]]:
    def build() -> tuple[str, dict[str, Any]]:
        ordered, spacing_z = slice_order(files)
        meta = _dicom_meta(ordered, spacing_z)
        # Every file is decoded once: a codec that fails, and pixel values that break
        # the value checks, show here rather than when a model first loads the image.
        values = ValueSummary("pixels")
        tally_pixels([f.path for f in ordered], values)
        _checked(values, DICOM_CHECKS, ordered[0].path)
        return _series_path(ordered, counts), meta

    return build


@register(
    "dicom",
    spec=DicomSpec,
    description="DICOM images: single files, multi-frame files and series (PatientID links)",
)
def read_dicom_source(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    """DICOM files under ``spec.path``; patients linked by PatientID, dated by StudyDate."""
    assert isinstance(spec, DicomSpec)
    root = ctx.resolve(spec.path)
    if not root.exists():
        raise InputError(f"{root}: not found (source {spec.name!r}, key path)")
    files = find_dicom_files(root)
    if not files:
        raise InputError(
            f"{root}: no DICOM files (*.dcm, *.dicom, *.ima, or files with the DICM marker) "
            f"(source {spec.name!r}, key path)"
        )
    run = Reading(spec, ctx, checks=DICOM_CHECKS)
    ctx.audit.read(spec.name, len(files))
    want = spec.modality.strip().upper() if spec.modality else None
    series: dict[tuple[str, str, str], list[tuple[DicomFile, np.datetime64]]] = defaultdict(list)
    for path in files:
        try:
            header = read_header(path)
        except FileProblem as exc:
            run.problem(exc)
            continue
        if header is None:
            run.exclude("no_image", 1)
        elif want is not None and header.modality != want:
            run.exclude("other_modality", 1)
        elif header.patient_id not in run.index:
            run.exclude("unknown_patient", 1)
        elif header.date_value is None or header.date_tag is None:
            run.problem(
                FileProblem(
                    path,
                    "tag StudyDate is missing (and SeriesDate, AcquisitionDate); without a "
                    "date the study cannot be placed before or after the index date",
                    reason="missing_date",
                ),
                1,
                header.patient_id,
            )
        else:
            try:
                when = parse_da(header.date_value, path=path, keyword=header.date_tag)
            except FileProblem as exc:
                run.problem(exc, 1, header.patient_id)
                continue
            study = header.study_uid or header.series_uid or str(path)
            key = (header.patient_id, study, header.series_uid or str(path))
            series[key].append((header, when))
    counts = _ancestor_counts(files)
    candidates = []
    for (pid, study, uid), members in series.items():
        when = max(d for _, d in members)
        if not run.dated(pid, when, len(members)):
            continue
        headers = [h for h, _ in members]
        frames = sum(h.frames for h in headers)
        number = min(h.series_number for h in headers)
        candidates.append(
            Candidate(
                patient_id=pid,
                date=when,
                study=study,
                rank=(-frames, number, uid),
                rows=len(members),
                build=_dicom_build(headers, counts),
            )
        )
    return run.choose(candidates, reader="dicom")


# --- NIfTI and PNG/JPEG through a manifest -------------------------------------------------


#: A manifest's dates: ISO 8601 (a time part ignored, or YYYYMMDD); an empty one is said apart.
_MANIFEST_DATE = Rule("date", "an ISO date (YYYY-MM-DD)", date=True)


def _inside(path: Path, root: Path) -> bool:
    """``path`` names a place under ``root`` (or ``root`` itself, a file), by its written
    form: ``..`` is resolved, symbolic links are not (a linked folder under ``root`` is
    under ``root``, wherever it points)."""
    p, r = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    return p == r if root.is_file() else p.is_relative_to(r)


def _read_manifest(
    spec: NiftiSpec | ImageSpec,
    ctx: ReadContext,
    *,
    reader: str,
    accepts: Callable[[Path], bool],
    info: Callable[[Path, ValueSummary], dict[str, Any]],
    kinds: str,
    checks: ValueChecks,
    unit: str,
) -> ModalityBlock:
    root = ctx.resolve(spec.path)
    if not root.exists():
        raise InputError(f"{root}: not found (source {spec.name!r}, key path)")
    manifest = ctx.resolve(spec.manifest)
    frame = read_frame(manifest, what="image manifest")
    require_columns(frame, ["patient_id", "path", "date"], path=manifest, key="manifest")
    base = root if root.is_dir() else root.parent
    run = Reading(spec, ctx, checks=checks)
    ctx.audit.read(spec.name, len(frame))
    parsed, date_errors = _MANIFEST_DATE.problems(frame["date"])
    dates = parsed.astype("datetime64[D]")
    unknown: set[str] = set()
    candidates = []
    for i, (pid_raw, file_raw, date_raw, when, date_error) in enumerate(
        zip(frame["patient_id"], frame["path"], frame["date"], dates, date_errors, strict=True)
    ):
        where = f"{data_row(manifest, i)}:"
        pid = "" if pd.isna(pid_raw) else str(pid_raw).strip()
        if not pid:
            run.problem(FileProblem(manifest, f"{where} patient_id is empty", reason="bad_row"))
            continue
        if pid not in run.index:
            run.exclude("unknown_patient", 1)
            unknown.add(pid)
            continue
        if date_error:
            run.problem(
                FileProblem(
                    manifest,
                    f"{where} date {str(date_raw).strip()!r} "
                    f"{_MANIFEST_DATE.describe(date_error, date_raw)}",
                    reason="bad_date",
                ),
                1,
                pid,
            )
            continue
        if np.isnat(when):
            run.problem(
                FileProblem(manifest, f"{where} date is empty", reason="missing_date"), 1, pid
            )
            continue
        if pd.isna(file_raw) or not str(file_raw).strip():
            run.problem(FileProblem(manifest, f"{where} path is empty", reason="bad_row"), 1, pid)
            continue
        file = Path(str(file_raw).strip()).expanduser()
        file = file if file.is_absolute() else base / file
        if not _inside(file, root):
            run.problem(
                FileProblem(
                    manifest,
                    f"{where} {file} is not under {root} (source {spec.name!r}, key path)",
                    reason="outside_path",
                ),
                1,
                pid,
            )
            continue
        if not file.is_file():
            run.problem(
                FileProblem(manifest, f"{where} {file} not found", reason="missing_file"), 1, pid
            )
            continue
        if not accepts(file):
            run.problem(
                FileProblem(manifest, f"{where} {file} is not {kinds}", reason="wrong_type"), 1, pid
            )
            continue
        if not run.dated(pid, when, 1):
            continue

        def build(file: Path = file) -> tuple[str, dict[str, Any]]:
            values = ValueSummary(unit)
            meta = info(file, values)
            _checked(values, checks, file)
            return str(file), meta

        candidates.append(
            Candidate(patient_id=pid, date=when, study=f"row {i}", rank=(i,), rows=1, build=build)
        )
    ctx.audit.unknown_patients(spec.name, sorted(unknown))
    return run.choose(candidates, reader=reader)


@register(
    "nifti",
    spec=NiftiSpec,
    description="NIfTI volumes listed in a manifest (patient_id, path, date)",
)
def read_nifti_source(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    """NIfTI files (nibabel) named by a manifest; each chosen file is read to its end once
    (the data is all there; its voxel values pass :data:`NIFTI_CHECKS`)."""
    assert isinstance(spec, NiftiSpec)
    return _read_manifest(
        spec,
        ctx,
        reader="nifti",
        accepts=is_nifti,
        info=lambda p, v: nifti_info(p, values=v),
        kinds="a .nii or .nii.gz file",
        checks=NIFTI_CHECKS,
        unit="voxels",
    )


@register(
    "image",
    spec=ImageSpec,
    description="2-D PNG/JPEG images listed in a manifest (patient_id, path, date)",
)
def read_image_source(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    """PNG/JPEG files (Pillow) named by a manifest; each chosen file is decoded once (its
    pixel values pass :data:`IMAGE_CHECKS`)."""
    assert isinstance(spec, ImageSpec)
    return _read_manifest(
        spec,
        ctx,
        reader="image",
        accepts=lambda p: p.suffix.lower() in PICTURE_SUFFIXES,
        info=lambda p, v: picture_info(p, values=v),
        kinds="a PNG or JPEG file",
        checks=IMAGE_CHECKS,
        unit="pixels",
    )
