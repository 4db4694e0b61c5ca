"""The ``auto`` preset: estimator settings chosen from the training cohort, by stated rules.

A setting left at ``"auto"`` (every one below, by default) is chosen at ``fit`` from the
cohort the estimator is trained on — its patients, its *events* (survival: deaths or
other events; binary: the smaller class; multiclass: the smallest class; regression: the
patients), its modalities' kinds and feature counts — and recorded with the reason in
``MultimodalEstimator.settings_``; a value the user passes is kept as given. Under
``preset="none"`` every ``"auto"`` takes the estimator's historical constant (:data:`RAW`).

The rules (``e`` events, ``n`` patients of the training cohort):

- optimisation: ``lr`` 5e-4, ``pretrain_lr`` 1e-3, ``min_epochs`` 30, ``patience`` 20,
  ``max_epochs`` 120 — measured on the demo cohort (``benchmarks/bench_models.py``,
  ``bench_seeds.py``): a slower rate and a floor of epochs keep the image encoder from
  stopping before it learns;
- ``val_fraction`` (early stopping's split) holds at least 20 events: 0.15 when that is
  enough (e >= 134), else 20 / e up to 0.3; with fewer than 60 events no split at all (a
  validation loss over a dozen events is noise), and a fixed number of epochs instead
  (``min_epochs = max_epochs = 60``);
- ``batch_size``: an eighth of the patients trained on, between 16 and 128 — several
  optimiser steps per epoch however small the cohort;
- ``pca`` per feature modality (not images, sequences, or modalities with gene sets):
  omics ``e // 22`` components and tabular ``e // 44``, at least 2 and at most 16 and 8,
  when the modality has more than four times as many features — about 22 (44) events per
  component; on the demo's folds (356 training events) that is its 16 and 8. Expression
  and a hundred correlated EHR features carry a few latent states; a network fed all of
  them spends its events on noise;
- ``pca_keep``: ``age_at_index`` and ``sex_male`` where a reduced modality has them (and
  they vary), so demographics stay one clear input each;
- ``omics_screen``: with more than ten genes per event, the ``5 e`` genes (50 to 500) most
  associated with the outcome on the training patients (univariate Cox score test, or
  the correlation with the label) instead of the most variable ones, before ``pca`` — the
  supervised principal components of Bair & Tibshirani (2004);
- width: ``embed_dim`` and ``fused_dim`` 32 with at least 200 events, 16 from 80, else
  8; the ``mlp`` / ``omics_mlp`` hidden layers scale with them (2× and 4×);
- ``ensemble`` 3 (1 above 20,000 patients, where one network's variance is small and each
  member costs a pass over every patient); ``interactions`` 1 (the penalised GLM beside
  the networks; not for multiclass, nor with fewer than 10 events, too few for its
  5-fold penalty search);
- ``encoder_params``: ``image_cnn`` encoders train on randomly flipped images
  (``augment: true``) unless the user set ``augment``;
- ``omics_top_genes``: 500 most variable genes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.models.interactions import FOLDS as GLM_FOLDS

__all__ = [
    "AUTO",
    "AUTO_KEYS",
    "PRESETS",
    "RAW",
    "CohortProfile",
    "Resolved",
    "planned_interactions",
    "profile",
    "resolve",
]

log = logging.getLogger(__name__)

AUTO = "auto"
PRESETS = ("auto", "none")

#: What ``"auto"`` means under ``preset="none"``: the estimator's constants before the preset.
RAW: dict[str, Any] = {
    "lr": 2e-3,
    "pretrain_lr": None,
    "min_epochs": 0,
    "patience": 10,
    "max_epochs": 80,
    "batch_size": 128,
    "val_fraction": 0.15,
    "embed_dim": 32,
    "fused_dim": 32,
    "ensemble": 1,
    "interactions": None,
    "omics_top_genes": 500,
    "omics_screen": None,
    "pca": None,
    "pca_keep": None,
    "encoder_params": None,
}
AUTO_KEYS = tuple(RAW)

#: The demo's optimisation settings (measured there; see the module docstring).
OPTIMISATION = {"lr": 5e-4, "pretrain_lr": 1e-3, "min_epochs": 30, "patience": 20}
MAX_EPOCHS = 120
FIXED_EPOCHS = 60  # without a validation split
VAL_EVENTS = 20  # events early stopping should watch
MIN_SPLIT_EVENTS = 60  # fewer: no split
KEEP = ("age_at_index", "sex_male")
#: Fewer events per 1,000 trainable parameters than this is warned about (the demo's
#: networks have ~10 on its folds; the plain constants on 30 events ~1.4).
LOW_EVENTS_PER_1K_PARAMS = 5.0


@dataclass(frozen=True)
class CohortProfile:
    """What the rules read from the training cohort."""

    patients: int
    events: int
    what_events: str
    modalities: dict[str, dict[str, Any]]  # name -> kind, features, present

    def to_json(self) -> dict[str, Any]:
        return {
            "patients": self.patients,
            "events": self.events,
            "events_are": self.what_events,
            "modalities": self.modalities,
        }


@dataclass
class Resolved:
    """Every setting's value used by the fit, the auto-chosen ones with their reasons, and
    warnings about the cohort's size."""

    values: dict[str, Any]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def choose(self, name: str, value: Any, reason: str) -> None:
        self.values[name] = value
        self.settings[name] = {"value": value, "reason": reason}

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        self.warnings.append(message)


