"""Synthetic bulk gene expression: log-normal, with co-expressed modules.

Log expression of gene ``j`` in patient ``i`` is a gene baseline, plus loadings on the
patient's module scores (genes in a module co-express), plus loadings on a few broad
background factors (co-expression that carries no outcome signal, so an unsupervised
projection alone is not enough), plus a sequencing batch shift and noise.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

__all__ = ["MODULES", "N_GENES", "genes_per_module", "simulate_expression"]

N_GENES = 1200
GENES_PER_MODULE = 25
#: Module name -> latent name in the generative model (or None: a module with no outcome link).
MODULES: dict[str, str | None] = {
    "proliferation": "m_prolif",
    "inflammation": "m_inflam",
    "epithelial": "m_epithelial",
    "stromal": "m_stromal",
    "interferon": None,
    "hypoxia": None,
    "lipid_metabolism": None,
    "b_cell": None,
}
N_BACKGROUND_FACTORS = 6


def genes_per_module(n_genes: int) -> int:
    """25 genes per module while there is room; with fewer than 250 genes, a tenth of them
    (modules then fill 80% of the genes, the rest is background)."""
    return min(GENES_PER_MODULE, n_genes // 10)


def gene_table(
    rng: np.random.Generator, n_genes: int = N_GENES
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Gene ids (Ensembl-style, synthetic range), symbols, and module membership."""
    ids = [f"ENSG9{j:010d}" for j in range(1, n_genes + 1)]
    symbols = [f"SYN{j:04d}" for j in range(1, n_genes + 1)]
    order = rng.permutation(n_genes)
    size = genes_per_module(n_genes)
    members: dict[str, list[str]] = {}
    for k, name in enumerate(MODULES):
        members[name] = [ids[j] for j in sorted(order[k * size : (k + 1) * size])]
    var = pd.DataFrame({"gene_symbol": symbols}, index=pd.Index(ids, name="gene_id"))
    return var, members


def simulate_expression(
    rng: np.random.Generator,
    latents: dict[str, np.ndarray],
    rows: np.ndarray,
    *,
    n_genes: int = N_GENES,
) -> tuple[np.ndarray, pd.DataFrame, dict[str, list[str]], np.ndarray]:
    """Expression (len(rows) × n_genes, float32, positive) for the patients at ``rows``.

    Returns the matrix, the gene table, module membership and the batch of each sample.
    """
    var, members = gene_table(rng, n_genes)
    n = len(rows)
    gene_pos = {g: j for j, g in enumerate(var.index)}
    baseline = rng.normal(3.0, 1.5, n_genes)
    noise_sd = rng.uniform(0.35, 0.6, n_genes)
    log_x = np.empty((n, n_genes), dtype=np.float64)
    log_x[:] = baseline
    # Module scores for unlinked modules are drawn here; linked ones come from the latents.
    for name, latent in MODULES.items():
        score = latents[latent][rows] if latent else rng.normal(0, 1, n)
        idx = [gene_pos[g] for g in members[name]]
        sign = np.where(rng.random(len(idx)) < 0.8, 1.0, -1.0)
        loading = sign * rng.uniform(0.6, 1.0, len(idx))
        log_x[:, idx] += np.outer(score, loading)
    factors = rng.normal(0, 1, (n, N_BACKGROUND_FACTORS))
    log_x += factors @ rng.normal(0, 0.2, (N_BACKGROUND_FACTORS, n_genes))
    batch = rng.integers(0, 3, n)
    log_x += rng.normal(0, 0.15, (3, n_genes))[batch]
    log_x += rng.normal(0, 1, (n, n_genes)) * noise_sd
    return np.exp(log_x).astype(np.float32), var, members, batch


def write_h5ad(
    path: Path,
    *,
    x: np.ndarray,
    var: pd.DataFrame,
    patient_ids: list[str],
    batch: np.ndarray,
    collection_date: np.ndarray,
) -> None:
    """Write the AnnData file (obs = patients, var = genes)."""
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical([f"batch{b + 1}" for b in batch]),
            "collection_date": pd.to_datetime(collection_date).strftime("%Y-%m-%d"),
        },
        index=pd.Index(patient_ids, name="patient_id"),
    )
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.uns["medweave"] = {"units": "TPM-like, log-normal", "organism": "synthetic"}
    adata.write_h5ad(path)
