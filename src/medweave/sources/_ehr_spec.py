"""What the EHR readers (``omop``, ``fhir``) share: their keys and the block they build.

``form: features`` (the default) gives one row of statistics per patient
(:func:`~medweave.sources.ehr_sql.ehr_features`); ``form: sequence`` gives each patient's
records in the window as an event sequence
(:func:`~medweave.sources.ehr_sequence.ehr_sequences`). A cohort may read the same
database twice, once in each form, under two source names.

Both forms share the presence rule and the value checks of the event model
(:mod:`medweave.sources.ehr_sql`): a patient is present only with a person row and a
coded, dated record in the window (else missing as ``no_person_record`` or
``no_records_in_window``); text that is not a number, non-finite values and impossible
ages are an error, or with ``on_error: skip`` left out and counted.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medweave.cohort._block import ModalityBlock
from medweave.sources._base import ReadContext, SourceSpec
from medweave.sources.ehr_sequence import ehr_sequences
from medweave.sources.ehr_sql import DOMAINS, Domain, SqlEngine, ehr_features

__all__ = ["EhrSpec", "ehr_block"]


class EhrSpec(SourceSpec):
    """Keys of every EHR source: ``domains``, ``min_patients`` (features only), ``form``."""

    domains: tuple[Domain, ...] = DOMAINS
    min_patients: int = Field(default=5, ge=1)
    form: Literal["features", "sequence"] = "features"

    @model_validator(mode="after")
    def _check_ehr_keys(self) -> EhrSpec:
        if not self.domains:
            raise ValueError(f"domains is empty; use some of {', '.join(DOMAINS)}")
        if self.form == "sequence" and "min_patients" in self.model_fields_set:
            raise ValueError(
                "min_patients applies to form: features only; a sequence keeps every code "
                "and the model's vocabulary is fitted per fold (the estimator's "
                "sequence_min_count), so remove min_patients"
            )
        return self


def ehr_block(engine: SqlEngine, spec: EhrSpec, ctx: ReadContext) -> ModalityBlock:
    """The block of ``spec.form`` for the cohort's patients from ``engine``'s event model."""
    if spec.form == "sequence":
        return ehr_sequences(
            engine,
            index=ctx.index,
            lookback_days=ctx.lookback_days,
            audit=ctx.audit,
            source=spec.name,
            domains=spec.domains,
            on_error=spec.on_error,
        )
    return ehr_features(
        engine,
        index=ctx.index,
        lookback_days=ctx.lookback_days,
        audit=ctx.audit,
        source=spec.name,
        domains=spec.domains,
        min_patients=spec.min_patients,
        on_error=spec.on_error,
    )
