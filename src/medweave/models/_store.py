"""Stage-1 encoders and interaction GLMs on disk, shared by the estimators of a grid
(``encoder_store``).

A stage-1 encoder is fully determined by its modality, encoder configuration, fitted
preprocessing, training and validation rows, target, seed and training settings; the key
hashes all of them, so loading one gives exactly the weights training would. The GLM of
``interactions`` is determined by its inputs (prepared features, frozen image embeddings),
masks, target, task and search settings — the same for every fusion strategy of a fold.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medweave._atomic import atomic_file
from medweave.models._prep import ModalityPrep

if TYPE_CHECKING:
    from medweave.models.estimator import MultimodalEstimator

__all__ = ["EncoderStore", "digest", "store_key"]


def digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray | torch.Tensor):
            arr = part.detach().cpu().numpy() if isinstance(part, torch.Tensor) else part
            h.update(str((arr.dtype, arr.shape)).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def store_key(
    est: MultimodalEstimator,
    modality: str,
    prep: ModalityPrep,
    target: torch.Tensor,
    train: np.ndarray,
    val: np.ndarray,
) -> str:
    """Everything that determines a stage-1 encoder's weights."""
    settings = {
        k: getattr(est, k)
        for k in (
            "task",
            "task_params",
            "embed_dim",
            "fused_dim",
            "max_epochs",
            "min_epochs",
            "batch_size",
            "weight_decay",
            "patience",
            "seed",
        )
    }
    settings["lr"] = est.pretrain_lr or est.lr
    enc = est.encoder_configs_[modality]
    arrays = [prep.tensors()[k] for k in sorted(prep.tensors())]
    return digest(
        "stage1-concat/1",
        modality,
        enc,
        settings,
        prep.to_json(),
        *arrays,
        target[train],
        target[val],
        train,
        val,
    )


class EncoderStore:
    """Stage-1 networks on disk: ``<key>.safetensors`` (weights; epochs in the metadata)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load_file

        path = self._path(key)
        return load_file(str(path)) if path.is_file() else None

    def epochs(self, key: str) -> int:
        return int(self.metadata(key).get("epochs", 0))

    def metadata(self, key: str) -> dict[str, str]:
        from safetensors import safe_open

        with safe_open(str(self._path(key)), framework="pt") as f:
            return dict(f.metadata() or {})

    def put(
        self,
        key: str,
        state: dict[str, torch.Tensor],
        *,
        epochs: int = 0,
        metadata: dict[str, str] | None = None,
    ) -> None:
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        with atomic_file(self._path(key)) as tmp:
            save_file(tensors, str(tmp), metadata={"epochs": str(epochs), **(metadata or {})})
