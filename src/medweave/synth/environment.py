"""Daily air pollution and temperature per location (zip code), and the exposure signal.

Each location has its own PM2.5, ozone and temperature level; all three have seasons
(PM2.5 peaks in winter, ozone and temperature in summer), day-to-day autocorrelated noise,
and PM2.5 falls slowly over the years.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.signal import lfilter

__all__ = ["Exposures", "exposure_signal", "make_locations", "simulate_exposures"]

PM25_WINDOW_DAYS = 365
# Fixed standardisation of the 365-day mean PM2.5 (µg/m³), close to the population's.
PM25_CENTER = 7.8
PM25_SCALE = 2.2


class Exposures:
    """Daily series for ``n_locations`` locations over ``dates`` (arrays are locations × days)."""

    def __init__(
        self, dates: np.ndarray, pm25: np.ndarray, ozone: np.ndarray, temperature: np.ndarray
    ) -> None:
        self.dates = dates
        self.pm25 = pm25
        self.ozone = ozone
        self.temperature = temperature

    def window_mean_pm25(
        self, location_idx: np.ndarray, end_date: np.ndarray, days: int
    ) -> np.ndarray:
        """Mean PM2.5 over the ``days`` days before ``end_date`` (excluded) per patient."""
        pm25 = self.pm25.astype(np.float64).round(2)
        csum = np.concatenate([np.zeros((pm25.shape[0], 1)), pm25.cumsum(axis=1)], 1)
        end = (end_date - self.dates[0]).astype(int)
        start = end - days
        if start.min() < 0:
            raise ValueError("exposure series starts after a patient's window")
        return (csum[location_idx, end] - csum[location_idx, start]) / days


def make_locations(rng: np.random.Generator, n_locations: int) -> pd.DataFrame:
    """OMOP-style location rows with fake street addresses and distinct zip codes."""
    zips = rng.choice(np.arange(10000, 99999), size=n_locations, replace=False)
    streets = np.array(["Oak", "Maple", "Cedar", "Pine", "Elm", "Birch", "Willow", "Ash"])
    cities = np.array(["Riverton", "Lakeside", "Hillview", "Fairmont", "Brookfield", "Easton"])
    states = np.array(["NY", "PA", "OH", "IL", "CA", "TX", "GA", "WA"])
    return pd.DataFrame(
        {
            "location_id": np.arange(1, n_locations + 1, dtype=np.int64),
            "address_1": [
                f"{rng.integers(1, 9999)} {streets[rng.integers(0, len(streets))]} St"
                for _ in range(n_locations)
            ],
            "city": cities[rng.integers(0, len(cities), n_locations)],
            "state": states[rng.integers(0, len(states), n_locations)],
            "zip": [f"{z:05d}" for z in zips],
            "location_source_value": [f"LOC{i:05d}" for i in range(1, n_locations + 1)],
            "latitude": np.round(rng.uniform(30, 47, n_locations), 3),
            "longitude": np.round(rng.uniform(-122, -72, n_locations), 3),
        }
    )


def simulate_exposures(
    rng: np.random.Generator, n_locations: int, start: np.datetime64, end: np.datetime64
) -> Exposures:
    """Simulate daily PM2.5 (µg/m³), ozone (ppb) and temperature (°C), inclusive range."""
    dates = np.arange(start, end + np.timedelta64(1, "D"), dtype="datetime64[D]")
    n_days = dates.size
    doy = (dates - dates.astype("datetime64[Y]")).astype(int)
    years = (dates - dates[0]).astype(int) / 365.25
    season = np.cos(2 * np.pi * (doy - 15) / 365.25)  # +1 mid-January, -1 mid-July

    def ar1(phi: float, sd: float) -> np.ndarray:
        shocks = rng.normal(0, sd * np.sqrt(1 - phi**2), (n_locations, n_days))
        return lfilter([1.0], [1.0, -phi], shocks, axis=1)

    pm_base = rng.lognormal(np.log(8.5), 0.28, n_locations)[:, None]
    pm_season = rng.uniform(0.10, 0.30, n_locations)[:, None]
    pm25 = pm_base * np.exp(pm_season * season - 0.025 * years + ar1(0.7, 0.35))
    oz_base = rng.uniform(28, 45, n_locations)[:, None]
    ozone = np.clip(oz_base - 9 * season + ar1(0.6, 6.0), 2, None)
    t_mean = rng.uniform(6, 20, n_locations)[:, None]
    t_amp = rng.uniform(6, 14, n_locations)[:, None]
    temperature = t_mean - t_amp * season + ar1(0.8, 3.0)
    # Rounded as written, so the truth is computed from exactly what a reader sees.
    return Exposures(
        dates,
        np.round(pm25, 2).astype(np.float32),
        np.round(ozone, 1).astype(np.float32),
        np.round(temperature, 1).astype(np.float32),
    )


def exposure_signal(pm25_mean: np.ndarray) -> np.ndarray:
    """The standardised exposure that enters the true risk."""
    return (pm25_mean - PM25_CENTER) / PM25_SCALE


def write_exposures(path: Path, exposures: Exposures, zips: list[str]) -> int:
    """Write the long table (zip, date, pm25, ozone, temperature); returns its row count."""
    n_loc, n_days = exposures.pm25.shape
    table = pa.table(
        {
            "zip": pa.DictionaryArray.from_arrays(
                pa.array(np.repeat(np.arange(n_loc, dtype=np.int32), n_days)), pa.array(zips)
            ),
            "date": pa.array(np.tile(exposures.dates, n_loc)),
            "pm25": pa.array(exposures.pm25.ravel().astype(np.float64).round(2)),
            "ozone": pa.array(exposures.ozone.ravel().astype(np.float64).round(1)),
            "temperature": pa.array(exposures.temperature.ravel().astype(np.float64).round(1)),
        }
    )
    units = {"pm25": "ug/m3", "ozone": "ppb", "temperature": "degC"}
    meta = {b"medweave.units": json.dumps(units).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")
    return table.num_rows
