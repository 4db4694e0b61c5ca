"""Synthetic chest CT volumes (3-D NIfTI) for a cohort written by :func:`medweave.synth.synthesize`.

The 2-D cohort carries its imaging signal in one DICOM slice per imaged patient: nodular
lesions whose total area (``lesion_area_px`` in ``truth/patients.parquet``) is the latent
that enters the true risk. :func:`write_volumes` gives the same patients a 3-D volume
instead: a chest-like body with two lungs and ``lesion_count`` ellipsoidal nodules at
random positions inside the lungs, whose **total volume is a fixed linear function of
the patient's lesion area** (:func:`lesion_volume_mm3`: 1,000 mm³ per slice pixel, the
same share of the lungs in 3-D as in the slice). The volume thus carries exactly the
imaging latent the slice carries, and the cohort's ceilings (``truth/ceiling.json``) stay
valid. Everything else varies and carries no signal: body and lung size and shape, the
number of slices (24-40 at 8 mm, the length of the chest), vessels, lung texture, noise,
and a per-scanner intensity offset and scale (three scanners).

:func:`lesion_fraction` is the measurement an analyst would make by hand on such a
volume (bright voxels inside the lung mask), the yardstick the image encoder is compared
with (``benchmarks/image_3d.py``).
"""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from medweave._atomic import atomic_dir, atomic_file
from medweave.errors import InputError
from medweave.synth.imaging import _linear_upsampler

__all__ = [
    "SLICE_MM",
    "VOLUME_SOURCE",
    "lesion_fraction",
    "lesion_volume_mm3",
    "render_volume",
    "write_volumes",
]

#: Slice thickness (mm); in-plane spacing follows from the field of view and the grid.
SLICE_MM = 8.0
FOV_MM = 345.6  # the 2-D slices' field of view: 128 px at 2.7 mm
MM3_PER_PX = 1000.0  # total lesion volume per pixel of the 2-D slice's lesion area
_MAX_LESION_MM3 = 4.0 / 3.0 * np.pi * 28.0**3  # larger burdens are split into more nodules
# Lungs in mm from the body's centre: (dx, dy, semi-axis x, semi-axis y), before jitter
# (about the 2-D slice's lungs, with room to the body's wall even after jitter: the air
# inside stays apart from the air outside).
_LUNGS_MM = ((-56.0, 0.0, 42.0, 72.0), (56.0, 0.0, 42.0, 72.0))
# Scanners: (HU offset, HU scale, noise sd) — miscalibration a model must not learn.
_SCANNERS = ((-40.0, 0.92, 10.0), (0.0, 1.0, 15.0), (30.0, 1.08, 20.0))
#: File suffix by ``fmt``: plain NIfTI writes and reads three times faster than gzipped
#: (noise compresses poorly: 45% smaller).
_SUFFIX = {"nifti": ".nii", "nifti-gz": ".nii.gz"}
#: The ``cohort.yaml`` imaging source :func:`write_volumes` writes (paths in the cohort folder).
VOLUME_SOURCE = {
    "name": "imaging",
    "type": "nifti",
    "path": "volumes",
    "manifest": "volumes/manifest.csv",
}


def lesion_volume_mm3(area_px: np.ndarray | float) -> np.ndarray:
    """Total lesion volume (mm³) of a patient whose 2-D slice shows ``area_px`` pixels of
    lesion: linear, so the lesions fill the same share of the lungs as on the slice."""
    return MM3_PER_PX * np.asarray(area_px, dtype=np.float64)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], sd: float) -> np.ndarray:
    """Smooth random texture: a coarse grid of normal values, trilinearly upsampled (one
    axis at a time, the cheap order)."""
    cells = (8, 8, 5)
    coarse = rng.normal(0, sd, cells).astype(np.float32)
    ux, uy, uz = (_linear_upsampler(c, s) for c, s in zip(cells, shape, strict=True))
    a = (ux @ coarse.reshape(cells[0], -1)).reshape(shape[0], cells[1], cells[2])
    b = np.matmul(uy, a)  # (x, y, cz)
    return b @ uz.T


