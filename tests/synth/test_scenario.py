"""The generator's knobs (Scenario) change what they say, and nothing when left alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anndata as ad
import duckdb
import numpy as np
import pandas as pd
import pytest

from medweave.errors import InputError
from medweave.synth import Scenario, _model, omics, synthesize
from medweave.synth._scenario import THRESHOLD_AT, shaped
from medweave.synth.omop import NOISE_LAB_BASE


def _latents(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "age_z": rng.normal(size=n),
        "male": (rng.random(n) < 0.5).astype(float),
        "s_ehr": rng.normal(size=n),
        "img": rng.normal(size=n),
        "m_prolif": rng.normal(size=n),
        "m_inflam": rng.normal(size=n),
        "env": rng.normal(size=n),
    }


def _frame_hash(df: pd.DataFrame) -> str:
    values = np.asarray(pd.util.hash_pandas_object(df, index=False))
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


# Hashes and ceilings of `synthesize(out, n_patients=120, seed=7, workers=1)` computed before
# the knobs existed: the default cohort must stay the same, bit for bit. (A numpy or pandas
# release that changes its random streams or hashing would change them too.)
DEFAULT_DRAW = {
    "index": "6afa7aa31411e594",
    "truth": "0a78e4517d7a2a10",
    "omics": "b6b8da277c187b95",
    "measurement": "4357e928dbc4c086",
    "ceiling": {
        "observed": {"auroc": 0.7948016415868673, "c_index": 0.767357762777242},
        "observed_latents": {"auroc": 0.7965116279069767, "c_index": 0.7779652844744455},
        "oracle": {"auroc": 0.853625170998632, "c_index": 0.8182256509161041},
    },
}


def _draw_fingerprint(out: Path) -> dict[str, object]:
    con = duckdb.connect(str(out / "omop.duckdb"), read_only=True)
    try:
        meas = con.execute("SELECT * FROM measurement ORDER BY measurement_id").df()
    finally:
        con.close()
    ceiling = json.loads((out / "truth" / "ceiling.json").read_text())
    ceiling.pop("definitions")
    x = np.asarray(ad.read_h5ad(out / "omics" / "expression.h5ad").X)
    return {
        "index": _frame_hash(pd.read_parquet(out / "index.parquet")),
        "truth": _frame_hash(pd.read_parquet(out / "truth" / "patients.parquet")),
        "omics": hashlib.sha256(x.tobytes()).hexdigest()[:16],
        "measurement": _frame_hash(meas),
        "ceiling": ceiling,
    }


def test_default_draw_is_unchanged(tmp_path: Path) -> None:
    synthesize(tmp_path / "c", n_patients=120, seed=7, workers=1)
    assert _draw_fingerprint(tmp_path / "c") == DEFAULT_DRAW


def test_default_linear_predictor_is_the_general_one() -> None:
    # The default takes the original expression; a scenario equal to the default in all
    # but an explicit 1.0 goes through the general loop: both must give the same model.
    lat = _latents(500)
    general = Scenario(strength={"ehr": 1.0 + 1e-15})
    assert np.allclose(_model.linear_predictor(lat), _model.linear_predictor(lat, general))


@pytest.mark.parametrize("modality", ["ehr", "imaging", "omics", "environment"])
def test_no_signal_modality_has_no_effect(modality: str) -> None:
    scenario = Scenario(strength={modality: 0.0}, shapes={modality: "u"})
    lat = _latents(400)
    base = _model.linear_predictor(lat, scenario)
    names = {
        "ehr": ("age_z", "male", "s_ehr"),
        "imaging": ("img",),
        "omics": ("m_prolif", "m_inflam"),
        "environment": ("env",),
    }[modality]
    moved = dict(lat)
    for name in names:
        moved[name] = np.random.default_rng(9).normal(size=400) * 3.0
    assert np.array_equal(base, _model.linear_predictor(moved, scenario))
    # ...while under the default the same change moves the risk
    assert not np.allclose(_model.linear_predictor(lat), _model.linear_predictor(moved))


def test_threshold_shape_is_a_step() -> None:
    lat = {k: np.zeros(201) for k in _latents(1)}
    lat["s_ehr"] = np.linspace(-3, 3, 201)
    eta = _model.linear_predictor(lat, Scenario(shapes={"ehr": "threshold"}))
    below, above = eta[lat["s_ehr"] <= THRESHOLD_AT], eta[lat["s_ehr"] > THRESHOLD_AT]
    assert np.ptp(below) == 0 and np.ptp(above) == 0
    assert above[0] - below[0] == pytest.approx(0.80 / 0.4619, rel=1e-3)


def test_u_shape_is_symmetric_and_shapes_are_standardised() -> None:
    lat = {k: np.zeros(101) for k in _latents(1)}
    lat["env"] = np.linspace(-2, 2, 101)
    eta = _model.linear_predictor(lat, Scenario(shapes={"environment": "u"}, interaction=False))
    assert np.allclose(eta, eta[::-1]) and eta[50] < eta[0]
    x = np.random.default_rng(1).normal(size=400_000)
    for shape in ("linear", "threshold", "u"):
        g = shaped(x, shape)
        assert abs(g.mean()) < 0.01 and abs(g.std() - 1.0) < 0.01, shape


def test_interaction_knob_and_strength() -> None:
    lat = _latents(300)
    on, off = Scenario(strength={"imaging": 2.0}), Scenario(interaction=False)

    def mixed(scenario: Scenario) -> np.ndarray:
        # second difference in env and m_inflam: zero when the two enter additively
        def f(de: float, dm: float) -> np.ndarray:
            return _model.linear_predictor(
                {**lat, "env": lat["env"] + de, "m_inflam": lat["m_inflam"] + dm}, scenario
            )

        return f(1, 1) - f(1, 0) - f(0, 1) + f(0, 0)

    assert np.allclose(mixed(off), 0.0)
    assert np.allclose(mixed(on), 0.60)
    doubled = _model.linear_predictor(lat, on) - _model.linear_predictor(lat)
    assert np.allclose(doubled, 0.80 * lat["img"])


def test_hazard_scale_brings_more_events() -> None:
    eta = np.zeros(5000)
    index = np.full(5000, np.datetime64("2018-01-01"))
    events = [
        _model.sample_outcomes(
            np.random.default_rng(0), eta, index, max_followup=np.full(5000, 3000), hazard_scale=h
        )["event"].sum()
        for h in (0.3, 1.0, 3.0)
    ]
    assert events[0] < events[1] < events[2]
    assert _model.event_probability(eta[:1], hazard_scale=3.0) > _model.event_probability(eta[:1])


def test_gene_count_and_modules() -> None:
    rng = np.random.default_rng(0)
    lat = {**_latents(50), "m_epithelial": np.zeros(50), "m_stromal": np.zeros(50)}
    x, var, members, _ = omics.simulate_expression(rng, lat, np.arange(50), n_genes=40)
    assert x.shape == (50, 40) and len(var) == 40
    assert all(len(g) == 4 for g in members.values())
    assert len({g for genes in members.values() for g in genes}) == 32


def test_bad_knobs_are_input_errors() -> None:
    for kwargs in (
        {"shapes": {"ehr": "cubic"}},
        {"shapes": {"genome": "linear"}},
        {"strength": {"omics": -1.0}},
        {"n_genes": 5},
        {"hazard_scale": 0.0},
        {"noise_labs": -1},
        {"n_genes": "300"},
        {"interaction": "yes"},
    ):
        with pytest.raises(InputError, match="scenario"):
            Scenario(**kwargs)
    with pytest.raises(InputError, match="did you mean 'n_genes'"):
        Scenario.from_mapping({"n_gene": 300})
    assert Scenario.from_mapping({"shapes": {"ehr": "u"}}) == Scenario(shapes={"ehr": "u"})


def test_scenario_draw_follows_the_knobs(tmp_path: Path) -> None:
    scenario = Scenario(
        shapes={"ehr": "threshold", "environment": "u"},
        strength={"imaging": 0.0},
        interaction=False,
        n_genes=40,
        noise_labs=2,
        hazard_scale=2.0,
    )
    summary = synthesize(tmp_path / "c", n_patients=120, seed=7, workers=1, scenario=scenario)
    out = tmp_path / "c"
    truth = pd.read_parquet(out / "truth" / "patients.parquet")
    lat = {k: truth[k].to_numpy(dtype=float) for k in _latents(1)}
    # the true risk written is the scenario's model, and so are the oracle's probabilities
    assert np.allclose(truth["risk_true"], _model.linear_predictor(lat, scenario))
    assert np.allclose(
        truth["p_true"], _model.event_probability(truth["risk_true"].to_numpy(), hazard_scale=2.0)
    )
    assert ad.read_h5ad(out / "omics" / "expression.h5ad").n_vars == 40
    con = duckdb.connect(str(out / "omop.duckdb"), read_only=True)
    try:
        noise = con.execute(
            f"SELECT COUNT(DISTINCT measurement_concept_id) FROM measurement "
            f"WHERE measurement_concept_id > {NOISE_LAB_BASE}"
        ).fetchone()
        concepts = con.execute(
            f"SELECT COUNT(*) FROM concept WHERE concept_id > {NOISE_LAB_BASE}"
        ).fetchone()
    finally:
        con.close()
    assert noise == (2,) and concepts == (2,)
    signal = json.loads((out / "truth" / "signal.json").read_text())
    assert signal["scenario"]["shapes"]["ehr"] == "threshold"
    assert summary.scenario["hazard_scale"] == 2.0


def test_observed_expectation_ignores_a_silent_modality() -> None:
    lat = _latents(200)
    present = {m: np.ones(200, dtype=bool) for m in _model.OPTIONAL_MODALITIES}
    scenario = Scenario(strength={"imaging": 0.0})
    a = _model.observed_expectation(np.random.default_rng(0), lat, present, scenario=scenario)
    moved = {**lat, "img": lat["img"][::-1].copy()}
    b = _model.observed_expectation(np.random.default_rng(0), moved, present, scenario=scenario)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
