"""The synthetic multimodal cohort with known ground truth (``medweave synth``)."""

from __future__ import annotations

from medweave.synth._generate import MECHANISMS, SynthSummary, synthesize
from medweave.synth._scenario import SHAPES, Scenario

__all__ = ["MECHANISMS", "SHAPES", "Scenario", "SynthSummary", "synthesize"]
