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
``missing_file``, ``outside_path``, ``wrong_type``. Cohort patients left without an image
are counted in the audit's ``patients_missing`` with the reasons of their files.

DICOM headers are de-identified on ingest (:func:`deidentify`): the meta is taken from
the de-identified header; the PatientID and dates are read only to link a file to the
cohort. Messages name the file and the tag keyword, never a header value. PatientIDs not
in the cohort are counted, not listed.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._deid import deidentify
from medweave.sources._dicom import (
    DicomFile,
    FileProblem,
    check_decodable,
    find_dicom_files,
    parse_da,
    quiet_pydicom,
    read_dataset,
    read_header,
    slice_order,
)
from medweave.sources._dicom_pixels import frame_geometry, pixel_spacing
from medweave.sources._imload import (
    PICTURE_SUFFIXES,
    is_nifti,
    load_image,
    nifti_info,
    picture_info,
)
from medweave.sources._io import data_row, read_frame, require_columns
from medweave.sources._studies import Candidate, Reading

__all__ = [
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
        for f in ordered[:1]:
            if f.compressed:
                check_decodable(f.path)
        return _series_path(ordered, counts), _dicom_meta(ordered, spacing_z)

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
    run = Reading(spec, ctx)
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

_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$")
_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def _manifest_date(value: Any) -> np.datetime64 | None:
    """YYYY-MM-DD (a time part is ignored) or YYYYMMDD; None if it is neither."""
    text = str(value).strip()
    m = _ISO_DATE.match(text) or _COMPACT_DATE.match(text)
    if m is None:
        return None
    try:
        return np.datetime64(f"{m.group(1)}-{m.group(2)}-{m.group(3)}", "D")
    except ValueError:
        return None


def _inside(path: Path, root: Path) -> bool:
    p, r = path.resolve(), root.resolve()
    return p == r if root.is_file() else p.is_relative_to(r)


def _read_manifest(
    spec: NiftiSpec | ImageSpec,
    ctx: ReadContext,
    *,
    reader: str,
    accepts: Callable[[Path], bool],
    info: Callable[[Path], dict[str, Any]],
    kinds: str,
) -> ModalityBlock:
    root = ctx.resolve(spec.path)
    if not root.exists():
        raise InputError(f"{root}: not found (source {spec.name!r}, key path)")
    manifest = ctx.resolve(spec.manifest)
    frame = read_frame(manifest, what="image manifest")
    require_columns(frame, ["patient_id", "path", "date"], path=manifest, key="manifest")
    base = root if root.is_dir() else root.parent
    run = Reading(spec, ctx)
    ctx.audit.read(spec.name, len(frame))
    unknown: set[str] = set()
    candidates = []
    for i, (pid_raw, file_raw, date_raw) in enumerate(
        zip(frame["patient_id"], frame["path"], frame["date"], strict=True)
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
        if pd.isna(date_raw) or not str(date_raw).strip():
            run.problem(
                FileProblem(manifest, f"{where} date is empty", reason="missing_date"), 1, pid
            )
            continue
        when = _manifest_date(date_raw)
        if when is None:
            run.problem(
                FileProblem(
                    manifest,
                    f"{where} date {str(date_raw)!r} is not a date; use YYYY-MM-DD",
                    reason="bad_date",
                ),
                1,
                pid,
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
            return str(file), info(file)

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
    """NIfTI files (nibabel) named by a manifest; each chosen file is checked to its end."""
    assert isinstance(spec, NiftiSpec)
    return _read_manifest(
        spec, ctx, reader="nifti", accepts=is_nifti, info=nifti_info, kinds="a .nii or .nii.gz file"
    )


@register(
    "image",
    spec=ImageSpec,
    description="2-D PNG/JPEG images listed in a manifest (patient_id, path, date)",
)
def read_image_source(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    """PNG/JPEG files (Pillow) named by a manifest; each chosen file is decoded once."""
    assert isinstance(spec, ImageSpec)
    return _read_manifest(
        spec,
        ctx,
        reader="image",
        accepts=lambda p: p.suffix.lower() in PICTURE_SUFFIXES,
        info=picture_info,
        kinds="a PNG or JPEG file",
    )
