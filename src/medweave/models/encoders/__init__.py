"""Modality encoders, registered by name (see ``medweave list``).

Importing this package registers every built-in encoder: ``mlp`` (tabular, exposure),
``omics_mlp`` (omics, optionally gene-set structured), ``image_cnn`` (2-D/3-D MONAI CNNs),
``gru`` and ``transformer`` (event sequences) and ``passthrough`` (precomputed embeddings).
"""

from __future__ import annotations

from medweave.models.encoders._base import ENCODERS, Encoder, InputSpec, build_encoder
from medweave.models.encoders.image import (
    EmbeddingCache,
    ImageCNNEncoder,
    cached_embeddings,
    image_batches,
)
from medweave.models.encoders.omics import GroupedLinear, OmicsMLPEncoder
from medweave.models.encoders.passthrough import PassthroughEncoder
from medweave.models.encoders.sequence import GRUEncoder, SequenceTransformerEncoder
from medweave.models.encoders.tabular import MLPEncoder

__all__ = [
    "ENCODERS",
    "EmbeddingCache",
    "Encoder",
    "GRUEncoder",
    "GroupedLinear",
    "ImageCNNEncoder",
    "InputSpec",
    "MLPEncoder",
    "OmicsMLPEncoder",
    "PassthroughEncoder",
    "SequenceTransformerEncoder",
    "build_encoder",
    "cached_embeddings",
    "image_batches",
]
