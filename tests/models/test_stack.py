"""The stack's combiner: non-negative weights that follow the members' information, the
Cox likelihood's gradient, a penalty chosen by held-out loss, and a bundle that reloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medweave.errors import InputError
from medweave.models.stack import StackCombiner, StackedModel, _cox, level_one, load_model


def _members(n: int = 900, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    z = np.column_stack(
        [
            signal + rng.normal(scale=0.4, size=n),  # a good member
            signal + rng.normal(scale=2.0, size=n),  # a weak one
            -signal + rng.normal(scale=0.4, size=n),  # one that is right backwards
        ]
    )
    return signal, z, np.arange(n) % 3


def test_binary_weights_follow_information_and_are_never_negative() -> None:
    signal, z, groups = _members()
    rng = np.random.default_rng(1)
    y = (rng.random(len(signal)) < 1 / (1 + np.exp(-2 * signal))).astype(float)
    comb = StackCombiner("binary").fit(z, {"y": y}, groups)
    good, weak, backwards = comb.weights
    assert good > weak >= 0 and backwards == 0.0
    assert set(comb.cv_loss) == {0.0, 1e-3, 1e-2, 1e-1} and comb.penalty in comb.cv_loss
    p = 1 / (1 + np.exp(-comb.decision(z)))
    # better than the best member's own logit as a probability
    loss = lambda q: -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))  # noqa: E731
    assert loss(p) <= loss(1 / (1 + np.exp(-z[:, 0]))) + 1e-9


def test_cox_gradient_matches_finite_differences_and_strata_ignore_fold_offsets() -> None:
    signal, z, groups = _members(300)
    rng = np.random.default_rng(2)
    time = rng.exponential(np.exp(-signal))
    time[::7] = time[3]  # ties
    event = rng.random(len(time)) < 0.7
    params = np.array([0.4, 0.1, 0.2])
    value, grad = _cox(params, z, time, event, groups, 0.01)
    h = 1e-6
    numeric = [
        (
            _cox(params + d, z, time, event, groups, 0.01)[0]
            - _cox(params - d, z, time, event, groups, 0.01)[0]
        )
        / (2 * h)
        for d in np.eye(3) * h
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-8)
    # a constant per fold (a fold model's arbitrary origin) changes nothing
    shifted = z + groups[:, None] * 5.0
    assert _cox(params, shifted, time, event, groups, 0.01)[0] == pytest.approx(value)
    comb = StackCombiner("survival").fit(z, {"time": time, "event": event}, groups)
    assert comb.weights[0] > comb.weights[1] and comb.weights[2] == 0.0


def test_level_one_is_the_logit_or_the_scaled_risk() -> None:
    np.testing.assert_allclose(level_one(np.array([0.5, 0.8]), "binary"), [0.0, np.log(4)])
    assert np.all(np.isfinite(level_one(np.array([0.0, 1.0]), "binary")))
    np.testing.assert_allclose(level_one(np.array([2.0, -4.0]), "survival", 2.0), [1.0, -2.0])


def test_stack_bundle_is_json_and_names_a_missing_member(tmp_path: Path) -> None:
    model = StackedModel(
        "binary",
        [
            {"name": "a", "path": str(tmp_path / "a"), "weight": 0.0, "scale": 1.0},
            {"name": "b", "path": str(tmp_path / "b"), "weight": 1.5, "scale": 1.0},
        ],
        intercept=0.2,
        penalty=0.01,
    )
    model.save(tmp_path / "stack")
    meta = json.loads((tmp_path / "stack" / "bundle.json").read_text())
    assert meta["format"] == "medweave-stack/1" and meta["members"][1]["path"] == "../b"
    with pytest.raises(InputError, match="member 'b' has no bundle"):
        load_model(tmp_path / "stack")
    with pytest.raises(InputError, match="not a medweave model bundle"):
        load_model(tmp_path / "nothing")
