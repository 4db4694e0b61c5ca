"""The image encoder on 3-D volumes: its global pooling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medweave.errors import InputError
from medweave.models.encoders import build_encoder
from medweave.models.encoders._base import InputSpec


def test_global_pooling() -> None:
    """The mean by default, on slices and volumes; the maximum or both on request."""
    flat = build_encoder("image_cnn", InputSpec("image", (1, 16, 16)), out_dim=4, channels=[4])
    vol = build_encoder("image_cnn", InputSpec("image", (1, 8, 16, 16)), out_dim=4, channels=[4])
    assert flat.pool == vol.pool == "avg"
    assert flat.net[-1].in_features == vol.net[-1].in_features == 4
    for pool, width in (("avg", 4), ("max", 4), ("avgmax", 8)):
        enc = build_encoder(
            "image_cnn", InputSpec("image", (1, 8, 16, 16)), out_dim=4, channels=[4], pool=pool
        )
        assert enc.net[-1].in_features == width
        assert enc(torch.randn(3, 1, 8, 16, 16)).shape == (3, 4)
    assert enc.get_config()["pool"] == "avgmax"
    with pytest.raises(InputError, match="unknown pool"):
        build_encoder("image_cnn", InputSpec("image", (1, 16, 16)), pool="median")


def test_slices_keep_the_former_network() -> None:
    """On 2-D images the network is what it was (global mean, same layer names), so saved
    weights load and give the same output."""
    enc = build_encoder(
        "image_cnn", InputSpec("image", (1, 16, 16)), out_dim=3, channels=[4, 8]
    ).eval()
    keys = set(enc.state_dict())
    assert {"net.6.weight", "net.6.bias"} <= keys  # Linear after the pool and Flatten
    x = torch.randn(2, 1, 16, 16)
    features = enc.net[:4](x)
    expected = enc.net[-1](nn.AdaptiveAvgPool2d(1)(features).flatten(1))
    torch.testing.assert_close(enc(x), expected)
