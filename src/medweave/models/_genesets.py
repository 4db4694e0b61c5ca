"""Gene sets for the omics encoder: checked, read from GMT, mapped onto the kept genes.

The estimator's ``gene_sets`` name genes; ``omics_mlp`` wants feature indices of its input,
which holds only the genes the fold's preprocessing kept (top variance). The mapping is
therefore done per fold, after the preprocessing is fitted, and its result (set name ->
input column indices) travels in the bundle with the encoder's input spec.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np

from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.sources.genesets import read_gmt

__all__ = ["gene_sets_by_modality", "map_gene_sets", "resolve_gene_sets"]

log = logging.getLogger(__name__)


def resolve_gene_sets(value: object) -> dict[str, list[str]]:
    """``gene_sets`` as set name -> gene ids: a mapping is checked, a path is read as GMT."""
    if isinstance(value, str | os.PathLike):
        return read_gmt(value)
    if not isinstance(value, Mapping) or not value:
        raise InputError(
            f"gene_sets: expected a non-empty dict of set name -> gene ids or the path of a "
            f"GMT file, got {type(value).__name__}"
        )
    sets: dict[str, list[str]] = {}
    for name, genes in value.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"gene_sets: set names must be non-empty strings, got {name!r}")
        if not isinstance(genes, list | tuple) or not all(isinstance(g, str) for g in genes):
            raise InputError(
                f"gene_sets[{name!r}]: expected a list of gene ids (strings), e.g. "
                "['ENSG00000141510', ...]"
            )
        sets[name] = list(dict.fromkeys(genes))
    return sets


def gene_sets_by_modality(
    value: object, cohort: Cohort, modalities: list[str], *, pca: Mapping[str, int]
) -> dict[str, dict[str, list[str]]]:
    """Each omics modality among ``modalities`` -> the estimator's ``gene_sets`` (read and
    checked once, before any fitting); none when ``value`` is None or no modality is omics
    (a study's models share the setting)."""
    if value is None:
        return {}
    omics = [
        m for m in modalities if m in cohort.modalities and cohort.modalities[m].kind == "omics"
    ]
    both = [m for m in omics if m in pca]
    if both:
        raise InputError(
            f"gene_sets and pca both apply to modality {both[0]!r} (pca replaces its genes "
            f"by principal components); leave {both[0]!r} out of pca, e.g. pca: {{ehr: 8}}"
        )
    sets = resolve_gene_sets(value) if omics else {}
    return {m: sets for m in omics}


def map_gene_sets(
    sets: Mapping[str, list[str]],
    *,
    modality: str,
    feature_names: list[str],
    kept: np.ndarray,
) -> dict[str, list[int]]:
    """Set name -> indices into the kept genes (the encoder's input columns).

    ``kept`` are the indices (into ``feature_names``) of the genes the preprocessing kept,
    in input-column order. Genes not kept leave their sets; a set left empty is dropped
    with a warning; if every set is empty the gene ids do not match the features at all.
    """
    column = {feature_names[int(g)]: j for j, g in enumerate(kept)}
    groups: dict[str, list[int]] = {}
    empty: list[str] = []
    for name, genes in sets.items():
        idx = sorted({column[g] for g in genes if g in column})
        if idx:
            groups[name] = idx
        else:
            empty.append(name)
    if not groups:
        example = feature_names[int(kept[0])] if len(kept) else "?"
        raise InputError(
            f"gene_sets: none of the {len(sets)} gene sets has a gene among the {len(kept)} "
            f"genes kept for modality {modality!r} (its features are named like {example!r}); "
            "use the same gene ids as the omics features, or raise omics_top_genes"
        )
    if empty:
        log.warning(
            "modality %r: %d of %d gene sets have no gene among the %d kept genes "
            "(e.g. %s); they are dropped",
            modality,
            len(empty),
            len(sets),
            len(kept),
            ", ".join(empty[:3]),
        )
    covered = len({j for idx in groups.values() for j in idx})
    log.info(
        "modality %r: %d gene sets cover %d of the %d kept genes",
        modality,
        len(groups),
        covered,
        len(kept),
    )
    return groups
