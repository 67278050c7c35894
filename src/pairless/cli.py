"""The ``pairless`` command line: a thin typer layer over the Python API.

Every command validates its input through the API, which raises :class:`PairlessError` for any
user mistake; :func:`main` turns that into one ``error: ...`` line on stderr and exit code 2.
Heavy modules are imported inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from pairless.errors import PairlessError

app = typer.Typer(
    name="pairless",
    help="Denoise scientific and medical images without clean/noisy pairs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fit_app = typer.Typer(help="Train a denoising model; writes a model folder.", no_args_is_help=True)
simulate_app = typer.Typer(help="Simulate data we cannot get: a PET phantom study, EM noise.", no_args_is_help=True)
reproduce_app = typer.Typer(help="Re-run the seed papers' experiments and write a report.", no_args_is_help=True)
app.add_typer(fit_app, name="fit")
app.add_typer(simulate_app, name="simulate")
app.add_typer(reproduce_app, name="reproduce")

Inputs = Annotated[list[Path], typer.Argument(help="Input images (TIFF, PNG, .npy, NIfTI, DICOM folder).")]
OutDir = Annotated[Path, typer.Option("--out", help="Output folder (created if missing).")]
AxesOpt = Annotated[
    Optional[str], typer.Option("--axes", help="Axes of the input, e.g. YX, ZYX, SYX (default: from the file).")
]


@app.command()
def denoise(
    method: Annotated[str, typer.Argument(help="A model folder, or gaussian | median | nlm | bm3d.")],
    inputs: Inputs,
    out: OutDir,
    axes: AxesOpt = None,
    sigma: Annotated[
        Optional[float], typer.Option(help="Gaussian σ in pixels; noise σ (image units) for nlm/bm3d.")
    ] = None,
    size: Annotated[Optional[int], typer.Option(help="Median filter width in pixels.")] = None,
    auto: Annotated[bool, typer.Option("--auto", help="Tune σ/size per image by J-invariance.")] = False,
    tile: Annotated[int, typer.Option(help="Tile size for learned models (bounds memory).")] = 256,
    overlap: Annotated[int, typer.Option(help="Overlap between tiles, blended smoothly.")] = 32,
    tta: Annotated[bool, typer.Option("--tta", help="8-fold test-time augmentation (learned models).")] = False,
) -> None:
    """Denoise images with a classical filter or a trained model; one output per input, same name.

    Example: pairless denoise median scan.tif --out denoised/ --size 3
    """
    from pairless.io import read_image, write_image
    from pairless.denoiser import denoise_array

    denoiser = _make_denoiser(method, sigma=sigma, size=size, auto=auto, tile=tile, overlap=overlap, tta=tta)
    images = [read_image(p, axes=axes) for p in inputs]  # validate every input before writing anything
    for path, image in zip(inputs, images):
        result = denoise_array(image.data, denoiser, axes=image.axes)
        target = write_image(out / path.name, image.with_data(result), protect=inputs)
        typer.echo(f"{path} -> {target}")


def _make_denoiser(method: str, *, sigma, size, auto, tile, overlap, tta):
    from pairless.methods.classical import METHODS, make_classical

    if method in METHODS:
        return make_classical(method, sigma=sigma, size=size, auto=auto)
    if not Path(method).exists():
        raise PairlessError(
            f"unknown method {method!r}: it is neither a classical method ({', '.join(METHODS)}) "
            f"nor an existing model folder; check the spelling or train a model with `pairless fit`"
        )
    from pairless.modelio import load_denoiser

    return load_denoiser(method, tile=tile, overlap=overlap, tta=tta)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def evaluate(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Option("--images", help="Images to score: --images A B C.")],
    reference: Annotated[Optional[Path], typer.Option(help="The reference (clean or long-scan) image.")] = None,
    data_range: Annotated[
        Optional[float], typer.Option(help="Intensity range for PSNR/SSIM (default: reference max - min).")
    ] = None,
    mask: Annotated[Optional[Path], typer.Option(help="Image whose nonzero pixels are the ones scored.")] = None,
    normalization: Annotated[str, typer.Option(help="NRMSE normalization: euclidean | min-max | mean.")] = "euclidean",
    gaussian_ssim: Annotated[
        bool, typer.Option("--gaussian-ssim", help="Wang et al. Gaussian SSIM window instead of 7x7 uniform.")
    ] = False,
    phantom: Annotated[Optional[str], typer.Option(help="'nema': also measure NEMA IQ sphere recovery.")] = None,
    sphere_activity: Annotated[Optional[float], typer.Option(help="True sphere activity (image units).")] = None,
    background_activity: Annotated[
        Optional[float], typer.Option(help="True background activity (default: measured).")
    ] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the numbers as JSON.")] = None,
) -> None:
    """Score images against a reference (PSNR, NRMSE, SSIM) and/or a NEMA IQ phantom (recovery coefficients).

    Example: pairless evaluate --reference clean.tif --images n2v.tif median.tif --data-range 255 --json scores.json
    """
    from pairless.evaluate import evaluate_images, print_table

    images = [*images, *(Path(a) for a in ctx.args)]
    results = evaluate_images(
        images, reference=reference, data_range=data_range, mask=mask, normalization=normalization,
        gaussian_ssim=gaussian_ssim, phantom=phantom, sphere_activity=sphere_activity,
        background_activity=background_activity,
    )
    print_table(results)
    if json_path is not None:
        from pairless.evaluate import write_json

        write_json(json_path, results)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code; user errors print one line and give 2."""
    try:
        result = app(args=argv, prog_name="pairless", standalone_mode=False)
    except PairlessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except click.ClickException as err:
        print(f"error: {err.format_message()} (see `pairless --help`)", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
