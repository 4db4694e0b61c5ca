"""OMOP standard concepts the synthetic EHR uses (real ids from the OHDSI vocabularies)."""

from __future__ import annotations

import pandas as pd

__all__ = ["CONCEPTS", "concept_table"]

# concept_id: (concept_name, domain_id, vocabulary_id, concept_class_id, concept_code)
CONCEPTS: dict[int, tuple[str, str, str, str, str]] = {
    # Gender, race, ethnicity
    8507: ("MALE", "Gender", "Gender", "Gender", "M"),
    8532: ("FEMALE", "Gender", "Gender", "Gender", "F"),
    8527: ("White", "Race", "Race", "Race", "5"),
    8516: ("Black or African American", "Race", "Race", "Race", "3"),
    8515: ("Asian", "Race", "Race", "Race", "2"),
    8522: ("Other Race", "Race", "Race", "Race", "8"),
    38003563: ("Hispanic or Latino", "Ethnicity", "Ethnicity", "Ethnicity", "Hispanic"),
    38003564: ("Not Hispanic or Latino", "Ethnicity", "Ethnicity", "Ethnicity", "Not Hispanic"),
    # Visits and record types
    9201: ("Inpatient Visit", "Visit", "Visit", "Visit", "IP"),
    9202: ("Outpatient Visit", "Visit", "Visit", "Visit", "OP"),
    9203: ("Emergency Room Visit", "Visit", "Visit", "Visit", "ER"),
    32817: ("EHR", "Type Concept", "Type Concept", "Type Concept", "OMOP4976890"),
    # Conditions (SNOMED)
    255573: (
        "Chronic obstructive lung disease",
        "Condition",
        "SNOMED",
        "Clinical Finding",
        "13645005",
    ),
    320128: ("Essential hypertension", "Condition", "SNOMED", "Clinical Finding", "59621000"),
    201826: ("Type 2 diabetes mellitus", "Condition", "SNOMED", "Clinical Finding", "44054006"),
    432867: ("Hyperlipidemia", "Condition", "SNOMED", "Clinical Finding", "55822004"),
    316139: ("Heart failure", "Condition", "SNOMED", "Clinical Finding", "84114007"),
    255848: ("Pneumonia", "Condition", "SNOMED", "Clinical Finding", "233604007"),
    313217: ("Atrial fibrillation", "Condition", "SNOMED", "Clinical Finding", "49436004"),
    # Drugs (RxNorm ingredients)
    1154343: ("albuterol", "Drug", "RxNorm", "Ingredient", "435"),
    1149380: ("fluticasone", "Drug", "RxNorm", "Ingredient", "41126"),
    1551099: ("prednisone", "Drug", "RxNorm", "Ingredient", "8640"),
    1503297: ("metformin", "Drug", "RxNorm", "Ingredient", "6809"),
    1308216: ("lisinopril", "Drug", "RxNorm", "Ingredient", "29046"),
    1332418: ("amlodipine", "Drug", "RxNorm", "Ingredient", "17767"),
    1545958: ("atorvastatin", "Drug", "RxNorm", "Ingredient", "83367"),
    1112807: ("aspirin", "Drug", "RxNorm", "Ingredient", "1191"),
    # Measurements (LOINC)
    3020460: (
        "C reactive protein [Mass/volume] in Serum or Plasma",
        "Measurement",
        "LOINC",
        "Lab Test",
        "1988-5",
    ),
    3000905: (
        "Leukocytes [#/volume] in Blood by Automated count",
        "Measurement",
        "LOINC",
        "Lab Test",
        "6690-2",
    ),
    3000963: ("Hemoglobin [Mass/volume] in Blood", "Measurement", "LOINC", "Lab Test", "718-7"),
    3016723: (
        "Creatinine [Mass/volume] in Serum or Plasma",
        "Measurement",
        "LOINC",
        "Lab Test",
        "2160-0",
    ),
    3004410: (
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        "Measurement",
        "LOINC",
        "Lab Test",
        "4548-4",
    ),
    3004249: ("Systolic blood pressure", "Measurement", "LOINC", "Clinical Observation", "8480-6"),
    3012888: ("Diastolic blood pressure", "Measurement", "LOINC", "Clinical Observation", "8462-4"),
    3038553: (
        "Body mass index (BMI) [Ratio]",
        "Measurement",
        "LOINC",
        "Clinical Observation",
        "39156-5",
    ),
    # Units (UCUM)
    8751: ("milligram per liter", "Unit", "UCUM", "Unit", "mg/L"),
    8848: ("thousand per microliter", "Unit", "UCUM", "Unit", "10*3/uL"),
    8713: ("gram per deciliter", "Unit", "UCUM", "Unit", "g/dL"),
    8840: ("milligram per deciliter", "Unit", "UCUM", "Unit", "mg/dL"),
    8554: ("percent", "Unit", "UCUM", "Unit", "%"),
    8876: ("millimeter mercury column", "Unit", "UCUM", "Unit", "mm[Hg]"),
    9531: ("kilogram per square meter", "Unit", "UCUM", "Unit", "kg/m2"),
}

RACE_CONCEPTS = {"white": 8527, "black": 8516, "asian": 8515, "other": 8522}


def concept_table() -> pd.DataFrame:
    """The ``concept`` rows, in OMOP CDM 5.4 columns."""
    rows = [
        {
            "concept_id": cid,
            "concept_name": name,
            "domain_id": domain,
            "vocabulary_id": vocab,
            "concept_class_id": cls,
            "standard_concept": "S",
            "concept_code": code,
            "valid_start_date": pd.Timestamp("1970-01-01").date(),
            "valid_end_date": pd.Timestamp("2099-12-31").date(),
            "invalid_reason": None,
        }
        for cid, (name, domain, vocab, cls, code) in CONCEPTS.items()
    ]
    return pd.DataFrame(rows)
