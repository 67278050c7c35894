"""True phantom activities in the image's own units: concentrations scale, SUVbw needs the scan's dose.

A recovery coefficient is measured / true concentration, so both must be in one unit.  The image's
unit comes from the file (:func:`pairless.io.units.image_units`) or the caller; the activities'
unit from the caller (``kBq/mL`` by default).  Body-weight SUV (``g/mL``) relates to a
concentration through the patient weight W and the injected dose decayed to the scan, D(t_scan):

    SUVbw = C [Bq/mL] · W [g] / D(t_scan) [Bq]                                              (1)

as the QIBA FDG-PET/CT profile's vendor-neutral pseudo-code computes it: t_scan is SeriesDate/Time
unless that is after the AcquisitionDate/Time (a post-processed series; then the acquisition), the
dose is RadionuclideTotalDose at RadiopharmaceuticalStartDateTime (or StartTime on the series
date) decayed with RadionuclideHalfLife; DecayCorrection ADMIN images are already corrected to the
injection, so D is not decayed.
"""

from __future__ import annotations

import datetime as dt

from pairless.errors import PairlessError
from pairless.io.units import CONCENTRATION, SUV_BW, image_units, unit_name

#: the activities are in the image's own units: no conversion (any unit, counts included)
IMAGE = "image"


def activity_units_name(text: str) -> str:
    """``image`` or a unit pairless converts (see :mod:`pairless.io.units`)."""
    if str(text).strip().lower() == IMAGE:
        return IMAGE
    return unit_name(text, option="--activity-units")


def nema_activities(
    image,
    *,
    name: str,
    sphere_activity: float,
    background_activity: float | None,
    units: str | None = None,
    activity_units: str = "kBq/mL",
) -> dict:
    """The sphere and background activities converted to the image's units, and what was converted.

    ``image`` is a :class:`pairless.io.Image` (its units and DICOM tags are read) or ``None`` for a
    bare array; ``units`` overrides the image's own.  Raises one line saying what to pass when the
    conversion is impossible (counts, an unknown unit, SUV without weight and dose).
    """
    tags = {}
    if units is not None:
        image_unit, source = unit_name(units), "--units"
    elif image is not None:
        image_unit, source = image_units(image)
    else:
        image_unit, source = None, "not given"
    if image is not None and image.meta.get("format") == "dicom":
        tags = image.meta.get("dicom", {})
    given = activity_units_name(activity_units)
    factor = 1.0 if given == IMAGE else _factor(image_unit, source, given, tags, name)
    return {
        "sphere_activity": sphere_activity * factor,
        "background_activity": None if background_activity is None else background_activity * factor,
        "units": {
            "image": image_unit if image_unit is not None else "unknown",
            "image_units_from": source,
            "activities": image_unit if given == IMAGE and image_unit else given,
            "activity_to_image": factor,
            "sphere_activity_given": sphere_activity,
            "background_activity_given": background_activity,
        },
    }


def _factor(image_unit: str | None, source: str, given: str, tags: dict, name: str) -> float:
    """What an activity in ``given`` units is multiplied by to be in ``image_unit``."""
    if image_unit is None:
        raise PairlessError(
            f"{name}: the units of its values are unknown ({source}), so a {given} activity cannot be "
            "compared with them; pass --units (what the values are, e.g. Bq/mL, kBq/mL or g/mL) or "
            "--activity-units image (the activities in the image's own units)"
        )
    if image_unit == given:
        return 1.0
    if image_unit in CONCENTRATION and given in CONCENTRATION:
        return CONCENTRATION[given] / CONCENTRATION[image_unit]
    if SUV_BW in (image_unit, given) and {image_unit, given} - {SUV_BW} <= set(CONCENTRATION):
        suv_per_bq_ml = suv_factor(tags, name=name)
        if image_unit == SUV_BW:  # concentration -> SUV
            return CONCENTRATION[given] * suv_per_bq_ml
        return 1.0 / (suv_per_bq_ml * CONCENTRATION[image_unit])  # SUV -> concentration
    raise PairlessError(
        f"{name}: its values are {image_unit} ({source}), not an activity concentration or SUVbw, so a "
        f"{given} activity cannot be converted to them; pass --activity-units image with the sphere and "
        "background values in the image's own units"
    )


def suv_factor(tags: dict, *, name: str = "the image") -> float:
    """SUVbw per Bq/mL of a series with these DICOM tags, eq. (1): W / D(t_scan) in g/Bq."""
    drug = tags.get("RadiopharmaceuticalInformationSequence")
    drug = drug[0] if drug else {}
    weight = _number(tags.get("PatientWeight"))
    dose = _number(drug.get("RadionuclideTotalDose"))
    half_life = _number(drug.get("RadionuclideHalfLife"))
    if not (weight and dose and half_life):
        raise PairlessError(
            f"{name}: SUVbw needs the patient weight, injected dose and half-life (PatientWeight, "
            "RadionuclideTotalDose, RadionuclideHalfLife), which it does not carry; pass the activities "
            "in the image's own units with --activity-units g/mL (SUV) or --activity-units image"
        )
    correction = str(tags.get("DecayCorrection") or "").upper()
    if correction == "ADMIN":  # values already decay corrected to the injection
        return weight * 1000.0 / dose
    if correction != "START":
        raise PairlessError(
            f"{name}: DecayCorrection {correction or 'absent'}; SUVbw conversion needs images decay "
            "corrected to the scan start (START) or the injection (ADMIN); pass --activity-units image"
        )
    series = _when(tags.get("SeriesDate"), tags.get("SeriesTime"))
    acquisition = _when(tags.get("AcquisitionDate"), tags.get("AcquisitionTime"))
    scan = acquisition if series is None or (acquisition is not None and series > acquisition) else series
    injection = _datetime(drug.get("RadiopharmaceuticalStartDateTime"))
    if injection is None and scan is not None:
        injection = _when(scan.strftime("%Y%m%d"), drug.get("RadiopharmaceuticalStartTime"))
        if injection is not None and injection > scan:  # injected before midnight, scanned after
            injection -= dt.timedelta(days=1)
    if scan is None or injection is None:
        raise PairlessError(
            f"{name}: SUVbw needs the scan and injection times (SeriesDate/Time or AcquisitionDate/Time, "
            "RadiopharmaceuticalStartDateTime); pass the activities with --activity-units g/mL or image"
        )
    decayed = dose * 2.0 ** (-(scan - injection).total_seconds() / half_life)
    return weight * 1000.0 / decayed


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _when(date, time) -> dt.datetime | None:
    """A DICOM DA + TM pair (TM may lack seconds and carry a fraction) as a datetime, or None."""
    date, time = str(date or "").strip(), str(time or "").strip().replace(":", "")
    if len(date) != 8 or len(time) < 2:
        return None
    whole, _, fraction = time.partition(".")
    return _datetime(date + whole.ljust(6, "0") + (f".{fraction}" if fraction else ""))


def _datetime(value) -> dt.datetime | None:
    """A DICOM DT (YYYYMMDDHHMMSS.ffffff, an offset ignored) as a datetime, or None."""
    text = str(value or "").strip()
    digits, _, rest = text.partition(".")
    digits = digits.split("+")[0].split("-")[0]
    if len(digits) < 12 or not digits.isdigit():
        return None
    fraction = "".join(c for c in rest.split("+")[0].split("-")[0] if c.isdigit())[:6]
    try:
        when = dt.datetime.strptime(digits[:14].ljust(14, "0"), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return when + dt.timedelta(microseconds=int(fraction.ljust(6, "0"))) if fraction else when
