"""Synthetic chest CT slices written as real DICOM files.

Disease shows only as image structure: nodular lesions in the lung fields whose total
area carries the imaging signal. Body size, lung shape, texture and noise vary between
patients and carry none. Headers carry identifiers (fake name, birth date, institution) on
purpose, so that de-identification on ingest can be tested.
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = [
    "IMAGE_SIZE",
    "LesionSet",
    "lesion_signal",
    "sample_lesions",
    "write_dicoms",
    "write_dicoms_parallel",
]

IMAGE_SIZE = 128
PIXEL_SPACING_MM = 2.7
# Fixed standardisation of log1p(total lesion area / 20 px), close to the population's.
LESION_CENTER = 2.0
LESION_SCALE = 1.0
# Lungs relative to the image centre: (dx, dy, semi-axis x, semi-axis y), before jitter.
_LUNGS = ((-23.0, -2.0, 17.0, 30.0), (23.0, -2.0, 17.0, 30.0))
_INSTITUTIONS = ("Riverton General Hospital", "Lakeside Medical Center", "Hillview Clinic")
_FIRST = ("Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Robin", "Jamie", "Avery")
_LAST = ("Smith", "Garcia", "Chen", "Okafor", "Novak", "Larsen", "Silva", "Khan", "Moreau")


class LesionSet:
    """Lesions of every patient, flat: ``owner[j]`` is the patient of lesion ``j``."""

    def __init__(
        self,
        owner: np.ndarray,
        lung: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        r: np.ndarray,
        n_patients: int,
    ) -> None:
        self.owner, self.lung, self.x, self.y, self.r = owner, lung, x, y, r
        self.area = np.bincount(owner, weights=np.pi * r**2, minlength=n_patients)
        self.count = np.bincount(owner, minlength=n_patients)

    def of(self, rows: np.ndarray) -> list[np.ndarray]:
        """The (x, y, radius) rows of the lesions of each patient in ``rows``."""
        xyr = np.column_stack([self.x, self.y, self.r])
        per_patient = np.split(xyr, np.cumsum(self.count)[:-1])
        return [per_patient[i] for i in rows]


def sample_lesions(rng: np.random.Generator, s_img: np.ndarray) -> LesionSet:
    """Lesion count grows with the latent ``s_img``; positions avoid overlap in the lungs."""
    n = len(s_img)
    counts = rng.poisson(np.exp(0.9 + 0.6 * s_img))
    owner, lung, xs, ys, rs = [], [], [], [], []
    for i in np.flatnonzero(counts):
        placed: list[tuple[float, float, float]] = []
        for _ in range(int(counts[i])):
            r = float(rng.uniform(2.5, 6.5))
            for _try in range(30):
                side = int(rng.integers(0, 2))
                dx, dy, ax, ay = _LUNGS[side]
                # A point well inside the lung ellipse (unit disk scaled, minus the radius).
                rho, phi = np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
                x = dx + (ax - r - 2) * rho * np.cos(phi)
                y = dy + (ay - r - 2) * rho * np.sin(phi)
                if all((x - px) ** 2 + (y - py) ** 2 > (r + pr + 1) ** 2 for px, py, pr in placed):
                    placed.append((x, y, r))
                    owner.append(i)
                    lung.append(side)
                    xs.append(x)
                    ys.append(y)
                    rs.append(r)
                    break
    return LesionSet(
        np.asarray(owner, dtype=np.int64),
        np.asarray(lung, dtype=np.int8),
        np.asarray(xs),
        np.asarray(ys),
        np.asarray(rs),
        n,
    )


def lesion_signal(area: np.ndarray) -> np.ndarray:
    """The standardised imaging signal that enters the true risk."""
    return (np.log1p(area / 20.0) - LESION_CENTER) / LESION_SCALE


def _linear_upsampler(cells: int, size: int) -> np.ndarray:
    """Matrix that linearly interpolates ``cells`` values onto ``size`` pixels."""
    pos = np.linspace(0, cells - 1, size)
    lo = np.minimum(np.floor(pos).astype(int), cells - 2)
    frac = pos - lo
    up = np.zeros((size, cells), dtype=np.float32)
    up[np.arange(size), lo] = 1 - frac
    up[np.arange(size), lo + 1] = frac
    return up


_UPSAMPLE = _linear_upsampler(16, IMAGE_SIZE)


def _smooth_noise(rng: np.random.Generator, sd: float) -> np.ndarray:
    coarse = rng.normal(0, sd, (_UPSAMPLE.shape[1],) * 2).astype(np.float32)
    return _UPSAMPLE @ coarse @ _UPSAMPLE.T


def render_slice(rng: np.random.Generator, lesions: list[tuple[float, float, float]]) -> np.ndarray:
    """One axial chest slice in Hounsfield units (float32, IMAGE_SIZE²)."""
    c = IMAGE_SIZE / 2
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) - c
    img = np.full((IMAGE_SIZE, IMAGE_SIZE), -1000.0, dtype=np.float32)
    bx, by = rng.uniform(52, 60), rng.uniform(38, 46)
    body = (xx / bx) ** 2 + ((yy - 4) / by) ** 2 <= 1
    img[body] = 40.0 + _smooth_noise(rng, 12)[body]
    jitter = rng.normal(0, 1.2, 4)
    lung_tex = _smooth_noise(rng, 35)
    for dx, dy, ax, ay in _LUNGS:
        inside = ((xx - dx) / (ax + jitter[0])) ** 2 + ((yy - dy) / (ay + jitter[1])) ** 2 <= 1
        img[inside] = -850.0 + lung_tex[inside]
    # Vessels seen end-on: small bright dots in the lungs, unrelated to disease.
    for _ in range(int(rng.integers(6, 14))):
        dx, dy, ax, ay = _LUNGS[int(rng.integers(0, 2))]
        rho, phi = np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        vx, vy = dx + (ax - 3) * rho * np.cos(phi), dy + (ay - 3) * rho * np.sin(phi)
        vessel = (xx - vx) ** 2 + (yy - vy) ** 2 <= rng.uniform(0.6, 1.6) ** 2
        img[vessel] = rng.uniform(-200, 0)
    spine = xx**2 + (yy - 30) ** 2 <= (6 + jitter[2]) ** 2
    img[spine] = 650.0 + 60 * jitter[3]
    for x, y, r in lesions:
        # Work on the lesion's bounding box only; a one-pixel soft edge.
        x0, x1 = int(c + x - r - 2), int(c + x + r + 3)
        y0, y1 = int(c + y - r - 2), int(c + y + r + 3)
        d = np.sqrt((xx[y0:y1, x0:x1] - x) ** 2 + (yy[y0:y1, x0:x1] - y) ** 2)
        edge = np.clip(r + 0.5 - d, 0.0, 1.0)
        fill = rng.uniform(10, 60) + rng.normal(0, 15, edge.shape)
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - edge) + fill * edge
    img += rng.normal(0, 12, img.shape).astype(np.float32)
    return img


def _dicom_template() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.Manufacturer = "medweave synthetic"
    ds.StudyDescription = "CT CHEST WITHOUT CONTRAST"
    ds.SeriesDescription = "AXIAL 5MM"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.SliceThickness = "5.0"
    ds.KVP = "120"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [-172.8, -172.8, -150.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = IMAGE_SIZE
    ds.Columns = IMAGE_SIZE
    ds.PixelSpacing = [PIXEL_SPACING_MM, PIXEL_SPACING_MM]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    return ds


def write_dicoms(
    folder: Path, *, seed: int, patients: pd.DataFrame, lesions: list[np.ndarray]
) -> list[str]:
    """Write one DICOM file per row of ``patients``; returns the file names.

    ``patients`` needs ``row`` (the patient's position in the cohort), ``patient_id``,
    ``birth_date``, ``male`` and ``study_date``; ``lesions[k]`` holds the (x, y, radius)
    rows of patient ``k``. Pixels come from a generator seeded by (seed, row), so a file
    does not depend on which other patients are imaged or on how the work is split.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ds = _dicom_template()
    names: list[str] = []
    rows = patients["row"].to_numpy()
    ids = patients["patient_id"].astype(str).tolist()
    births = pd.to_datetime(patients["birth_date"]).dt.strftime("%Y%m%d").tolist()
    studies = pd.to_datetime(patients["study_date"]).dt.strftime("%Y%m%d").tolist()
    males = patients["male"].to_numpy(dtype=bool)
    for k, row in enumerate(rows.tolist()):
        rng = np.random.default_rng([seed, 0x1A6E, row])
        hu = render_slice(rng, [(float(x), float(y), float(r)) for x, y, r in lesions[k]])
        stored = np.clip(np.round(hu + 1024.0), 0, 4095).astype(np.uint16)
        pid = ids[k]
        uid = generate_uid(entropy_srcs=[str(seed), pid, "instance"])
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SOPInstanceUID = uid
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(seed), pid, "study"])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(seed), pid, "series"])
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[str(seed), pid, "frame"])
        ds.PatientID = pid
        ds.PatientName = f"{_LAST[rng.integers(len(_LAST))]}^{_FIRST[rng.integers(len(_FIRST))]}"
        ds.PatientBirthDate = births[k]
        ds.PatientSex = "M" if males[k] else "F"
        ds.InstitutionName = _INSTITUTIONS[int(rng.integers(len(_INSTITUTIONS)))]
        ds.AccessionNumber = f"ACC{row + 1:08d}"
        ds.StudyID = f"{row + 1}"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = studies[k]
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
        ds.PixelData = stored.tobytes()
        name = f"{pid}.dcm"
        pydicom.dcmwrite(folder / name, ds, enforce_file_format=True)
        names.append(name)
    return names


def write_dicoms_parallel(
    folder: Path,
    *,
    seed: int,
    patients: pd.DataFrame,
    lesions: list[np.ndarray],
    workers: int,
) -> list[str]:
    """:func:`write_dicoms` split over ``workers`` processes (same files, any split)."""
    if workers <= 1 or len(patients) < 400:
        return write_dicoms(folder, seed=seed, patients=patients, lesions=lesions)
    bounds = np.linspace(0, len(patients), workers + 1).astype(int)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(
                write_dicoms,
                folder,
                seed=seed,
                patients=patients.iloc[a:b],
                lesions=lesions[a:b],
            )
            for a, b in itertools.pairwise(bounds)
        ]
        return [name for f in futures for name in f.result()]
