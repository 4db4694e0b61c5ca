"""Task heads and losses, and the survival target."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

from medweave.errors import InputError
from medweave.models.survival import SurvivalTarget, as_survival
from medweave.models.tasks import (
    TASKS,
    BinaryTask,
    CoxTask,
    DiscreteHazardTask,
    MulticlassTask,
    RegressionTask,
    Task,
    build_task,
    c_index,
)

# --- the survival target -----------------------------------------------------------------


def test_as_survival_accepts_every_form() -> None:
    time = np.array([3.0, 10.0, 0.0, 7.5])
    event = np.array([True, False, True, True])
    rec = np.empty(4, dtype=[("event", bool), ("time", float), ("age", float)])
    rec["event"], rec["time"], rec["age"] = event, time, 50.0
    forms = [
        SurvivalTarget(time=time, event=event),
        rec,
        np.stack([time, event.astype(float)], axis=1),
        pd.DataFrame({"id": list("abcd"), "time": time, "event": event.astype(int)}),
        pd.DataFrame({"Time": time, "Event": event}),
        (time.tolist(), event.astype(int).tolist()),
        {"time": time, "event": event},
        (pd.to_timedelta(time, unit="D").to_numpy(), event),
    ]
    for y in forms:
        s = as_survival(y)
        assert isinstance(s, SurvivalTarget)
        assert s.time.dtype == np.float64 and s.event.dtype == bool
        np.testing.assert_array_equal(s.time, time)
        np.testing.assert_array_equal(s.event, event)
    same = SurvivalTarget(time=time, event=event)
    assert as_survival(same) is same
    sub = same[np.array([0, 3])]
    np.testing.assert_array_equal(sub.time, [3.0, 7.5])
    assert len(sub) == 2 and sub.n_events == 2
    np.testing.assert_array_equal(same.to_structured()["time"], time)
    pd.testing.assert_frame_equal(same.to_frame(), pd.DataFrame({"time": time, "event": event}))


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (([1.0, -2.0, 3.0], [1, 0, 1]), r"1 negative values \(first at position 1: -2.0\)"),
        (([1.0, np.nan, 3.0], [1, 0, 1]), r"1 missing or infinite values \(first at position 1"),
        (([1.0, np.inf, 3.0], [1, 0, 1]), "missing or infinite"),
        (([1.0, 2.0, 3.0], [1, 2, 0]), r"not 0/1 or true/false \(first at position 1: 2\)"),
        (([1.0, 2.0, 3.0], [1.0, np.nan, 0.0]), "not 0/1 or true/false"),
        (([1.0, 2.0, 3.0], ["yes", "no", "yes"]), "not 0/1 or true/false"),
        (([1.0, 2.0, 3.0], [1, 0]), "time has 3 values but event has 2"),
        (([1.0, 2.0, 3.0], [0, 0, 0]), "no events among 3 patients"),
        (([], []), "no patients"),
        (pd.DataFrame({"time": [1.0], "status": [1]}), "lack 'event'"),
        (np.ones((3, 3)), r"shape \(3, 3\)"),
        ((["a", "b"], [1, 0]), "time must be numeric"),
        ("time", "expected a SurvivalTarget"),
        ((np.ones(2), np.ones(2), np.ones(2)), "must be \\(time, event\\)"),
    ],
)
def test_as_survival_names_the_problem(y: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        as_survival(y)


def test_survival_target_validates_and_allows_no_events_when_asked() -> None:
    with pytest.raises(InputError, match="negative"):
        SurvivalTarget(time=np.array([-1.0]), event=np.array([True]))
    s = as_survival(([1.0, 2.0], [0, 0]), require_event=False)
    assert s.n_events == 0


# --- registry and shared behaviour ----------------------------------------------------------


def test_registry_holds_the_five_tasks() -> None:
    assert TASKS.names() == ["binary", "cox", "discrete_hazard", "multiclass", "regression"]
    assert all(TASKS.get(n).name == n for n in TASKS.names())
    with pytest.raises(InputError, match="did you mean 'binary'"):
        TASKS.get("binnary")
    with pytest.raises(InputError, match="n_bins"):
        build_task("discrete_hazard", n_bins=0)


def _survival_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    t = np.ceil(rng.exponential(np.exp(-x @ np.array([0.8, -0.5, 0.3]))) * 10)
    c = np.ceil(rng.uniform(0, 15, n))
    return x, np.minimum(t, c), t <= c


def _fitted(name: str) -> tuple[Task, object]:
    rng = np.random.default_rng(1)
    ys: dict[str, object] = {
        "binary": rng.integers(0, 2, 40),
        "multiclass": np.array(["a", "b", "c", "d"] * 10),
        "regression": rng.normal(5.0, 2.0, 40),
        "cox": _survival_data(40, 1)[1:],
        "discrete_hazard": _survival_data(40, 1)[1:],
    }
    task = build_task(name)
    task.fit_target(ys[name])
    return task, ys[name]


@pytest.mark.parametrize("name", ["binary", "multiclass", "regression", "cox", "discrete_hazard"])
def test_state_round_trips_through_json(name: str) -> None:
    task, y = _fitted(name)
    head = task.make_head(6)
    out = head(torch.randn(40, 6))
    assert out.shape == (40, task.out_dim)
    assert torch.isfinite(task.loss(out, task.encode_target(y)))
    state = json.loads(json.dumps(task.get_state()))
    back = Task.from_state(name, state)
    assert type(back) is type(task) and back.is_fitted
    assert back.get_state() == task.get_state()
    torch.testing.assert_close(back.encode_target(y), task.encode_target(y))
    raw = out.detach().numpy()
    for key, value in task.predict(raw).items():
        np.testing.assert_array_equal(back.predict(raw)[key], value)
    unfitted = Task.from_state(name, json.loads(json.dumps(build_task(name).get_state())))
    with pytest.raises(NotFittedError):
        unfitted.encode_target(y)
    with pytest.raises(InputError, match="state must be a dict"):
        Task.from_state(name, {"opts": {}})


def _linear(head: torch.nn.Module) -> torch.nn.Linear:
    assert isinstance(head, torch.nn.Linear)
    return head


def test_head_sizes() -> None:
    sizes = {"binary": 1, "multiclass": 4, "regression": 1, "cox": 1}
    for name, k in sizes.items():
        task, _ = _fitted(name)
        assert _linear(task.make_head(8)).out_features == k
    cox, _ = _fitted("cox")
    assert _linear(cox.make_head(8)).bias is None  # cancels out of the partial likelihood
    dh = DiscreteHazardTask(n_bins=5)
    dh.fit_target(_survival_data(200, 0)[1:])
    assert _linear(dh.make_head(8)).out_features == len(dh.edges) == 5


# --- binary, multiclass, regression -------------------------------------------------------


def test_binary_loss_is_bce_and_scores_auroc() -> None:
    task = BinaryTask()
    y = np.array(["no", "yes", "yes", "no", "yes", "no", "no", "no"])
    task.fit_target(y)
    assert task.classes == ["no", "yes"] and task.prevalence == pytest.approx(3 / 8)
    target = task.encode_target(y)
    torch.testing.assert_close(target, torch.tensor([0, 1, 1, 0, 1, 0, 0, 0.0]))
    logits = torch.tensor([[-1.0], [2.0], [0.3], [0.1], [-0.5], [-2.0], [1.5], [0.0]])
    loss = task.loss(logits, target)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits[:, 0], target))
    z, t = logits[:, 0].numpy().astype(float), target.numpy()
    p = 1 / (1 + np.exp(-z))
    manual = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert loss.item() == pytest.approx(manual, rel=1e-6)
    weighted = BinaryTask(pos_weight=3.0)
    weighted.fit_target(y)
    manual_w = -np.mean(3.0 * t * np.log(p) + (1 - t) * np.log(1 - p))
    assert weighted.loss(logits, target).item() == pytest.approx(manual_w, rel=1e-6)
    pred = task.predict(logits.numpy())
    np.testing.assert_allclose(pred["proba"], p)
    assert pred["label"].tolist() == ["no", "yes", "yes", "yes", "no", "no", "yes", "yes"]
    assert task.score(pred, y) == pytest.approx(roc_auc_score(t, p))
    bias = _linear(task.make_head(3)).bias
    assert bias is not None and bias.item() == pytest.approx(math.log(3 / 5), rel=1e-6)


def test_binary_rejects_bad_targets() -> None:
    task = BinaryTask()
    with pytest.raises(InputError, match="exactly two"):
        task.fit_target([0, 1, 2])
    with pytest.raises(InputError, match="exactly two"):
        task.fit_target([1, 1, 1])
    with pytest.raises(InputError, match="1 missing values"):
        task.fit_target([0, 1, np.nan])
    task.fit_target([0, 1, 1])
    with pytest.raises(InputError, match="label 2"):
        task.encode_target([0, 2])
    with pytest.raises(InputError, match="both classes"):
        task.score({"proba": np.array([0.2, 0.4])}, [1, 1])


def test_multiclass_loss_is_cross_entropy_and_scores_accuracy() -> None:
    task = MulticlassTask()
    y = np.array([2, 0, 1, 2, 2, 1])
    task.fit_target(y)
    assert task.classes == [0, 1, 2] and task.out_dim == 3
    target = task.encode_target(y)
    logits = torch.tensor(np.random.default_rng(0).normal(size=(6, 3)), dtype=torch.float32)
    loss = task.loss(logits, target)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))
    lz = logits.numpy().astype(float)
    logp = lz - np.log(np.exp(lz).sum(axis=1, keepdims=True))
    assert loss.item() == pytest.approx(-logp[np.arange(6), y].mean(), rel=1e-6)
    pred = task.predict(lz)
    np.testing.assert_allclose(pred["proba"], np.exp(logp))
    np.testing.assert_array_equal(pred["label"], lz.argmax(axis=1))
    assert task.score(pred, y) == pytest.approx(accuracy_score(y, lz.argmax(axis=1)))
    bias = _linear(task.make_head(2)).bias
    assert bias is not None
    np.testing.assert_allclose(bias.detach().numpy(), np.log([1 / 6, 2 / 6, 3 / 6]), rtol=1e-6)
    with pytest.raises(InputError, match="label 7"):
        task.encode_target([7])


def test_regression_scales_target_and_scores_r2() -> None:
    task = RegressionTask()
    y = np.array([10.0, 12.0, 14.0, 20.0])
    task.fit_target(y)
    encoded = task.encode_target(y)
    np.testing.assert_allclose(encoded.numpy(), (y - y.mean()) / y.std(), rtol=1e-6)
    out = torch.tensor([[0.1], [-0.2], [0.5], [1.0]])
    torch.testing.assert_close(task.loss(out, encoded), F.mse_loss(out[:, 0], encoded))
    pred = task.predict(out.numpy())
    np.testing.assert_allclose(pred["value"], out.numpy()[:, 0] * y.std() + y.mean(), rtol=1e-6)
    assert task.score(pred, y) == pytest.approx(r2_score(y, pred["value"]))
    with pytest.raises(InputError, match="numeric"):
        task.fit_target(["a", "b"])


# --- Cox ---------------------------------------------------------------------------------------


def _fit_linear(task: Task, x: np.ndarray, y: object, *, bias: bool = False) -> np.ndarray:
    """Minimise the task's loss over a linear model with L-BFGS; the weights."""
    target = task.encode_target(y)
    xt = torch.tensor(x, dtype=torch.float64)
    w = torch.zeros(x.shape[1], task.out_dim, dtype=torch.float64)
    b = torch.zeros(task.out_dim, dtype=torch.float64)
    params = [w.requires_grad_(), *([b.requires_grad_()] if bias else [])]
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = task.loss(xt @ w + b, target)
        loss.backward()
        return loss

    opt.step(closure)
    return (torch.cat([w, b[None]]) if bias else w).detach().numpy()


