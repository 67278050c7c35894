"""What an image's values measure, and where a file records it.

pairless names value units ``Bq/mL``, ``kBq/mL``, ``MBq/mL`` (activity concentration), ``g/mL``
(body-weight SUV: (Bq/mL) / (Bq/g)) and ``counts``; any other unit is kept as the file states it
and is never converted.  A DICOM series states its unit in Units (0054,1001) (PET Series module,
defined terms BQML, GML, CNTS, ...) or, on some exports, RescaleType (0028,1054).  NIfTI has no
unit field: a NIfTI written by pairless carries ``units=<name>`` in its description (``descrip``).
"""

from __future__ import annotations

import numpy as np

from pairless.errors import PairlessError

#: Bq/mL per unit of each concentration unit
CONCENTRATION = {"Bq/mL": 1.0, "kBq/mL": 1e3, "MBq/mL": 1e6}
SUV_BW = "g/mL"
COUNTS = "counts"
KNOWN = (*CONCENTRATION, SUV_BW, COUNTS)
_ALIASES = {
    **{u.lower(): u for u in KNOWN},
    **{u.lower().replace("/ml", "/cc"): u for u in CONCENTRATION},
    "bqml": "Bq/mL",
    "gml": SUV_BW,
    "suv": SUV_BW,
    "suvbw": SUV_BW,
    "cnts": COUNTS,
}
# DICOM Units defined terms pairless converts; the others (PROPCPS, NONE, CM2ML, ...) are kept as stated
DICOM_UNITS = {"BQML": "Bq/mL", "GML": SUV_BW, "CNTS": COUNTS}
NIFTI_KEY = "units="


def unit_name(text: str, *, option: str = "--units") -> str:
    """The pairless name of a unit given by a user (case and ``cc``/``mL`` do not matter)."""
    name = _ALIASES.get(str(text).strip().lower())
    if name is None:
        raise PairlessError(f"unknown unit {text!r} for {option}; use one of {', '.join(KNOWN)}")
    return name


def dicom_units(tags: dict) -> tuple[str | None, str]:
    """The unit of a DICOM series' values from its tags, and which tag said so."""
    code = str(tags.get("Units") or "").strip().upper()
    source = f"DICOM Units {code}"
    if not code:
        code = str(tags.get("RescaleType") or "").strip().upper()
        source = f"DICOM RescaleType {code}"
    if not code or code == "US":  # US: unspecified
        return None, "no DICOM Units or RescaleType"
    suv_type = str(tags.get("SUVType") or "BW").strip().upper()
    if code == "GML" and suv_type != "BW":  # an SUV normalised to lean body mass etc. is not SUVbw
        return f"GML (SUVType {suv_type})", f"{source}, SUVType {suv_type}"
    return DICOM_UNITS.get(code, code), source


def nifti_description(units: str) -> bytes:
    """The NIfTI ``descrip`` (80 bytes at most) that records ``units``."""
    return f"pairless {NIFTI_KEY}{units}".encode()[:80]


def nifti_units(header) -> str | None:
    """The unit a pairless-written NIfTI header records, or None."""
    text = np.asarray(header["descrip"]).tobytes().split(b"\0")[0].decode("latin-1")
    prefix = f"pairless {NIFTI_KEY}"
    if not text.startswith(prefix):  # another tool's description
        return None
    return text.removeprefix(prefix).strip() or None


def image_units(image) -> tuple[str | None, str]:
    """The unit of an :class:`~pairless.io.Image`'s values and where it was read: the image's own
    ``meta["units"]``, the DICOM tags, or a pairless NIfTI description; ``None`` when nothing says."""
    meta = image.meta
    if meta.get("units"):
        return str(meta["units"]), "set by the writer of the image"
    if meta.get("format") == "dicom":
        return dicom_units(meta.get("dicom", {}))
    if meta.get("format") == "nifti" and meta.get("nifti_header") is not None:
        units = nifti_units(meta["nifti_header"])
        if units:
            return units, "NIfTI description"
    return None, "not recorded in the file"