def count_events(task: str, target: Any) -> tuple[int, str]:
    """The outcome's information content: events (survival), the smaller class (binary,
    multiclass), the patients (regression)."""
    if hasattr(target, "event"):
        return int(np.asarray(target.event).sum()), "events"
    y = np.asarray(target)
    if task in ("binary", "multiclass"):
        _, counts = np.unique(y[~_missing(y)], return_counts=True)
        return (int(counts.min()) if len(counts) > 1 else 0), "patients of the smaller class"
    return len(y), "patients"


def _missing(y: np.ndarray) -> np.ndarray:
    return np.asarray(y != y) if y.dtype.kind == "f" else np.zeros(len(y), dtype=bool)


def profile(cohort: Cohort, modalities: list[str], task: str, target: Any) -> CohortProfile:
    """The training cohort as the rules see it (no patient identifiers: counts only)."""
    events, what = count_events(task, target)
    mods = {}
    for m in modalities:
        if m not in cohort.modalities:
            raise InputError(
                f"modality {m!r} is not in the cohort; it has {', '.join(cohort.modalities)}"
            )
        b = cohort.modalities[m]
        mods[m] = {
            "kind": b.kind,
            "features": len(b.feature_names),
            "present": int(np.asarray(b.present).sum()),
        }
    return CohortProfile(cohort.n, events, what, mods)


def planned_interactions(params: Mapping[str, Any], *, task: str = "binary") -> bool:
    """Whether estimators built from ``params`` (a study's ``estimator`` section) fit the
    GLM of ``interactions`` — for a scheduler that must know before any fit."""
    value = params.get("interactions", AUTO)
    if value == AUTO:
        return params.get("preset", AUTO) == AUTO and task != "multiclass"
    return bool(value)