def _cox_datasets() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    # whole days: many tied event times, and censoring tied with events
    tied = _survival_data(300, 0)
    # distinct event times, but patients censored exactly at other patients' event times
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    t = rng.exponential(np.exp(-x @ np.array([0.5, 1.0, -0.7])))
    event = rng.uniform(size=200) < 0.6
    t[~event] = rng.choice(t[event], size=(~event).sum())
    return [tied, (x, t, event)]


@pytest.mark.parametrize("case", [0, 1], ids=["tied-days", "censored-at-event-times"])
def test_cox_loss_matches_lifelines(case: int) -> None:
    x, time, event = _cox_datasets()[case]
    task = CoxTask()
    task.fit_target((time, event))
    beta = _fit_linear(task, x, (time, event))[:, 0]
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event)
    cph = CoxPHFitter().fit(frame, duration_col="T", event_col="E")  # Efron ties
    np.testing.assert_allclose(beta, cph.params_.to_numpy(), atol=1e-2)
    # the loss is the negative Efron log partial likelihood per event
    loss = task.loss(torch.tensor(x @ cph.params_.to_numpy()), task.encode_target((time, event)))
    assert -loss.item() * event.sum() == pytest.approx(cph.log_likelihood_, rel=1e-5)


def test_cox_loss_small_cases() -> None:
    task = CoxTask()
    task.fit_target(([1.0], [1]))
    lh = torch.tensor([0.3, -0.5])
    denom = math.log(math.exp(0.3) + math.exp(-0.5))
    # the censored patient at the event's time is in its risk set, whatever the order
    for times, events, expected in [
        ([5.0, 5.0], [1.0, 0.0], -(0.3 - denom)),
        ([5.0, 5.0], [0.0, 1.0], -(-0.5 - denom)),
        ([5.0, 3.0], [1.0, 1.0], -(0.3 - 0.3) - (-0.5 - denom)),
    ]:
        target = torch.tensor(np.stack([times, events], axis=1), dtype=torch.float32)
        assert task.loss(lh, target).item() == pytest.approx(expected / sum(events), rel=1e-6)
    # the order of patients in a batch does not matter
    x, time, event = _survival_data(50, 4)
    target = task.encode_target((time, event))
    lhz = torch.tensor(x[:, 0])
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(task.loss(lhz, target), task.loss(lhz[perm], target[perm]))


