"""Scoring image files against a reference and/or a NEMA IQ phantom: the API behind ``pairless evaluate``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from pairless.errors import PairlessError
from pairless.files import write_bytes

PHANTOMS = ("nema",)


def evaluate_images(
    images: list[Path],
    *,
    reference: Path | None = None,
    data_range: float | None = None,
    mask: Path | None = None,
    normalization: str = "euclidean",
    gaussian_ssim: bool = False,
    phantom: str | None = None,
    sphere_activity: float | None = None,
    background_activity: float | None = None,
    progress: bool | None = None,
) -> list[dict]:
    """Return one JSON-ready dict per image with its metrics and the conventions they used.

    With a ``reference``: ``psnr``, ``nrmse``, ``ssim``, ``si_psnr``; the data range defaults to the
    reference's max − min (stated in the result).  With ``phantom="nema"``: ``spheres``, the
    recovery coefficients of the six spheres and their EARL verdicts.

    Every image is checked from its header first (format, shape against the reference's, axes), so
    a bad one among many is refused before any is scored; then they are read and scored one at a
    time, so memory holds the reference and one image, whatever their number.  ``progress``: a bar
    over the images on stderr (default: when stderr is a terminal).
    """
    from pairless.io import inspect_image, read_image
    from pairless.metrics.image import image_metrics

    if not images:
        raise PairlessError("no images to evaluate; pass them with --images A B ...")
    if reference is None and phantom is None:
        raise PairlessError("nothing to compare with; pass --reference REF and/or --phantom nema")
    if phantom is not None and phantom not in PHANTOMS:
        raise PairlessError(f"unknown phantom {phantom!r}; the supported phantom is 'nema' (NEMA IQ / IEC body)")
    if phantom is not None and sphere_activity is None:
        raise PairlessError("--phantom nema needs the true sphere activity; pass --sphere-activity A (image units)")
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
                    f"{path}: NEMA evaluation needs a 3D volume with axes ZYX, got axes {info.axes!r}; pass the "
                    f"whole reconstructed volume (NIfTI or DICOM series)"
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
                f"pass a mask of the images' size"
            )
        if data_range is None:
            # in float64: max − min wraps around in int16 and overflows in float32
            data_range = float(np.max(ref.data)) - float(np.min(ref.data))
            if data_range <= 0:
                raise PairlessError("the reference is constant, so its range is 0; pass --data-range R explicitly")

    results = []
    for path in _progress(images, show=sys.stderr.isatty() if progress is None else progress):
        image = read_image(path)
        if ref is not None and image.data.shape != ref.data.shape:  # the header said otherwise
            raise PairlessError(
                f"{str(path)!r} has shape {image.data.shape} but the reference {str(reference)!r} has "
                f"{ref.data.shape}; compare images of the same size"
            )
        entry: dict = {"image": str(path)}
        if ref is not None:
            entry.update(
                image_metrics(
                    image.data, ref.data, data_range=data_range, mask=mask_array,
                    normalization=normalization, gaussian=gaussian_ssim,
                )
            )
            entry["reference"] = str(reference)
        if phantom == "nema":
            entry.update(_nema(image, sphere_activity=sphere_activity, background_activity=background_activity))
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


def _nema(image, *, sphere_activity: float, background_activity: float | None) -> dict:
    from pairless.metrics.pet import evaluate_nema

    spatial = image.spatial_axes
    if spatial != "ZYX" or image.data.ndim != 3:
        raise PairlessError(
            f"NEMA evaluation needs a 3D volume with axes ZYX, got axes {image.axes!r}; pass the whole "
            f"reconstructed volume (NIfTI or DICOM series)"
        )
    if image.voxel_size is None:
        raise PairlessError(
            "NEMA evaluation needs the voxel size in mm, which this file does not hold; save the volume as "
            "NIfTI or DICOM (they carry it)"
        )
    return evaluate_nema(
        np.asarray(image.data, dtype=np.float32), voxel_size=tuple(image.voxel_size),
        sphere_activity=sphere_activity, background_activity=background_activity,
    )


def print_table(results: list[dict]) -> None:
    """Print one row per image (and, for a phantom, one row per sphere) to the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    if "psnr" in results[0]:
        conv = results[0]["conventions"]
        table = Table(
            title=f"vs reference (data range {conv['data_range']:g}; NRMSE {conv['nrmse_normalization']}; "
            f"SSIM {conv['ssim_window']}; mask {conv['mask']})"
        )
        for column in ("image", "PSNR [dB]", "NRMSE", "SSIM", "SI-PSNR [dB]"):
            table.add_column(column)
        for r in results:
            table.add_row(r["image"], f"{r['psnr']:.3f}", f"{r['nrmse']:.4f}", f"{r['ssim']:.4f}", f"{r['si_psnr']:.3f}")
        console.print(table)
    if "spheres" in results[0]:
        table = Table(title="NEMA IQ recovery coefficients (EARL1 / EARL2 verdicts)")
        for column in ("image", "sphere [mm]", "RCmax", "RCmean", "RCpeak", "EARL1", "EARL2"):
            table.add_column(column)
        for r in results:
            for s in r["spheres"]:
                table.add_row(
                    r["image"], f"{s['diameter_mm']:g}", f"{s['rc_max']:.3f}", f"{s['rc_mean']:.3f}",
                    f"{s['rc_peak']:.3f}", _verdicts(s.get("earl1", {})), _verdicts(s.get("earl2", {})),
                )
        console.print(table)


def _verdicts(verdicts: dict) -> str:
    return " ".join(f"{k.removeprefix('rc_')}:{v}" for k, v in verdicts.items())


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
