"""Scoring image files against a reference and/or a NEMA IQ phantom: the API behind ``pairless evaluate``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.io.files import write_bytes
from pairless.metrics.image import METRICS

PHANTOMS = ("nema",)


def evaluate_images(
    images: list[Path],
    *,
    reference: Path | None = None,
    data_range: float | None = None,
    mask: Path | None = None,
    normalization: str = "euclidean",
    gaussian_ssim: bool = False,
    metrics: Sequence[str] = METRICS,
    phantom: str | None = None,
    sphere_activity: float | None = None,
    background_activity: float | None = None,
    units: str | None = None,
    activity_units: str = "kBq/mL",
    progress: bool | None = None,
) -> list[dict]:
    """Return one JSON-ready dict per image with its metrics and the conventions they used.

    With a ``reference``: ``psnr``, ``nrmse``, ``ssim``, ``si_psnr``; the data range defaults to the
    reference's max − min (stated in the result).  With ``phantom="nema"``: ``spheres``, the
    recovery coefficients of the six spheres and their EARL verdicts; the activities are in
    ``activity_units`` and converted to each image's units (from the file, or ``units``), both stated
    in the result's ``units`` (see :mod:`pairless.metrics.units`).

    Every image is checked from its header first (format, shape against the reference's, axes), so
    a bad one among many is refused before any is scored; then they are read and scored one at a
    time, so memory holds the reference and one image, whatever their number.  ``progress``: a bar
    over the images on stderr (default: when stderr is a terminal).
    """
    from pairless.io import inspect_image, read_image

    if not images:
        raise PairlessError("no images to evaluate; pass them with --images A B ...")
    if reference is None and phantom is None:
        raise PairlessError("nothing to compare with; pass --reference REF and/or --phantom nema")
    if phantom is not None and phantom not in PHANTOMS:
        raise PairlessError(
            f"unknown phantom {phantom!r}; the supported phantom is 'nema' (NEMA IQ / IEC body)"
        )
    if phantom is not None and sphere_activity is None:
        raise PairlessError(
            "--phantom nema needs the true sphere activity; pass --sphere-activity A (in --activity-units)"
        )
    if phantom is not None:  # a misspelt unit is refused before any image is read
        from pairless.metrics.units import activity_units_name, unit_name

        activity_units_name(activity_units)
        if units is not None:
            unit_name(units)
    if mask is not None and reference is None:
        raise PairlessError("--mask applies to the reference metrics; pass --reference REF as well")

    # every image is checked from its header first; then they are read one at a time (memory: one image)
    infos = [inspect_image(p) for p in images]
    ref = read_image(reference) if reference is not None else None
    mask_array = read_image(mask).data != 0 if mask is not None else None
    if phantom is not None:
        for path, info in zip(images, infos):
            if info.axes != "ZYX":
                raise PairlessError(
                    f"{path}: NEMA evaluation needs a 3D volume with axes ZYX, got axes {info.axes!r}; pass"
                    " the whole reconstructed volume (NIfTI or DICOM series)"
                )
    if ref is not None:
        for path, info in zip(images, infos):
            if info.shape != ref.data.shape:
                raise PairlessError(
                    f"{str(path)!r} has shape {info.shape} but the reference {str(reference)!r} has "
                    f"{ref.data.shape}; compare images of the same size"
                )
        if mask_array is not None and mask_array.shape != ref.data.shape:
            raise PairlessError(
                f"mask {str(mask)!r} has shape {mask_array.shape} but the images have {ref.data.shape}; "
                "pass a mask of the images' size"
            )
        if data_range is None:
            data_range = reference_range(ref.data)

    results = []
    for path in _progress(images, show=sys.stderr.isatty() if progress is None else progress):
        image = read_image(path)
        if ref is not None and image.data.shape != ref.data.shape:  # the header said otherwise
            raise PairlessError(
                f"{str(path)!r} has shape {image.data.shape} but the reference {str(reference)!r} has "
                f"{ref.data.shape}; compare images of the same size"
            )
        entry = score_image(
            image.data,
            name=str(path),
            reference=None if ref is None else ref.data,
            data_range=data_range,
            mask=mask_array,
            normalization=normalization,
            gaussian_ssim=gaussian_ssim,
            metrics=metrics,
            reference_name=None if ref is None else str(reference),
            nema=(
                None
                if phantom is None
                else _nema_settings(
                    image,
                    sphere_activity,
                    background_activity,
                    name=str(path),
                    units=units,
                    activity_units=activity_units,
                )
            ),
        )
        results.append(entry)
        del image
    return results


def _progress(paths: list[Path], *, show: bool):
    """The paths, with a bar over them on stderr when there are several and ``show``."""
    if not show or len(paths) < 2:
        yield from paths
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("scoring images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield from bar.track(paths)


def reference_range(reference: np.ndarray) -> float:
    """The data range PSNR and SSIM use by default: the reference's max − min (never the image's)."""
    # in float64: max − min wraps around in int16 and overflows in float32
    data_range = float(np.max(reference)) - float(np.min(reference))
    if data_range <= 0:
        raise PairlessError("the reference is constant, so its range is 0; pass --data-range R explicitly")
    return data_range


def score_image(
    image: np.ndarray,
    *,
    name: str,
    reference: np.ndarray | None = None,
    data_range: float | None = None,
    mask: np.ndarray | None = None,
    normalization: str = "euclidean",
    gaussian_ssim: bool = False,
    metrics: Sequence[str] = METRICS,
    reference_name: str | None = None,
    nema: dict | None = None,
) -> dict:
    """One image's metrics against ``reference`` and/or, with ``nema`` (``voxel_size``, ``sphere_activity``,
    ``background_activity``), its NEMA IQ recovery coefficients: the row of :func:`evaluate_images`."""
    from pairless.metrics.image import image_metrics

    entry: dict = {"image": name}
    if reference is not None:
        if image.shape != reference.shape:
            raise PairlessError(
                f"{name!r} has shape {image.shape} but the reference has {reference.shape}; "
                "compare images of the same size"
            )
        data_range = reference_range(reference) if data_range is None else data_range
        entry.update(
            image_metrics(
                image,
                reference,
                data_range=data_range,
                mask=mask,
                normalization=normalization,
                gaussian=gaussian_ssim,
                metrics=metrics,
            )
        )
        if reference_name is not None:
            entry["reference"] = reference_name
    if nema is not None:
        from pairless.metrics.pet import evaluate_nema

        if image.ndim != 3:
            raise PairlessError(
                f"NEMA evaluation needs a 3D volume with axes ZYX, but {name!r} is {image.ndim}D; "
                "pass the whole reconstructed volume (NIfTI or DICOM series)"
            )
        entry.update(
            evaluate_nema(
                np.asarray(image, dtype=np.float32),
                voxel_size=tuple(nema["voxel_size"]),
                sphere_activity=nema["sphere_activity"],
                background_activity=nema.get("background_activity"),
            )
        )
        if "units" in nema:
            entry["units"] = nema["units"]
    return entry


def _nema_settings(
    image,
    sphere_activity: float,
    background_activity: float | None,
    *,
    name: str,
    units: str | None,
    activity_units: str,
) -> dict:
    from pairless.metrics.units import nema_activities

    spatial = image.spatial_axes
    if spatial != "ZYX" or image.data.ndim != 3:
        raise PairlessError(
            f"NEMA evaluation needs a 3D volume with axes ZYX, got axes {image.axes!r}; pass the whole "
            "reconstructed volume (NIfTI or DICOM series)"
        )
    if image.voxel_size is None:
        raise PairlessError(
            "NEMA evaluation needs the voxel size in mm, which this file does not hold; save the volume as "
            "NIfTI or DICOM (they carry it)"
        )
    activities = nema_activities(
        image,
        name=name,
        sphere_activity=sphere_activity,
        background_activity=background_activity,
        units=units,
        activity_units=activity_units,
    )
    return {"voxel_size": tuple(image.voxel_size), **activities}


def write_json(path: str | os.PathLike, results: list[dict]) -> Path:
    """Strict JSON: an infinite PSNR (identical images) is written as the string ``"inf"``."""
    text = json.dumps({"images": _strict(results)}, indent=2, allow_nan=False).encode()
    return write_bytes(path, text)  # a full disk or an unwritable folder: one line naming the path and size


def _strict(value):
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else str(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value
