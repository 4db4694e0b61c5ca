"""The corpus of broken inputs, one module per family of readers; each exports ``CASES``.

Every entry writes its broken file(s) at test time (nothing is stored in the repository)
and is run by ``tests/sources/test_broken_inputs.py`` through
:func:`medweave.testing.readers.check_broken_input`.
"""

from __future__ import annotations

from medweave.testing.readers import BrokenInput
from tests.sources.broken import config, ehr, exposures, fhir, imaging, omics, tables

CASES: list[BrokenInput] = [
    *config.CASES,
    *tables.CASES,
    *ehr.CASES,
    *fhir.CASES,
    *imaging.CASES,
    *omics.CASES,
    *exposures.CASES,
]