@pytest.mark.parametrize(
    ("time", "event"),
    [([3.0, 5.0, 8.0], [0.0, 0.0, 0.0]), ([4.0], [1.0]), ([4.0], [0.0])],
    ids=["no-events", "one-patient-event", "one-patient-censored"],
)
def test_cox_loss_without_comparable_pairs_is_zero_with_grad(
    time: list[float], event: list[float]
) -> None:
    task = CoxTask()
    task.fit_target(([1.0], [1]))
    out = torch.randn(len(time), 1, requires_grad=True)
    target = torch.tensor(np.stack([time, event], axis=1), dtype=torch.float32)
    loss = task.loss(out, target)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert out.grad is not None
    torch.testing.assert_close(out.grad, torch.zeros_like(out))


def test_cox_predicts_risk_and_scores_harrell_c() -> None:
    x, time, event = _survival_data(200, 5)
    task = CoxTask()
    task.fit_target((time, event))
    out = (x @ np.array([0.8, -0.5, 0.3]))[:, None]
    pred = task.predict(out)
    np.testing.assert_array_equal(pred["risk"], out[:, 0])
    expected = concordance_index(time, -out[:, 0], event)
    assert task.score(pred, (time, event)) == pytest.approx(expected)
    assert task.score(pred, (time, event)) > 0.6
    # higher risk must mean earlier events: risk = -time is perfectly concordant
    distinct = np.arange(1.0, 11.0)
    assert c_index(-distinct, (distinct, np.ones(10))) == 1.0
    assert c_index(distinct, (distinct, np.ones(10))) == 0.0
    with pytest.raises(InputError, match="no events"):
        c_index(distinct, (distinct, np.zeros(10)))