def resolve(
    params: Mapping[str, Any],
    prof: CohortProfile,
    *,
    task: str,
    cohort: Cohort,
    gene_set_modalities: tuple[str, ...] = (),
    encoders: Mapping[str, str] | None = None,
) -> Resolved:
    """The value of every :data:`AUTO_KEYS` setting for this fit (``params``: the
    estimator's constructor arguments)."""
    preset = params.get("preset", AUTO)
    preset = "none" if preset is None else preset
    if preset not in PRESETS:
        raise InputError(f"preset={preset!r}; expected 'auto' or 'none' (the raw constants)")
    given = {k: params.get(k, AUTO) for k in AUTO_KEYS}
    screen = given["omics_screen"]
    if screen not in (AUTO, None) and not isinstance(screen, dict):
        raise InputError(
            f"omics_screen={screen!r}; expected modality -> number of genes (e.g. "
            "{rna: 200}), 'auto' or None"
        )
    out = Resolved({k: v for k, v in given.items() if v != AUTO})
    todo = [k for k in AUTO_KEYS if given[k] == AUTO]
    if preset == "none":
        for k in todo:
            out.values[k] = RAW[k]
        return out
    e, n = prof.events, prof.patients
    ev = f"{e} {prof.what_events}"
    if "val_fraction" in todo:
        if e >= round(VAL_EVENTS / 0.15) + 1:
            out.choose("val_fraction", 0.15, f"0.15 of {ev} holds >= {VAL_EVENTS} events")
        elif e >= MIN_SPLIT_EVENTS:
            f = round(min(0.3, VAL_EVENTS / e), 3)
            out.choose("val_fraction", f, f"{ev}: the split holds ~{round(f * e)} events")
        else:
            out.choose(
                "val_fraction",
                0.0,
                f"{ev} (< {MIN_SPLIT_EVENTS}): no early-stopping split, a fixed number of epochs",
            )
    split = float(out.values["val_fraction"])
    held = split * e
    if 0 < held < VAL_EVENTS:
        out.warn(
            f"the early-stopping split holds ~{held:.0f} events (< {VAL_EVENTS}): its loss is "
            "noisy; consider more data or val_fraction=0 with fixed epochs"
        )
    fixed = split <= 0
    for k, v in OPTIMISATION.items():
        if k in todo:
            if fixed and k in ("min_epochs",):
                out.choose(k, FIXED_EPOCHS, "no validation split: a fixed number of epochs")
            else:
                out.choose(k, v, "the demo's measured setting")
    if "max_epochs" in todo:
        if fixed:
            out.choose("max_epochs", FIXED_EPOCHS, "no validation split: a fixed number of epochs")
        else:
            out.choose("max_epochs", MAX_EPOCHS, "the demo's measured setting")
    if "batch_size" in todo:
        fit_n = max(1, round(n * (1 - split)))
        bs = int(min(128, max(16, fit_n // 8)))
        out.choose("batch_size", bs, f"an eighth of the {fit_n} patients trained on, 16-128")
    width = 32 if e >= 200 else 16 if e >= 80 else 8
    why_width = f"{ev}: 32 from 200 events, 16 from 80, else 8"
    for k in ("embed_dim", "fused_dim"):
        if k in todo:
            out.choose(k, width, why_width)
    if "ensemble" in todo:
        if n > 20_000:
            out.choose("ensemble", 1, f"{n} patients: one network (each member costs a pass)")
        else:
            out.choose("ensemble", 3, "three networks averaged (seeds, splits)")
    if "interactions" in todo:
        if task == "multiclass":
            out.choose("interactions", None, "multiclass: no single logit for the GLM")
        elif e < 2 * GLM_FOLDS:
            out.choose("interactions", None, f"{ev}: too few for the GLM's {GLM_FOLDS}-fold CV")
        else:
            out.choose("interactions", 1, "the penalised GLM of rank-1 pairs beside the networks")
    if "omics_top_genes" in todo:
        out.choose("omics_top_genes", 500, "the 500 most variable genes")
    kinds = {m: d["kind"] for m, d in prof.modalities.items()}
    if "omics_screen" in todo:
        screen = {}
        for m, d in prof.modalities.items():
            if d["kind"] == "omics" and d["features"] > 10 * max(e, 1) and task != "multiclass":
                screen[m] = int(min(500, max(50, 5 * e)))
        reason = (
            "; ".join(f"{m}: {prof.modalities[m]['features']} genes for {ev}" for m in screen)
            or "fewer than ten genes per event: the most variable genes"
        )
        out.choose("omics_screen", screen or None, reason)
    if "pca" in todo:
        pca: dict[str, int] = {}
        for m, d in prof.modalities.items():
            if m in gene_set_modalities or d["kind"] not in ("tabular", "exposure", "omics"):
                continue
            if d["kind"] == "omics":
                n_pc = min(16, max(2, e // 22))
                p = min(d["features"], _omics_inputs(out.values, m))
            else:
                n_pc, p = min(8, max(2, e // 44)), d["features"]
            if p > 4 * n_pc:
                pca[m] = n_pc
        out.choose(
            "pca",
            pca or None,
            f"{ev}: omics e//22 (2-16), tabular e//44 (2-8) components where features > 4x",
        )
    if "pca_keep" in todo:
        keep = sorted(
            {f for m in out.values.get("pca") or {} for f in _varying(cohort, m, KEEP)},
            key=KEEP.index,
        )
        out.choose("pca_keep", keep or None, "demographics beside the components")
    width = int(out.values["embed_dim"])
    auto_params = _encoder_params(kinds, width=width, encoders=encoders or {})
    why = "images flipped at random in training" + (
        f"; hidden layers {2 * width} (mlp), {4 * width} (omics_mlp)" if width < 32 else ""
    )
    if "encoder_params" in todo:
        out.choose("encoder_params", auto_params, why)
    elif auto_params:  # the user's entries over the automatic ones, key by key
        merged = merge_encoder_params(auto_params, params.get("encoder_params"))
        out.choose("encoder_params", merged, f"{why}; the given entries over these")
    fusion = params.get("fusion")
    scaled = _fusion_width(str(fusion), width) if fusion else {}
    given_fusion = params.get("fusion_params") or {}
    if scaled and any(k not in given_fusion for k in scaled):
        out.choose(
            "fusion_params",
            {**scaled, **given_fusion},
            f"the {fusion} fusion's layers scaled to width {width} (of the demo's 32)",
        )
    return out


def _fusion_width(fusion: str, width: int) -> dict[str, int]:
    """A fusion's layer sizes (``hidden``, ``proj_dim``, ``d_model``) scaled from their
    defaults by ``width / 32``, at least 8; nothing at the demo's width."""
    import inspect

    from medweave.models.fusion import FUSIONS

    if width >= 32 or fusion not in FUSIONS.names():
        return {}
    sig = inspect.signature(FUSIONS.get(fusion))
    return {
        k: max(8, int(p.default) * width // 32)
        for k, p in sig.parameters.items()
        if k in ("hidden", "proj_dim", "d_model") and isinstance(p.default, int)
    }


def _omics_inputs(values: Mapping[str, Any], modality: str) -> int:
    """Genes an omics modality keeps before ``pca``."""
    screen = values.get("omics_screen") or {}
    if modality in screen:
        return int(screen[modality])
    return int(values.get("omics_top_genes") or RAW["omics_top_genes"])


def _varying(cohort: Cohort, modality: str, names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` that ``modality`` has and that vary among its patients (a
    constant feature is dropped by the preprocessing, and could not be kept)."""
    block = cohort.modalities[modality]
    out = []
    for f in names:
        if f in block.feature_names:
            col = np.asarray(block.x[block.present, block.feature_names.index(f)], dtype=float)
            col = col[~np.isnan(col)]
            if len(col) > 1 and np.ptp(col) > 0:
                out.append(f)
    return out


def _encoder_params(
    kinds: Mapping[str, str], *, width: int, encoders: Mapping[str, str]
) -> dict[str, dict[str, Any]] | None:
    """Auto encoder parameters: flips for image encoders; hidden widths scaled with
    ``width`` when it is below the demo's 32 (at 32 they are the encoders' defaults)."""
    from medweave.models.estimator import DEFAULT_ENCODERS

    out: dict[str, dict[str, Any]] = {}
    for m, kind in kinds.items():
        name = encoders.get(m) or DEFAULT_ENCODERS.get(kind)
        if name == "image_cnn":
            out[m] = {"augment": True}
        elif name == "mlp" and width < 32:
            out[m] = {"hidden": [2 * width]}
        elif name == "omics_mlp" and width < 32:
            out[m] = {"hidden": [4 * width]}
    return out or None


def merge_encoder_params(
    auto: Mapping[str, Mapping[str, Any]] | None, given: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """The user's ``encoder_params`` over the automatic ones, key by key."""
    out = {m: dict(p) for m, p in (auto or {}).items()}
    for m, p in (given or {}).items():
        out[m] = {**out.get(m, {}), **p}
    return out


def check_capacity(res: Resolved, prof: CohortProfile, trainable: int) -> None:
    """Record events per 1,000 trainable parameters; warn when they are few."""
    per_k = 1000 * prof.events / max(trainable, 1)
    res.settings["events_per_1k_parameters"] = {
        "value": round(per_k, 2),
        "reason": f"{prof.events} {prof.what_events}, {trainable} trainable parameters "
        "(one network, stage 2 with frozen stage-1 encoders)",
    }
    if per_k < LOW_EVENTS_PER_1K_PARAMS:
        res.warn(
            f"{prof.events} {prof.what_events} for {trainable} trainable parameters "
            f"({per_k:.1f} per 1,000; the demo has ~10): the networks may overfit; prefer "
            "pca, a smaller embed_dim, or the classical peers"
        )
