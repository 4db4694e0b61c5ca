"""The cohort: patients, modality blocks with presence masks, and the audit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from medweave.cohort._audit import Audit, SourceAudit
from medweave.cohort._block import KINDS, ModalityBlock
from medweave.cohort._cohort import Cohort

if TYPE_CHECKING:
    from medweave.config import CohortConfig

__all__ = ["KINDS", "Audit", "Cohort", "ModalityBlock", "SourceAudit", "build", "build_cohort"]


# The builder needs the readers, and the readers need the classes above: import it late.
def build(config_path: str | os.PathLike[str]) -> Cohort:
    """Read ``cohort.yaml`` and build the cohort (paths relative to the YAML's folder)."""
    from medweave.cohort._build import build as _build

    return _build(config_path)


def build_cohort(config: CohortConfig, *, base_dir: Path) -> Cohort:
    """Build the cohort described by a validated config."""
    from medweave.cohort._build import build_cohort as _build_cohort

    return _build_cohort(config, base_dir=base_dir)