# --- discrete-time hazard -------------------------------------------------------------------


def _discrete_nll(
    logits: np.ndarray, time: np.ndarray, event: np.ndarray, edges: np.ndarray
) -> float:
    """The likelihood written out: bin k = (edge_{k-1}, edge_k], censored survives bin k."""
    total = 0.0
    for z, t, e in zip(logits, time, event, strict=True):
        h = 1 / (1 + np.exp(-z))
        k = next((i for i, edge in enumerate(edges) if t <= edge), len(edges) - 1)
        ll = sum(math.log(1 - h[j]) for j in range(k))
        ll += math.log(h[k]) if e else math.log(1 - h[k])
        total -= ll
    return total / len(time)


def test_discrete_hazard_bins_likelihood_and_predictions() -> None:
    rng = np.random.default_rng(0)
    time = rng.exponential(100.0, 400).round(1)
    event = rng.uniform(size=400) < 0.7
    task = DiscreteHazardTask(n_bins=8, horizon=60.0)
    task.fit_target((time, event))
    expected_edges = np.quantile(time[event], np.arange(1, 9) / 8)
    np.testing.assert_allclose(task.edges, expected_edges)
    assert task.out_dim == 8
    # patients exactly on an edge, past the last edge, at time 0
    time[:4] = [task.edges[2], task.edges[-1] + 50.0, 0.0, task.edges[0]]
    event[:4] = [True, False, True, False]
    logits = rng.normal(size=(400, 8))
    loss = task.loss(torch.tensor(logits), task.encode_target((time, event)))
    assert loss.item() == pytest.approx(_discrete_nll(logits, time, event, task.edges), rel=1e-6)
    pred = task.predict(logits)
    h = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(pred["survival"], np.cumprod(1 - h, axis=1))
    np.testing.assert_array_equal(pred["times"], task.edges)
    at = int(np.searchsorted(task.edges, 60.0))
    np.testing.assert_allclose(pred["risk"], np.log(-np.log(pred["survival"][:, at])))
    assert np.all(np.diff(pred["survival"], axis=1) <= 0)
    assert task.score(pred, (time, event)) == pytest.approx(
        concordance_index(time, -pred["risk"], event)
    )
    # Far from the data the log cumulative hazard stays finite and ordered (S rounds to 1
    # or 0, its softplus form does not): a log scale like a Cox model's risk.
    extreme = task.predict(np.array([[-60.0] * 8, [-50.0] * 8, [40.0] * 8, [50.0] * 8]))
    assert np.isfinite(extreme["risk"]).all()
    assert np.all(np.diff(extreme["risk"]) > 0)


