"""What a series written by :mod:`pairless.io.dicom` needs to conform to its IOD (DICOM PS3.3).

The modules of the PET Image IOD (A.21) and the Secondary Capture IOD (A.8.1) mark attributes as
type 1 (a value), type 2 (present, empty when unknown) or conditional.  The series-level values
come from the input series (``dicom.KEEP``) or the simulator; this module adds what every written
series must carry, recomputes what belongs to the new series (its number, slice count, image
indices) and marks a series pairless derived from another.  dciodvfy (dicom3tools) finds no error
in a simulated PET series, a denoised one or a Secondary Capture written from a NIfTI volume
(``tests/io/test_dicom_conformance.py``).
"""

from __future__ import annotations

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# a derived series is numbered after its source, so a viewer shows both, each with its own number
DERIVED_SERIES_OFFSET = 1000
# type 2 in the Patient, General Study, General Series and General Equipment modules
TYPE2 = (
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",
    "Manufacturer",
)
# type 2 in the PET Series, PET Isotope, NM/PET Patient Orientation and PET Image modules
PET_TYPE2 = ("CollimatorType", "CorrectedImage", "AcquisitionDate", "AcquisitionTime", "ActualFrameDuration")
PET_TYPE2_SEQUENCES = (
    "RadiopharmaceuticalInformationSequence",
    "PatientOrientationCodeSequence",
    "PatientGantryRelationshipCodeSequence",
)


def series_tags(tags: dict, *, derived: bool, method: str | None, slices: int) -> dict:
    """The tags every slice of a new series carries, completed for its IOD.

    ``derived``: the series is computed from the images of another (or from a file that is not an
    original acquisition): ImageType DERIVED, a DerivationDescription and a new SeriesNumber.
    """
    from pydicom.sequence import Sequence

    tags = dict(tags)
    pet = tags.get("SOPClassUID") == PET_IMAGE_STORAGE
    if derived:
        number = tags.get("SeriesNumber")
        tags["SeriesNumber"] = int(number) + DERIVED_SERIES_OFFSET if number not in (None, "") else ""
        # PET Image module: value 2 of ImageType is PRIMARY, derived or not
        tags["ImageType"] = ["DERIVED", "PRIMARY" if pet else "SECONDARY"]
        tags["DerivationDescription"] = f"denoised by pairless {method}" if method else "written by pairless"
    for keyword in TYPE2:
        tags.setdefault(keyword, "")
    if not any(k in tags for k in ("Laterality", "ImageLaterality", "BodyPartExamined")):
        tags["Laterality"] = ""  # 2C: required unless the body part is known to be unpaired
    if pet:
        for keyword in PET_TYPE2:
            tags.setdefault(keyword, "")
        for keyword in PET_TYPE2_SEQUENCES:
            tags.setdefault(keyword, Sequence())
        tags["NumberOfSlices"] = slices
        if tags.get("PatientOrientationCodeSequence"):  # it replaces PatientPosition, which must then go
            tags.pop("PatientPosition", None)
    if tags.get("SOPClassUID") != SECONDARY_CAPTURE:
        tags.setdefault("PositionReferenceIndicator", "")  # Frame of Reference module, type 2
    else:
        tags.setdefault("ConversionType", "WSD")  # SC Equipment: made on a workstation
        tags.setdefault("PatientOrientation", "")
        tags.setdefault("RescaleType", "US")  # the rescale has no stated unit
    return tags


def slice_tags(ds, tags: dict, index: int, location: float, source_uid: str | None) -> None:
    """Set the per-slice attributes of slice ``index`` (0-based) of a series written with ``tags``."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.valuerep import DSfloat

    if tags.get("SOPClassUID") == PET_IMAGE_STORAGE:
        ds.ImageIndex = index + 1  # a STATIC series has one time slice: the image index is the slice number
        ds.SliceLocation = DSfloat(float(location), auto_format=True)
    if source_uid and "DERIVED" in tags.get("ImageType", ()):
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "121322", "DCM"
        code.CodeMeaning = "Source image for image processing operation"
        source = Dataset()
        source.ReferencedSOPClassUID = tags["SOPClassUID"]
        source.ReferencedSOPInstanceUID = source_uid
        source.PurposeOfReferenceCodeSequence = Sequence([code])
        ds.SourceImageSequence = Sequence([source])
