"""The cohort: patients, modality blocks with presence masks, and the audit."""

from __future__ import annotations

from medweave.cohort._audit import Audit, SourceAudit
from medweave.cohort._block import KINDS, ModalityBlock

__all__ = ["KINDS", "Audit", "ModalityBlock", "SourceAudit"]
