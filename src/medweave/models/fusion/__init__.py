"""Fusion strategies, registered by name (see ``medweave list``).

``early``, ``late``, ``concat``, ``attention``, ``gated`` and ``tensor`` register on import
of this package; :mod:`medweave.models.fusion.imputation` holds modality dropout and the
learned imputer, and :func:`medweave.testing.fusion.check_fusion` checks any fusion against
the contract of :mod:`medweave.models.fusion._base`.
"""

from __future__ import annotations

from medweave.models.fusion._base import FUSIONS, Fusion, build_fusion
from medweave.models.fusion.attention import AttentionFusion
from medweave.models.fusion.concat import ConcatFusion
from medweave.models.fusion.early import EarlyFusion
from medweave.models.fusion.gated import GatedFusion
from medweave.models.fusion.imputation import Imputation, LearnedImputer, ModalityDropout
from medweave.models.fusion.late import LateFusion
from medweave.models.fusion.tensor import TensorFusion

__all__ = [
    "FUSIONS",
    "AttentionFusion",
    "ConcatFusion",
    "EarlyFusion",
    "Fusion",
    "GatedFusion",
    "Imputation",
    "LateFusion",
    "LearnedImputer",
    "ModalityDropout",
    "TensorFusion",
    "build_fusion",
]
