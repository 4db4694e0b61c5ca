"""Per-modality preprocessing fitted on training patients, turning a Cohort into tensors.

Each fitted preprocessor is plain arrays plus JSON (no pickle), so a bundle can carry it.
Rows of patients who lack a modality become zeros *and* a False mask: the fusion ignores
them, so the zeros are never read as data.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medweave.cohort import Cohort, ModalityBlock
from medweave.errors import InputError
from medweave.models._prep_image import resolve_image_size
from medweave.models._prep_sequence import fit_sequence, sequence_inputs
from medweave.preprocess import OmicsTransformer
from medweave.preprocess.impute import apply_iterative, fit_iterative
from medweave.preprocess.omics import SCALES

__all__ = [
    "ModalityPrep",
    "ModelInput",
    "PreparedBatch",
    "fit_preps",
    "n_rows",
    "screen_scores",
    "take_rows",
    "trim_padding",
]

log = logging.getLogger(__name__)

#: One modality's model input: a tensor, or a dict of (n, ...) tensors (sequences).
ModelInput = torch.Tensor | dict[str, torch.Tensor]


@dataclass
class ModalityPrep:
    """The fitted preprocessing of one modality.

    tabular / exposure / embedding: log1p of skewed non-negative features (counts, days),
    z-scoring, and for missing values either median imputation with missing-value indicators
    for features that were ever missing in training (``median``) or their conditional
    expectation given the patient's other features (``iterative``:
    :mod:`medweave.preprocess.impute`, no indicators); omics: log1p of counts and linear
    values (not of log values: the scale the source declared or detected,
    ``block.meta["scale"]``, kept in ``config`` so a bundle does the same), top-variance
    genes, z-scoring; then, with ``components``, the whitened scores on the training
    patients' top principal components (a latent state that shows in many correlated
    features — severity in labs and visits, a gene module — becomes a few inputs instead of
    hundreds); image:
    :func:`medweave.sources.imaging.load_image` at ``image_size`` (``"auto"``: from the
    images' shapes, see :mod:`medweave.models._prep_image`); sequence: see
    :mod:`medweave.models._prep_sequence` (a vocabulary, per-code value scaling, the
    ``sequence_max_len`` most recent events).
    """

    name: str
    kind: str
    feature_names: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    # --- fitting -----------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        block: ModalityBlock,
        rows: np.ndarray,
        *,
        omics_top_genes: int,
        image_size: tuple[int, ...] | str,
        components: int | None = None,
        keep: list[str] | None = None,
        image_intensity: str | tuple[float, float] = "zscore",
        sequence_max_len: int = 256,
        sequence_min_count: int = 5,
        imputation: str = "median",
        screen: int | None = None,
        target: np.ndarray | None = None,
    ) -> ModalityPrep:
        """Fit on the training ``rows`` of ``block`` that have the modality (``keep``:
        features left out of the ``components``; ``imputation``: ``median`` or
        ``iterative``, see the class; ``screen``: omics keep this many genes most
        associated with ``target``, see :func:`screen_scores`)."""
        if block.kind == "sequence":
            train = rows[block.present[rows]]
            prep = cls(block.name, block.kind, [])
            _at_least_two(block, train)
            prep.arrays, prep.config = fit_sequence(
                block, train, max_len=sequence_max_len, min_count=sequence_min_count
            )
            return prep
        prep = cls._fit(
            block,
            rows,
            omics_top_genes=omics_top_genes,
            image_size=image_size,
            imputation=imputation,
        )
        if screen and block.kind == "omics" and target is not None:
            prep._screen(block, rows, int(screen), target)
        if block.kind == "image":
            prep.config["intensity"] = _intensity_config(image_intensity)
        if components and block.kind != "image":
            prep._fit_components(block, rows, int(components), list(keep or []))
        return prep

    def _screen(
        self, block: ModalityBlock, rows: np.ndarray, keep: int, target: np.ndarray
    ) -> None:
        """Keep the ``keep`` genes most associated with the outcome on the training patients
        who have the modality (a gene's absolute :func:`screen_scores`), instead of the most
        variable ones: with thousands of genes and tens of events, variance picks genes by
        their biology's noise, not by what they say about the outcome. Fitted inside the
        training fold, like everything here, so the held-out patients stay unseen."""
        train = rows[block.present[rows]]
        if len(train) < 3:
            return
        log1p = bool(self.config["log1p"])
        x = np.nan_to_num(block.x[train].astype(np.float64), nan=0.0)
        x = np.log1p(np.clip(x, 0, None)) if log1p else x
        mean, sd = x.mean(axis=0), x.std(axis=0)
        usable = np.flatnonzero(sd > 0)
        z = (x[:, usable] - mean[usable]) / sd[usable]
        y = np.asarray(target)[train]
        score = np.abs(screen_scores(z, y))
        if not np.isfinite(score).any():
            log.warning("modality %r: no gene scores for screening; kept by variance", self.name)
            return
        top = np.argsort(-np.nan_to_num(score, nan=-1.0), kind="stable")[: min(keep, len(usable))]
        genes = np.sort(usable[top])
        self.arrays = {"genes": genes, "mean": mean[genes], "scale": sd[genes]}
        self.config["screen"] = {
            "genes": len(genes),
            "score": "cox" if y.ndim == 2 else "correlation",
        }

    def _fit_components(
        self, block: ModalityBlock, rows: np.ndarray, components: int, keep: list[str]
    ) -> None:
        """Principal components of the preprocessed features, except the ``keep`` features,
        which are passed through unchanged (demographics: one clear column each instead of
        a share of every component)."""
        z = self._features(block)[rows[block.present[rows]]].numpy().astype(np.float64)
        columns = self._columns()
        unknown = [f for f in keep if f not in columns]
        if unknown:
            raise InputError(
                f"pca_keep: modality {self.name!r} has no feature {unknown[0]!r} after "
                "preprocessing (a feature constant in training is dropped); remove it from "
                "pca_keep"
            )
        passthrough = np.array([columns.index(f) for f in keep], dtype=np.int64)
        rest = np.setdiff1d(np.arange(z.shape[1]), passthrough)
        if not len(rest):
            raise InputError(
                f"pca_keep: keeps every feature of modality {self.name!r}, leaving none for "
                "principal components; drop pca for it"
            )
        z = z[:, rest]
        k = max(1, min(components, z.shape[0] - 1, z.shape[1]))
        center = z.mean(axis=0)
        _, sv, vt = np.linalg.svd(z - center, full_matrices=False)
        scale = sv[:k] / np.sqrt(max(len(z) - 1, 1))
        self.arrays.update(
            {
                "pc_center": center,
                "basis": vt[:k],
                "pc_scale": np.where(scale > 0, scale, 1),
                "pc_passthrough": passthrough,
                "pc_rest": rest,
            }
        )

    def _columns(self) -> list[str]:
        """Names of the preprocessed feature columns (before principal components)."""
        a = self.arrays
        if self.kind == "omics":
            return [self.feature_names[int(g)] for g in a["genes"]]
        names = np.asarray(self.feature_names, dtype=object)
        keep, ind = a["keep"].astype(bool), a["indicator"].astype(bool)
        return [*names[keep], *(f"{n}:missing" for n in names[ind])]

    @classmethod
    def _fit(
        cls,
        block: ModalityBlock,
        rows: np.ndarray,
        *,
        omics_top_genes: int,
        image_size: tuple[int, ...] | str,
        imputation: str = "median",
    ) -> ModalityPrep:
        train = rows[block.present[rows]]
        prep = cls(block.name, block.kind, list(block.feature_names))
        if block.kind == "image":
            # every present image of the block counts, not only ``rows``: the grid
            # depends on no label, and so is the same for every seed's validation split
            prep.config = {"image_size": list(resolve_image_size(block, image_size))}
            return prep
        x = block.x[train].astype(np.float64)
        _at_least_two(block, train)
        if block.kind == "omics":
            scale, log1p = _omics_scale(block, x)
            t = OmicsTransformer(n_top=omics_top_genes, log1p=log1p)
            t.fit(np.nan_to_num(x, nan=0.0))
            prep.arrays = {"genes": t.genes_, "mean": t.mean_, "scale": t.scale_}
            prep.config = {"expression_scale": scale, "log1p": log1p}
            return prep
        observed = ~np.isnan(x)
        logged = _skewed(x)
        x = np.where(logged, np.log1p(np.clip(x, 0, None)), x)
        keep = observed.any(axis=0)
        median = np.where(keep, np.nanmedian(np.where(observed, x, np.nan), axis=0), 0.0)
        filled = np.where(observed, x, median)
        mean, sd = filled.mean(axis=0), filled.std(axis=0)
        keep &= sd > 0
        indicator = (~observed).any(axis=0) & keep
        prep.arrays = {
            "keep": keep,
            "median": median,
            "mean": mean,
            "scale": np.where(sd > 0, sd, 1.0),
            "indicator": indicator,
            "log": logged,
        }
        if imputation == "iterative" and keep.sum() >= 2 and indicator.any():
            z = (np.where(observed, x, np.nan) - mean) / prep.arrays["scale"]
            prep.arrays.update(fit_iterative(z[:, keep]))
            prep.arrays["indicator"] = np.zeros_like(indicator)
        return prep

    # --- applying ------------------------------------------------------------------------
    @property
    def out_features(self) -> int:
        a = self.arrays
        if "basis" in a:
            return len(a["basis"]) + len(a.get("pc_passthrough", ()))
        if self.kind == "omics":
            return len(a["genes"])
        return int(a["keep"].sum() + a["indicator"].sum())

    def input_shape(self) -> tuple[int, ...]:
        if self.kind == "image":
            return (1, *self.config["image_size"])
        if self.kind == "sequence":
            return (int(self.config["max_len"]),)
        return (self.out_features,)

    @property
    def vocab_size(self) -> int:
        """Sequences: the number of codes + 2 (0 = padding, the last id = unknown code)."""
        return len(self.config["vocabulary"]) + 2 if self.kind == "sequence" else 0

    def transform(self, block: ModalityBlock) -> ModelInput:
        """The model input for every patient of ``block`` (absent rows are zeros, or empty
        sequences)."""
        if self.kind == "sequence":
            self._check_kind(block)
            return sequence_inputs(block, self.arrays, self.config, name=self.name)
        return self._features(block)

    def _features(self, block: ModalityBlock) -> torch.Tensor:
        x = self._aligned(block)
        present = block.present
        if self.kind == "image":
            return self._images(block)
        a = self.arrays
        if self.kind == "omics":
            data = np.nan_to_num(x, nan=0.0)
            if self._omics_log1p(block):
                data = np.log1p(np.clip(data, 0, None))
            out = (data[:, a["genes"].astype(int)] - a["mean"]) / a["scale"]
        else:
            observed = ~np.isnan(x)
            if "log" in a:
                x = np.where(a["log"].astype(bool), np.log1p(np.clip(x, 0, None)), x)
            keep, ind = a["keep"].astype(bool), a["indicator"].astype(bool)
            iterative = "imp_feature" in a  # model-based fill (no indicators)
            fill = np.nan if iterative else a["median"]
            z = (np.where(observed, x, fill) - a["mean"]) / a["scale"]
            if iterative:
                out = apply_iterative(z[:, keep], a)
            else:
                out = np.concatenate([z[:, keep], (~observed[:, ind]).astype(np.float64)], axis=1)
        if "basis" in a:
            out = np.nan_to_num(out)
            rest = a["pc_rest"].astype(int) if "pc_rest" in a else slice(None)
            pcs = ((out[:, rest] - a["pc_center"]) @ a["basis"].T) / a["pc_scale"]
            passthrough = a.get("pc_passthrough", np.zeros(0)).astype(int)
            out = np.concatenate([out[:, passthrough], pcs], axis=1)
        out[~present] = 0.0
        return torch.from_numpy(np.nan_to_num(out).astype(np.float32))

    def _omics_log1p(self, block: ModalityBlock) -> bool:
        """Whether expression is log1p-transformed, as at fit (bundles from before the
        scale was stored: yes); a cohort whose expression is on a log scale where the
        training data was not (or the other way round) is an error, not a silent shift."""
        log1p = bool(self.config.get("log1p", True))
        scale = block.meta.get("scale")
        trained = self.config.get("expression_scale")
        if scale in SCALES and trained in SCALES and (scale == "log") != (trained == "log"):
            how = "detected" if block.meta.get("scale_detected") else "declared"
            raise InputError(
                f"modality {self.name!r}: the model was trained on expression on a {trained} "
                f"scale, this cohort's is on a {scale} scale ({how}); declare scale: "
                f"{trained} in its source if that is what the values are, or convert them"
            )
        return log1p

    def _check_kind(self, block: ModalityBlock) -> None:
        if block.kind != self.kind:
            raise InputError(
                f"modality {self.name!r}: the model was trained on kind {self.kind!r}, "
                f"the cohort has {block.kind!r}"
            )

    def _aligned(self, block: ModalityBlock) -> np.ndarray:
        """``block.x`` with columns in the training order; missing features are an error."""
        self._check_kind(block)
        if self.kind == "image" or block.feature_names == self.feature_names:
            return block.x
        pos = {f: j for j, f in enumerate(block.feature_names)}
        missing = [f for f in self.feature_names if f not in pos]
        if missing:
            raise InputError(
                f"modality {self.name!r}: the model expects {len(self.feature_names)} features; "
                f"the cohort lacks {len(missing)} of them (e.g. {', '.join(missing[:3])}); "
                "build the cohort with the same sources and settings as for training"
            )
        extra = len(block.feature_names) - len(self.feature_names)
        if extra > 0:
            log.warning(
                "modality %r: ignoring %d features the model was not trained on", self.name, extra
            )
        return block.x[:, [pos[f] for f in self.feature_names]]

    def _images(self, block: ModalityBlock) -> torch.Tensor:
        size = tuple(int(s) for s in self.config["image_size"])
        out = torch.zeros((len(block.ids), 1, *size), dtype=torch.float32)
        images = block.meta.get("images") or {}
        for i, path in enumerate(block.paths or []):
            if path is None or not block.present[i]:
                continue
            shape = (images.get(block.ids[i]) or {}).get("shape")
            if shape and len(shape) != len(size):
                raise InputError(
                    f"modality {self.name!r}: {path} has {len(shape)} spatial axes (shape "
                    f"{' x '.join(map(str, shape))}); the model was trained on images of "
                    f"{len(size)} ({' x '.join(map(str, size))}); give it images like those"
                )
            arr = _load_image(path, size, _mtime(path), *_intensity_args(self.config))
            out[i] = torch.from_numpy(arr.copy())
        return out

    # --- bundles -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "feature_names": self.feature_names,
            "config": self.config,
            "arrays": sorted(self.arrays),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], tensors: dict[str, np.ndarray]) -> ModalityPrep:
        arrays = {k: tensors[f"prep.{data['name']}.{k}"] for k in data["arrays"]}
        return cls(data["name"], data["kind"], list(data["feature_names"]), arrays, data["config"])

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            f"prep.{self.name}.{k}": np.ascontiguousarray(
                v.astype(np.float64) if v.dtype != np.bool_ else v.astype(np.uint8)
            )
            for k, v in self.arrays.items()
        }


def _at_least_two(block: ModalityBlock, train: np.ndarray) -> None:
    if len(train) < 2:
        raise InputError(
            f"modality {block.name!r}: only {len(train)} training patients have it; "
            "need at least 2 to fit its preprocessing"
        )


def _omics_scale(block: ModalityBlock, x: np.ndarray) -> tuple[str, bool]:
    """The expression scale the source declared or detected (``block.meta["scale"]``), and
    whether it takes a log1p (counts and linear values do, log values do not). A block
    from before the declaration gets log1p unless it holds negative values (log scale)."""
    scale = block.meta.get("scale")
    negative = bool(np.nanmin(x, initial=0.0) < 0)
    if scale not in SCALES:
        scale = "log" if negative else "linear"
    log1p = scale != "log"
    if log1p and negative:
        raise InputError(
            f"modality {block.name!r}: expression has negative values, but its scale is "
            f"{scale} (log1p needs values >= 0); declare scale: log in its source if the "
            "values are log-scaled"
        )
    return str(scale), log1p


def _skewed(x: np.ndarray) -> np.ndarray:
    """Columns to log1p: non-negative, with a long right tail (skewness > 2) — counts,
    lengths of stay, days since an event."""
    with np.errstate(all="ignore"):
        lo = np.nanmin(np.where(np.isnan(x), np.inf, x), axis=0)
        mean = np.nanmean(x, axis=0)
        sd = np.nanstd(x, axis=0)
        skew = np.nanmean(((x - mean) / np.where(sd > 0, sd, 1)) ** 3, axis=0)
    return np.asarray((lo >= 0) & np.isfinite(lo) & (skew > 2), dtype=bool)


def _mtime(path: str) -> int:
    # A series may be several files joined with os.pathsep: the newest one counts.
    return max(os.stat(p).st_mtime_ns for p in path.split(os.pathsep))


def _intensity_config(intensity: str | tuple[float, float] | list[float]) -> Any:
    """``image_intensity`` as stored in a bundle: a name, or [low, high] of a fixed window."""
    if isinstance(intensity, str):
        if intensity not in ("zscore", "minmax", "window"):
            raise InputError(
                f"image_intensity {intensity!r} is not zscore, minmax, window (the file's own "
                "WindowCenter/WindowWidth) or a (low, high) window such as (-1000, 400)"
            )
        return intensity
    low, high = (float(v) for v in intensity)
    if not low < high:
        raise InputError(f"image_intensity window {intensity} must be (low, high), low < high")
    return [low, high]


def _intensity_args(config: dict[str, Any]) -> tuple[str, tuple[float, float] | None]:
    value = config.get("intensity", "zscore")  # bundles from before the option: zscore
    if isinstance(value, str):
        return value, None
    return "window", (float(value[0]), float(value[1]))


@functools.lru_cache(maxsize=50_000)
def _load_image(
    path: str,
    size: tuple[int, ...],
    mtime_ns: int,
    intensity: str = "zscore",
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """One image at ``size``, one channel, intensities as ``intensity`` says (see
    :func:`medweave.sources.imaging.load_image`); cached while the file is unchanged, so
    every model of a grid (and every predict call) reads and resamples it once."""
    from medweave.sources.imaging import load_image

    del mtime_ns  # part of the cache key only
    arr = np.asarray(
        load_image(path, spatial_size=size, intensity=intensity, window=window),  # type: ignore[arg-type]
        dtype=np.float32,
    )
    if arr.shape[0] != 1:  # several channels or slices: average to one channel
        arr = arr.mean(axis=0, keepdims=True)
    arr = arr.reshape(1, *size)
    arr.flags.writeable = False
    return arr


@dataclass
class PreparedBatch:
    """Model inputs for a set of patients: per modality a tensor (or a dict of tensors,
    for sequences) and a bool mask."""

    inputs: dict[str, ModelInput]
    masks: dict[str, torch.Tensor]


def take_rows(x: ModelInput, rows: Any) -> ModelInput:
    """The rows ``rows`` (an index, slice or array) of a model input; a sequence input of
    several rows is cut to its longest sequence (see :func:`trim_padding`)."""
    if isinstance(x, dict):
        out = {k: v[rows] for k, v in x.items()}
        return out if isinstance(rows, int) else trim_padding(out)
    return x[rows]


def trim_padding(x: ModelInput) -> ModelInput:
    """A batch of sequences (left-aligned, ``mask`` True on events) without the padding
    columns no row of it uses: the encoders ignore padding, so the output is the same and
    a batch of short histories costs what they hold, not the cohort's longest."""
    if not isinstance(x, dict) or "mask" not in x or x["mask"].dim() != 2:
        return x
    used = int(x["mask"].sum(dim=1).max()) if len(x["mask"]) else 1
    return {k: v[:, : max(used, 1)] for k, v in x.items()}


def n_rows(x: ModelInput) -> int:
    """The number of patients of a model input."""
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)


def fit_preps(
    cohort: Cohort,
    modalities: list[str],
    rows: np.ndarray,
    *,
    omics_top_genes: int,
    image_size: tuple[int, ...] | str,
    components: dict[str, int] | None = None,
    keep: dict[str, list[str]] | None = None,
    image_intensity: str | tuple[float, float] = "zscore",
    sequence_max_len: int = 256,
    sequence_min_count: int = 5,
    imputation: str = "median",
    screen: dict[str, int] | None = None,
    target: np.ndarray | None = None,
) -> dict[str, ModalityPrep]:
    """Fit each modality's preprocessing on the training ``rows`` (``components``: the
    number of principal components kept per modality, where given, ``keep`` the features
    passed through beside them; ``sequence_*``: see
    :mod:`medweave.models._prep_sequence`; ``imputation``: of missing feature values,
    ``median`` or ``iterative``, see :class:`ModalityPrep`; ``screen``: genes kept per
    omics modality by their association with ``target`` — every patient's, of which only
    ``rows`` are read — see :func:`screen_scores`)."""
    if imputation not in ("median", "iterative"):
        raise InputError(f"feature_imputation={imputation!r}; expected 'median' or 'iterative'")
    out = {}
    for m in modalities:
        if m not in cohort.modalities:
            raise InputError(
                f"modality {m!r} is not in the cohort; it has {', '.join(cohort.modalities)}"
            )
        out[m] = ModalityPrep.fit(
            cohort.modalities[m],
            rows,
            omics_top_genes=omics_top_genes,
            image_size=image_size,
            components=(components or {}).get(m),
            keep=(keep or {}).get(m),
            image_intensity=image_intensity,
            sequence_max_len=sequence_max_len,
            sequence_min_count=sequence_min_count,
            imputation=imputation,
            screen=(screen or {}).get(m),
            target=target,
        )
    return out


def screen_scores(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Univariate association of each column of ``z`` (patients x genes, standardised)
    with the outcome ``y``, as a z-like statistic: for survival (``y`` of shape (n, 2):
    time, event) the Cox partial-likelihood score test at beta = 0 (Breslow ties),
    ``U / sqrt(I)``; otherwise the correlation with ``y`` times sqrt(n) (a binary label's
    point-biserial correlation). Vectorised over the genes."""
    z = np.asarray(z, dtype=np.float64)
    if y.ndim == 2:
        time, event = y[:, 0].astype(np.float64), y[:, 1] > 0
        order = np.argsort(time, kind="stable")
        t, x = time[order], z[order]
        ev = event[order]
        # risk set of an event at t: everyone with time >= t (rows from the first such one)
        start = np.searchsorted(t, t[ev], side="left")
        s1 = np.cumsum(x[::-1], axis=0)[::-1]
        s2 = np.cumsum((x**2)[::-1], axis=0)[::-1]
        s0 = (len(t) - start)[:, None].astype(np.float64)
        m1 = s1[start] / s0
        u = (x[ev] - m1).sum(axis=0)
        info = (s2[start] / s0 - m1**2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(info > 0, u / np.sqrt(info), 0.0)
    v = np.asarray(y, dtype=np.float64).reshape(len(z), -1)[:, 0]
    v = v - v.mean()
    sd = v.std()
    if not sd > 0:
        return np.zeros(z.shape[1])
    return (z.T @ v) / (len(v) * sd) * np.sqrt(len(v))


def prepare(cohort: Cohort, preps: dict[str, ModalityPrep]) -> PreparedBatch:
    """Transform every patient of ``cohort`` with fitted preprocessing."""
    inputs, masks = {}, {}
    for m, prep in preps.items():
        if m not in cohort.modalities:
            raise InputError(
                f"the model needs modality {m!r}, which the cohort does not have "
                f"(it has {', '.join(cohort.modalities) or 'none'})"
            )
        block = cohort.modalities[m]
        inputs[m] = prep.transform(block)
        masks[m] = torch.from_numpy(block.present.copy())
    return PreparedBatch(inputs, masks)
