"""Knobs of the synthetic generator: how each modality's signal enters the true risk, how
strong it is, whether the cross-modal interaction is on, how many features each modality
has and how common events are.

One :class:`Scenario` describes a draw; the default one is the cohort ``medweave synth``
has always written (bit for bit), so the knobs only widen the benchmark, they never move
the demo. The ceilings follow the knobs: they are computed from the same
:func:`medweave.synth._model.linear_predictor`, with the shapes and strengths applied, so
"ceiling" stays the best score achievable on the data a scenario writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from medweave.errors import InputError

__all__ = [
    "DEFAULT_SCENARIO",
    "MODALITIES",
    "SHAPES",
    "SHAPE_LATENTS",
    "Scenario",
    "shaped",
]

Shape = Literal["linear", "threshold", "u"]
#: ``linear``: the latent itself; ``threshold``: a step at ``THRESHOLD_AT`` (risk jumps once
#: the latent passes it, flat on either side); ``u``: a parabola (both ends are harmful).
SHAPES: tuple[str, ...] = ("linear", "threshold", "u")
#: The modalities whose signal can be shaped and scaled.
MODALITIES: tuple[str, ...] = ("ehr", "imaging", "omics", "environment")
#: The latents a modality's shape applies to. Age and sex stay linear (demographics are
#: not what a shape knob is about); the interaction uses the raw latents.
SHAPE_LATENTS: dict[str, tuple[str, ...]] = {
    "ehr": ("s_ehr",),
    "imaging": ("img",),
    "omics": ("m_prolif", "m_inflam"),
    "environment": ("env",),
}
#: The step of the threshold shape, on the latent's (roughly standard normal) scale.
THRESHOLD_AT = 0.5
# For a standard normal latent: P(x > 0.5) and its standard deviation, so the step has
# mean 0 and variance 1 like the linear latent (a shape changes the form, not the size).
_STEP_P = 0.3085375387259869
_STEP_SD = float(np.sqrt(_STEP_P * (1.0 - _STEP_P)))
#: Genes per module at most (the default, 1,200 genes: 25 genes in each of 8 modules).
MAX_GENES_PER_MODULE = 25
#: The fewest genes a cohort may have: two per module plus a few background genes.
MIN_GENES = 20
MAX_GENES = 20_000
MAX_NOISE_LABS = 200


def shaped(x: np.ndarray, shape: str) -> np.ndarray:
    """``x`` through ``shape``; for a standard normal ``x`` every shape has mean 0 and
    variance 1, so a strength means the same thing whatever the shape."""
    if shape == "linear":
        return x
    if shape == "threshold":
        return ((x > THRESHOLD_AT) - _STEP_P) / _STEP_SD
    if shape == "u":
        return (np.square(x) - 1.0) / np.sqrt(2.0)
    raise InputError(f"scenario shape {shape!r}: expected one of {', '.join(SHAPES)}")


def _frozen(m: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True)
class Scenario:
    """How the synthetic cohort's signal is drawn. Every default reproduces today's cohort.

    Parameters
    ----------
    shapes
        Per modality (``ehr``, ``imaging``, ``omics``, ``environment``): ``linear``
        (default), ``threshold`` or ``u``, applied to that modality's latents
        (``SHAPE_LATENTS``) in the true log hazard ratio.
    strength
        Per modality: a multiplier of every term of that modality (1 by default; 0 = the
        modality carries no signal, also not through the interaction).
    interaction
        The environment × omics-inflammation term on (default) or off. Its coefficient is
        scaled by the product of the two modalities' strengths.
    n_genes
        Genes in the expression file (default 1,200; 20 to 20,000). Modules keep 25 genes
        each while there is room, fewer below 250 genes.
    noise_labs
        Extra EHR measurements carrying no signal (default 0): each is a local OMOP
        concept (id above 2,000,000,000) measured at some visits, about seven features each.
    hazard_scale
        A multiplier of the Weibull baseline hazard (default 1): the events. The binary
        outcome rate and the number of survival events rise with it.
    """

    shapes: Mapping[str, str] = field(default_factory=dict)
    strength: Mapping[str, float] = field(default_factory=dict)
    interaction: bool = True
    n_genes: int = 1200
    noise_labs: int = 0
    hazard_scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", _frozen(self.shapes))
        object.__setattr__(self, "strength", _frozen(self.strength))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the knob, the value and the fix."""
        for key in (*self.shapes, *self.strength):
            if key not in MODALITIES:
                raise InputError(
                    f"scenario: unknown modality {key!r}; expected one of {', '.join(MODALITIES)}"
                )
        for key, shape in self.shapes.items():
            if shape not in SHAPES:
                raise InputError(
                    f"scenario shapes[{key!r}] = {shape!r}: expected one of {', '.join(SHAPES)}"
                )
        for key, weight in self.strength.items():
            if not (isinstance(weight, int | float) and np.isfinite(weight) and weight >= 0):
                raise InputError(
                    f"scenario strength[{key!r}] = {weight!r}: expected a finite number >= 0 "
                    "(0 = no signal, 1 = the default)"
                )
        for key, kind in (("n_genes", int), ("noise_labs", int), ("interaction", bool)):
            value = getattr(self, key)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise InputError(f"scenario {key} = {value!r}: expected {kind.__name__}")
        if isinstance(self.hazard_scale, bool) or not isinstance(self.hazard_scale, int | float):
            raise InputError(f"scenario hazard_scale = {self.hazard_scale!r}: expected a number")
        if not MIN_GENES <= self.n_genes <= MAX_GENES:
            raise InputError(
                f"scenario n_genes = {self.n_genes}: expected {MIN_GENES} to {MAX_GENES}"
            )
        if not 0 <= self.noise_labs <= MAX_NOISE_LABS:
            raise InputError(
                f"scenario noise_labs = {self.noise_labs}: expected 0 to {MAX_NOISE_LABS}"
            )
        if not (np.isfinite(self.hazard_scale) and self.hazard_scale > 0):
            raise InputError(
                f"scenario hazard_scale = {self.hazard_scale}: expected a number > 0 "
                "(1 = the default baseline hazard; 0.3 fewer events, 3 more)"
            )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, where: str = "scenario") -> Scenario:
        """A scenario from plain values (a parsed ``--scenario`` JSON or YAML mapping);
        an unknown key is an :class:`InputError` naming the nearest known one."""
        import difflib

        if not isinstance(raw, Mapping):
            raise InputError(f"{where}: expected a mapping of knobs, got {type(raw).__name__}")
        known = cls().to_dict()
        for key in raw:
            if key not in known:
                near = difflib.get_close_matches(str(key), list(known), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(known)})"
                raise InputError(f"{where}: unknown knob {key!r}{hint}")
        for key in ("shapes", "strength"):
            if key in raw and not isinstance(raw[key], Mapping):
                raise InputError(
                    f"{where}.{key}: expected a mapping of modality to value, got {raw[key]!r}"
                )
        try:
            return cls(**dict(raw))
        except InputError as exc:
            raise InputError(f"{where}: {str(exc).removeprefix('scenario ')}") from None

    def shape(self, modality: str) -> str:
        return str(self.shapes.get(modality, "linear"))

    def weight(self, modality: str) -> float:
        return float(self.strength.get(modality, 1.0))

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_SCENARIO

    def to_dict(self) -> dict[str, Any]:
        """Every knob with its value (for ``truth/signal.json`` and the manifest)."""
        return {
            "shapes": {m: self.shape(m) for m in MODALITIES},
            "strength": {m: self.weight(m) for m in MODALITIES},
            "interaction": bool(self.interaction),
            "n_genes": int(self.n_genes),
            "noise_labs": int(self.noise_labs),
            "hazard_scale": float(self.hazard_scale),
        }

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scenario) and self.to_dict() == other.to_dict()


DEFAULT_SCENARIO = Scenario()
