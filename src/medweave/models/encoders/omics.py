"""``omics_mlp``: a regularised MLP for expression profiles, optionally gene-set structured.

Expression matrices are wide (thousands of genes) and cohorts small, so the encoder drops
input features at random (``input_dropout``) and keeps the hidden layers narrow; weight
decay is the trainer's job. With ``gene_sets=True`` the first layer follows
``spec.feature_groups`` (gene set name -> feature indices): each set has its own small
linear map from its member genes to ``group_dim`` units, so a set's units see only its own
genes (:class:`GroupedLinear`), and the group-level units feed the rest of the MLP. Genes
that belong to no set form one extra group (``"(ungrouped)"``) unless
``include_ungrouped=False`` drops them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from medweave.errors import InputError
from medweave.models.encoders._base import ENCODERS, Encoder, InputSpec
from medweave.models.encoders.tabular import (
    check_dropout,
    check_flat,
    check_positive,
    make_activation,
    mlp_stack,
)

__all__ = ["UNGROUPED", "GroupedLinear", "OmicsMLPEncoder"]

#: name of the group holding the features that belong to no gene set
UNGROUPED = "(ungrouped)"


class GroupedLinear(nn.Module):
    """One linear map per feature group: (n, n_features) -> (n, n_groups * group_dim).

    Group ``g``'s ``group_dim`` outputs are a linear function of its member features
    only. Memberships are stored sparsely (a feature may be in several groups), so the
    cost is that of the memberships, not of a dense n_features x n_groups matrix.
    """

    member_feature: torch.Tensor
    member_group: torch.Tensor

    def __init__(self, groups: Sequence[Sequence[int]], *, group_dim: int) -> None:
        super().__init__()
        self.n_groups = len(groups)
        self.group_dim = int(group_dim)
        features = [int(f) for members in groups for f in members]
        owner = [g for g, members in enumerate(groups) for _ in members]
        self.register_buffer("member_feature", torch.tensor(features, dtype=torch.long))
        self.register_buffer("member_group", torch.tensor(owner, dtype=torch.long))
        sizes = torch.tensor([max(len(m), 1) for m in groups], dtype=torch.float32)
        bound = 1.0 / torch.sqrt(sizes)  # nn.Linear's default fan-in scale, per group
        self.weight = nn.Parameter(
            (torch.rand(len(features), self.group_dim) * 2 - 1) * bound[owner].unsqueeze(1)
        )
        self.bias = nn.Parameter(
            (torch.rand(self.n_groups, self.group_dim) * 2 - 1) * bound[:, None]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        contrib = x.index_select(1, self.member_feature).unsqueeze(2) * self.weight
        out = self.bias.unsqueeze(0).expand(n, -1, -1).clone()
        out = out.index_add(1, self.member_group, contrib)
        return out.reshape(n, self.n_groups * self.group_dim)


@ENCODERS.register(
    "omics_mlp",
    description="regularised MLP for expression data; first layer optionally by gene sets",
)
class OmicsMLPEncoder(Encoder):
    """Input dropout, then an MLP; ``gene_sets=True`` structures the first layer.

    ``hidden`` are the hidden sizes after the (optional) gene-set layer, ``input_dropout``
    the share of input features dropped in training, ``dropout`` the dropout after each
    hidden layer, ``group_dim`` the units per gene set.
    """

    input_kinds: ClassVar[tuple[str, ...]] = ("omics", "tabular", "exposure", "embedding")

    def __init__(
        self,
        spec: InputSpec,
        *,
        out_dim: int = 64,
        hidden: Sequence[int] = (128,),
        input_dropout: float = 0.2,
        dropout: float = 0.2,
        activation: str = "gelu",
        norm: str = "layer",
        gene_sets: bool = False,
        group_dim: int = 4,
        include_ungrouped: bool = True,
    ) -> None:
        Encoder.__init__(self, spec, out_dim=check_positive(out_dim, key="out_dim"))
        n_features = check_flat("omics_mlp", spec)
        self.hidden = [int(h) for h in hidden]
        self.input_dropout = check_dropout(input_dropout, key="input_dropout")
        self.dropout = check_dropout(dropout)
        self.activation = activation
        self.norm = norm
        self.gene_sets = bool(gene_sets)
        self.group_dim = check_positive(group_dim, key="group_dim")
        self.include_ungrouped = bool(include_ungrouped)
        self.drop_input = nn.Dropout(self.input_dropout)
        self.group_names: list[str] = []
        self.groups: GroupedLinear | None = None
        self.group_act: nn.Module | None = None
        width = n_features
        if self.gene_sets:
            names, members = _gene_sets(spec, n_features, include_ungrouped=self.include_ungrouped)
            self.group_names = names
            self.groups = GroupedLinear(members, group_dim=self.group_dim)
            self.group_act = make_activation(activation)
            width = len(names) * self.group_dim
        self.net = mlp_stack(
            width,
            self.hidden,
            self.out_dim,
            dropout=self.dropout,
            activation=activation,
            norm=norm,
        )

    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-able."""
        return {
            "out_dim": self.out_dim,
            "hidden": list(self.hidden),
            "input_dropout": self.input_dropout,
            "dropout": self.dropout,
            "activation": self.activation,
            "norm": self.norm,
            "gene_sets": self.gene_sets,
            "group_dim": self.group_dim,
            "include_ungrouped": self.include_ungrouped,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop_input(x)
        if self.groups is not None and self.group_act is not None:
            h = self.group_act(self.groups(h))
        out: torch.Tensor = self.net(h)
        return out


def _gene_sets(
    spec: InputSpec, n_features: int, *, include_ungrouped: bool
) -> tuple[list[str], list[list[int]]]:
    """Gene set names (sorted) and their member feature indices, checked."""
    if not spec.feature_groups:
        raise InputError(
            "encoder 'omics_mlp': gene_sets=True needs gene sets in the input spec "
            "(feature_groups is empty); give gene sets or set gene_sets=False"
        )
    names: list[str] = []
    members: list[list[int]] = []
    seen: set[int] = set()
    for name in sorted(spec.feature_groups):
        idx = sorted({int(i) for i in spec.feature_groups[name]})
        bad = [i for i in idx if not 0 <= i < n_features]
        if bad:
            raise InputError(
                f"encoder 'omics_mlp': gene set {name!r} has feature index {bad[0]} outside "
                f"the {n_features} input features"
            )
        if not idx:
            raise InputError(f"encoder 'omics_mlp': gene set {name!r} is empty; remove it")
        names.append(name)
        members.append(idx)
        seen.update(idx)
    rest = [i for i in range(n_features) if i not in seen]
    if include_ungrouped and rest:
        if UNGROUPED in spec.feature_groups:
            raise InputError(f"encoder 'omics_mlp': gene set name {UNGROUPED!r} is reserved")
        names.append(UNGROUPED)
        members.append(rest)
    return names, members
