"""medweave: multimodal biomedical data integration.

Reads EHR (OMOP, FHIR), images (DICOM, NIfTI, PNG), omics (AnnData) and environmental
exposures, aligns them per patient around an index date, fuses them, and predicts
diagnosis and prognosis with honest comparisons and explanations.
"""

from __future__ import annotations

__version__ = "0.1.0"

from medweave.errors import InputError
from medweave.synth import SynthSummary, synthesize

__all__ = ["InputError", "SynthSummary", "__version__", "synthesize"]
