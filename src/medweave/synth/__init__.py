"""The synthetic multimodal cohort with known ground truth (``medweave synth``)."""

from __future__ import annotations

from medweave.synth._generate import MECHANISMS, SynthSummary, synthesize

__all__ = ["MECHANISMS", "SynthSummary", "synthesize"]
