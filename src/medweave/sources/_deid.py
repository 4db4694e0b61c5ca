"""De-identification of DICOM headers on ingest, after the DICOM PS3.15 basic profile.

Annex E of PS3.15 lists, per attribute, an action: remove (X), blank (Z), replace with a
dummy (D), replace a UID (U) or keep (K). :func:`deidentify` applies a conservative
version of it to a copy of a dataset:

* names (every value of VR PN, at any depth), identifiers (PatientID, AccessionNumber,
  StudyID, ...) and every date and time (VR DA, DT, TM) become empty values;
* addresses, institutions, staff, free text (every LT, ST and UT value and the
  descriptions and comments of the profile), ages and body measures are removed, as are
  private tags, overlays and curves;
* instance UIDs are replaced by a deterministic hash, so series and studies still group.

Dates are blanked rather than shifted: medweave keeps only the number of days between a
study and the patient's index date, computed before de-identification. Pixel data is not
inspected: burned-in annotations are out of scope.
"""

from __future__ import annotations

import copy
from typing import cast

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

__all__ = ["deidentify"]

#: Kept as present-but-empty (type 2 attributes of the basic profile: Z, or D blanked).
_BLANK = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "ReferringPhysicianName",
        "AccessionNumber",
        "StudyID",
        "ContentCreatorName",
        "VerifyingObserverName",
        "PersonName",
    }
)

#: Removed (X in the basic profile, or X/Z/D where removing is allowed).
_REMOVE = frozenset(
    {
        "AdditionalPatientHistory",
        "AdmissionID",
        "AdmittingDiagnosesDescription",
        "Allergies",
        "BranchOfService",
        "CountryOfResidence",
        "CurrentPatientLocation",
        "DerivationDescription",
        "DeviceSerialNumber",
        "EthnicGroup",
        "ImageComments",
        "InstitutionAddress",
        "InstitutionCodeSequence",
        "InstitutionName",
        "InstitutionalDepartmentName",
        "IssuerOfPatientID",
        "MedicalAlerts",
        "MedicalRecordLocator",
        "MilitaryRank",
        "NameOfPhysiciansReadingStudy",
        "Occupation",
        "OperatorsName",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAddress",
        "PatientAge",
        "PatientBirthName",
        "PatientBirthTime",
        "PatientComments",
        "PatientInsurancePlanCodeSequence",
        "PatientMotherBirthName",
        "PatientReligiousPreference",
        "PatientSize",
        "PatientState",
        "PatientTelephoneNumbers",
        "PatientWeight",
        "PerformedProcedureStepDescription",
        "PerformedProcedureStepID",
        "PerformingPhysicianName",
        "PhysiciansOfRecord",
        "PregnancyStatus",
        "ProtocolName",
        "ReferencedPatientSequence",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "RegionOfResidence",
        "RequestAttributesSequence",
        "RequestedProcedureDescription",
        "RequestingPhysician",
        "ResponsibleOrganization",
        "ResponsiblePerson",
        "ScheduledProcedureStepDescription",
        "SeriesDescription",
        "SmokingStatus",
        "SourceApplicationEntityTitle",
        "StationName",
        "StudyComments",
        "StudyDescription",
    }
)

#: Instance UIDs (U): replaced by a hash of the original, the same everywhere it occurs.
_UIDS = frozenset(
    {
        "ConcatenationUID",
        "DimensionOrganizationUID",
        "FrameOfReferenceUID",
        "IrradiationEventUID",
        "MediaStorageSOPInstanceUID",
        "ReferencedFrameOfReferenceUID",
        "ReferencedSOPInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "StorageMediaFileSetUID",
        "StudyInstanceUID",
        "SynchronizationFrameOfReferenceUID",
    }
)

_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
METHOD = "medweave PS3.15 basic profile"  # LO: at most 64 characters


def _new_uid(value: str) -> str:
    return str(generate_uid(entropy_srcs=["medweave-deid", str(value)]))


def _vr(ds: Dataset, tag: BaseTag) -> str:
    """The element's VR without converting its value (implicit-VR files: the dictionary's)."""
    vr = ds.get_item(tag, keep_deferred=True).VR
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def _drop(tag: BaseTag, keyword: str, vr: str) -> bool:
    group = tag.group
    overlay_or_curve = (0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF) and group % 2 == 0
    return tag.is_private or overlay_or_curve or keyword in _REMOVE or vr in _FREE_TEXT_VRS


def _cleaned(ds: Dataset, out: Dataset) -> Dataset:
    """Fill ``out`` with the profile applied to ``ds`` (recursing into sequences).

    Elements that go are skipped or blanked without converting their stored value, so a
    malformed value in a removed attribute neither fails the read nor shows up in a
    pydicom warning. Kept raw elements are immutable and shared; the rest are copied.
    """
    for tag in list(ds.keys()):
        keyword = keyword_for_tag(tag)
        vr = _vr(ds, tag)
        if _drop(tag, keyword, vr):
            continue
        if vr == "SQ":
            items = [_cleaned(item, Dataset()) for item in ds[tag].value]
            out[tag] = DataElement(tag, "SQ", Sequence(items))
        elif keyword in _UIDS:
            value = ds[tag].value
            if isinstance(value, MultiValue | list):
                out[tag] = DataElement(tag, vr, [_new_uid(v) for v in value])
            else:
                out[tag] = DataElement(tag, vr, _new_uid(value) if value else value)
        elif keyword in _BLANK or vr == "PN" or vr in _TEMPORAL_VRS:
            out[tag] = DataElement(tag, vr, "")
        else:
            elem = ds.get_item(tag, keep_deferred=True)
            out[tag] = elem if isinstance(elem, RawDataElement) else copy.deepcopy(elem)
    return out


def deidentify(ds: Dataset) -> Dataset:
    """A de-identified copy of ``ds`` (the input is left unchanged); see the module notes.

    Marks the copy with PatientIdentityRemoved = YES and a DeidentificationMethod. A value
    that is kept and that pydicom cannot convert (a malformed UID) raises pydicom's error:
    callers that read untrusted files wrap this call and report the file, not the value.
    """
    out = _cleaned(ds, Dataset())
    implicit, little = ds.original_encoding
    out.set_original_encoding(implicit, little, ds.original_character_set)
    for attr in ("preamble", "filename", "fileobj_type", "timestamp"):
        if hasattr(ds, attr):  # deferred values are read from the file on first use
            setattr(out, attr, getattr(ds, attr))
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.file_meta = cast(FileMetaDataset, _cleaned(meta, FileMetaDataset()))
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = METHOD
    return out