def test_discrete_hazard_bias_only_fit_recovers_life_table_hazards() -> None:
    """The maximum-likelihood hazards without covariates are events / at risk per bin,
    with patients censored in bin k at risk in it; the head starts there."""
    rng = np.random.default_rng(2)
    time = np.ceil(rng.exponential(30.0, 500))
    event = rng.uniform(size=500) < 0.6
    task = DiscreteHazardTask(n_bins=6)
    task.fit_target((time, event))
    k = np.minimum(np.searchsorted(task.edges, time), len(task.edges) - 1)
    at_risk = np.array([(k >= j).sum() for j in range(len(task.edges))])
    events = np.array([(event & (k == j)).sum() for j in range(len(task.edges))])
    np.testing.assert_allclose(np.asarray(task.baseline_hazard), events / at_risk)
    fitted = _fit_linear(task, np.zeros((500, 0)), (time, event), bias=True)[-1]
    np.testing.assert_allclose(1 / (1 + np.exp(-fitted)), events / at_risk, atol=1e-4)
    bias = _linear(task.make_head(4)).bias
    assert bias is not None
    np.testing.assert_allclose(
        1 / (1 + np.exp(-bias.detach().numpy())), events / at_risk, rtol=1e-4
    )


def test_discrete_hazard_learns_a_linear_risk() -> None:
    x, time, event = _survival_data(400, 6)
    task = DiscreteHazardTask(n_bins=5)
    task.fit_target((time, event))
    w = _fit_linear(task, x, (time, event), bias=True)
    pred = task.predict(np.c_[x, np.ones(len(x))] @ w)
    assert task.score(pred, (time, event)) > 0.65