def _place(
    rng: np.random.Generator,
    radii: np.ndarray,
    lungs: list[tuple[float, float, float, float, float, float]],
) -> list[tuple[float, float, float]]:
    """Centres (mm) for spheres of ``radii`` inside the lung ellipsoids, apart where the
    room allows (30 tries each, then the last try)."""
    placed: list[tuple[float, float, float, float]] = []
    for r in radii:
        x = y = z = 0.0
        for _try in range(30):
            cx, cy, cz, ax, ay, az = lungs[int(rng.integers(0, 2))]
            u = rng.normal(size=3)
            u *= rng.random() ** (1 / 3) / np.linalg.norm(u)  # uniform in the unit ball
            shrink = np.maximum(np.array([ax, ay, az]) - r - 4.0, 0.3 * np.array([ax, ay, az]))
            x, y, z = (float(v) for v in np.array([cx, cy, cz]) + u * shrink)
            if all(
                (x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2 > (r + pr + 2) ** 2
                for px, py, pz, pr in placed
            ):
                break
        placed.append((x, y, z, float(r)))
    return [(x, y, z) for x, y, z, _ in placed]


def render_volume(
    rng: np.random.Generator,
    *,
    total_mm3: float,
    count: int,
    shape: tuple[int, int] = (64, 64),
    slices: tuple[int, int] = (24, 40),
) -> tuple[np.ndarray, np.ndarray]:
    """One chest CT volume in Hounsfield units as a scanner records them, and its affine.

    Returns ``(volume, affine)``: ``volume`` float32 of shape (x, y, slices) — nibabel's
    axis order, slices along the last axis — with ``count`` nodules (more when one would
    exceed a 28 mm radius) of ``total_mm3`` mm³ in all, and ``affine`` the voxel-to-mm
    (RAS) matrix.
    """
    nx, ny = shape
    sx, sy = FOV_MM / nx, FOV_MM / ny
    body_len = rng.uniform(0.0, 1.0)  # chest length, shared by slice count and lungs
    nz = round(slices[0] + body_len * (slices[1] - slices[0]))
    sz = SLICE_MM
    x = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * sx
    y = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * sy
    z = (np.arange(nz, dtype=np.float32) - (nz - 1) / 2) * sz
    xx, yy, zz = x[:, None, None], y[None, :, None], z[None, None, :]

    scale = rng.uniform(0.9, 1.1)  # body size
    bx, by = rng.uniform(138, 156) * scale, rng.uniform(115, 132) * scale
    body = (xx / bx) ** 2 + ((yy - 11 * scale) / by) ** 2 <= 1.0
    body = np.broadcast_to(body, (nx, ny, nz))
    hu = np.full((nx, ny, nz), -1000.0, dtype=np.float32)
    hu[body] = 40.0 + _smooth_noise(rng, (nx, ny, nz), 12.0)[body]

    half = nz * sz / 2
    lungs: list[tuple[float, float, float, float, float, float]] = []
    lung_mask = np.zeros((nx, ny, nz), dtype=bool)
    for dx, dy, ax, ay in _LUNGS_MM:
        j = np.clip(rng.normal(0, 2.5, 2), -5.0, 5.0)
        ax_, ay_ = (ax + j[0]) * scale, (ay + j[1]) * scale
        az_ = half * rng.uniform(0.78, 0.9)
        cz = half * rng.uniform(-0.08, 0.08)
        lungs.append((dx * scale, dy * scale, cz, ax_, ay_, az_))
        lung_mask |= ((xx - dx * scale) / ax_) ** 2 + ((yy - dy * scale) / ay_) ** 2 + (
            (zz - cz) / az_
        ) ** 2 <= 1.0
    hu[lung_mask] = -850.0 + _smooth_noise(rng, (nx, ny, nz), 35.0)[lung_mask]

    # vessels: short thin tubes along the body axis, bright like nodules but carrying nothing
    for _ in range(int(rng.integers(10, 24))):
        cx, cy, cz, ax, ay, az = lungs[int(rng.integers(0, 2))]
        rho, phi = np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        vx, vy = cx + (ax - 8) * rho * np.cos(phi), cy + (ay - 8) * rho * np.sin(phi)
        vz, length = cz + rng.uniform(-0.6, 0.6) * az, rng.uniform(10, 40)
        disk = (xx[:, :, 0] - vx) ** 2 + (yy[:, :, 0] - vy) ** 2 <= rng.uniform(2.5, 4.5) ** 2
        ks = np.flatnonzero(np.abs(z - vz) <= length / 2)
        if len(ks):
            k = np.s_[:, :, ks[0] : ks[-1] + 1]
            hu[k][disk[:, :, None] & lung_mask[k]] = rng.uniform(-200, 0)

    spine = (xx**2 + (yy - 81 * scale) ** 2 <= (16 + rng.normal(0, 3)) ** 2) & body
    hu[np.broadcast_to(spine, hu.shape)] = 650.0 + rng.normal(0, 160)

    if total_mm3 > 0:
        n = max(int(count), 1, int(np.ceil(total_mm3 / _MAX_LESION_MM3)))
        vols = total_mm3 * rng.dirichlet(np.full(n, 2.0))
        radii = np.cbrt(3 * vols / (4 * np.pi))
        for (px, py, pz), r in zip(_place(rng, radii, lungs), radii, strict=True):
            # an ellipsoid of the sphere's volume (axes scaled by factors of product 1)
            f = np.exp(rng.normal(0, 0.15, 3))
            a = r * f / np.cbrt(f.prod())
            centre = ((px, py, pz), a, (sx, sy, sz), ((nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2))
            lo = [
                max(int(np.floor((c - e) / s + o)) - 1, 0)
                for c, e, s, o in zip(*centre, strict=True)
            ]
            hi = [
                min(int(np.ceil((c + e) / s + o)) + 2, m)
                for c, e, s, o, m in zip(*centre, (nx, ny, nz), strict=True)
            ]
            if any(h <= low for low, h in zip(lo, hi, strict=True)):
                continue
            box = np.s_[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            d = np.sqrt(
                ((xx[lo[0] : hi[0]] - px) / a[0]) ** 2
                + ((yy[:, lo[1] : hi[1]] - py) / a[1]) ** 2
                + ((zz[:, :, lo[2] : hi[2]] - pz) / a[2]) ** 2
            )
            # a soft edge about one in-plane voxel wide, so partial voxels keep the volume
            edge = np.clip((1.0 - d) * r / sx + 0.5, 0.0, 1.0).astype(np.float32)
            fill = rng.uniform(10, 60) + rng.normal(0, 15, edge.shape).astype(np.float32)
            hu[box] = hu[box] * (1 - edge) + fill * edge

    offset, slope, noise = _SCANNERS[int(rng.integers(len(_SCANNERS)))]
    hu += noise * rng.standard_normal(hu.shape, dtype=np.float32)
    hu = hu * slope + offset
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = [-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, -(nz - 1) / 2 * sz]
    return hu, affine


def lesion_fraction(volume: np.ndarray, *, air_hu: float = -400.0) -> float:
    """The share of the lungs taken by bright tissue, as an analyst would measure it.

    Lungs: the air (below ``air_hu``) not connected to the volume's in-plane border (the
    air outside the body), with each axial slice's holes filled so that nodules and
    vessels inside the lungs belong to them. The fraction is the lungs' voxels at or
    above ``air_hu`` over all the lungs' voxels; slices run along the last axis.
    """
    from scipy import ndimage

    vol = np.asarray(volume)
    if vol.ndim != 3 or min(vol.shape) < 3:
        raise InputError(
            f"lesion_fraction: expected a 3-D volume (x, y, slices), got shape {vol.shape}"
        )
    air = vol < air_hu
    labels, _ = ndimage.label(air)
    border = np.unique(
        np.concatenate(
            [labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(), labels[:, -1].ravel()]
        )
    )
    lung = air & ~np.isin(labels, border)
    filled = np.stack(
        [ndimage.binary_fill_holes(lung[:, :, k]) for k in range(lung.shape[2])], axis=2
    )
    total = int(filled.sum())
    return float((filled & ~air).sum() / total) if total else 0.0


def _study_dates(cohort_dir: Path, ids: list[str], index: pd.Series) -> list[str]:
    """Per patient the StudyDate of the cohort's 2-D DICOM slice (``imaging/<id>.dcm``),
    else the index date minus three days; ISO 8601."""
    import pydicom

    out = []
    for pid in ids:
        date = None
        dcm = cohort_dir / "imaging" / f"{pid}.dcm"
        if dcm.is_file():
            with contextlib.suppress(Exception):
                raw = str(
                    pydicom.dcmread(dcm, stop_before_pixels=True, specific_tags=["StudyDate"]).get(
                        "StudyDate", ""
                    )
                )
                if len(raw) == 8 and raw.isdigit():
                    date = f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"
        if date is None:
            date = (pd.Timestamp(index[pid]) - pd.Timedelta(days=3)).strftime("%Y-%m-%d")
        out.append(date)
    return out


def write_volumes(
    cohort_dir: Path,
    *,
    seed: int,
    shape: tuple[int, int] = (64, 64),
    slices: tuple[int, int] = (24, 40),
    fmt: str = "nifti",
) -> Path:
    """Give each imaged patient of a synthetic cohort a 3-D NIfTI chest volume.

    Writes ``volumes/<patient_id>.nii`` (``.nii.gz`` with ``fmt="nifti-gz"``; int16 HU
    with the scanner's miscalibration, ``shape`` in-plane voxels over a 345.6 mm field,
    24-40 slices of 8 mm by default),
    ``volumes/manifest.csv`` (``patient_id``, ``path``, ``date``: the 2-D slice's
    StudyDate, else the index date minus three days) and rewrites ``cohort.yaml`` so
    that its ``imaging`` source reads the manifest (``type: nifti``); the DICOM slices
    stay. The folder is written under a temporary name and renamed, and ``cohort.yaml``
    atomically, so an interrupted call leaves the cohort as it was. Voxels come from a
    generator seeded by (``seed``, patient row). Returns the manifest's path.
    """
    import nibabel as nib

    cohort_dir = Path(cohort_dir)
    if fmt not in _SUFFIX:
        raise InputError(f"write_volumes: fmt={fmt!r}; expected one of {sorted(_SUFFIX)}")
    suffix = _SUFFIX[fmt]
    truth_path = cohort_dir / "truth" / "patients.parquet"
    config_path = cohort_dir / "cohort.yaml"
    for p in (truth_path, config_path, cohort_dir / "index.parquet"):
        if not p.is_file():
            raise InputError(
                f"write_volumes: {p} not found; expected a cohort written by medweave synth"
            )
    if len(shape) != 2 or min(shape) < 16 or slices[0] < 8 or slices[1] < slices[0]:
        raise InputError(
            f"write_volumes: shape={tuple(shape)}, slices={tuple(slices)}; expected two "
            "in-plane sizes of at least 16 and a slice range (low, high) with 8 <= low <= high"
        )
    truth = pd.read_parquet(truth_path)
    need = {"patient_id", "has_imaging", "lesion_area_px", "lesion_count"}
    if need - set(truth.columns):
        raise InputError(
            f"write_volumes: {truth_path} lacks columns {sorted(need - set(truth.columns))}; "
            "write the cohort with this version of medweave synth"
        )
    index = pd.read_parquet(cohort_dir / "index.parquet").set_index("patient_id")["index_date"]
    rows = np.flatnonzero(truth["has_imaging"].to_numpy(dtype=bool))
    ids = truth["patient_id"].astype(str).to_numpy()[rows].tolist()
    volumes = lesion_volume_mm3(truth["lesion_area_px"].to_numpy()[rows])
    counts = truth["lesion_count"].to_numpy()[rows]
    dates = _study_dates(cohort_dir, ids, index)
    out = cohort_dir / "volumes"
    with atomic_dir(out, overwrite=True) as tmp:
        for row, pid, total, count in zip(rows.tolist(), ids, volumes, counts, strict=True):
            rng = np.random.default_rng([seed, 0x3D, row])
            hu, affine = render_volume(
                rng, total_mm3=float(total), count=int(count), shape=shape, slices=slices
            )
            img = nib.Nifti1Image(np.clip(np.rint(hu), -2048, 4095).astype(np.int16), affine)
            img.header.set_xyzt_units("mm")
            nib.save(img, tmp / f"{pid}{suffix}")
        with (tmp / "manifest.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["patient_id", "path", "date"])
            w.writerows([pid, f"{pid}{suffix}", d] for pid, d in zip(ids, dates, strict=True))
    config = yaml.safe_load(config_path.read_text())
    sources = [s for s in config.get("sources", []) if s.get("name") != "imaging"]
    sources.insert(1 if sources else 0, dict(VOLUME_SOURCE))
    config["sources"] = sources
    text = (
        "# medweave build cohort.yaml --out DIR   (imaging: 3-D volumes, write_volumes)\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    with atomic_file(config_path) as t:
        t.write_text(text)
    return out / "manifest.csv"
