"""The ``pairless`` command line: a thin typer layer over the Python API.

Every command validates its input through the API, which raises :class:`PairlessError` for any
user mistake; :func:`main` turns that into one ``error: ...`` line on stderr and exit code 2.
Heavy modules are imported inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

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


@fit_app.command("supervised")
def fit_supervised_command(
    noisy: Annotated[Path, typer.Option("--noisy", help="Folder of noisy images.")],
    clean: Annotated[Path, typer.Option("--clean", help="Folder of their clean images, same file names.")],
    arch: Annotated[str, typer.Option("--arch", help="dncnn | redcnn")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    profile: Annotated[str, typer.Option(help="quick (CPU minutes) | paper (8k iterations, GPU).")] = "quick",
    seed: Annotated[int, typer.Option(help="Seed of initialisation and patch sampling.")] = 0,
) -> None:
    """Train a supervised DnCNN / RED-CNN on clean/noisy pairs (matched by file name).

    Example: pairless fit supervised --noisy noisy/ --clean clean/ --arch dncnn --out dncnn_model/
    """
    from pairless.methods.supervised import fit_supervised, profile_config, read_pairs

    profile_config(profile, arch)  # reject a bad --arch/--profile before reading any image
    noisy_images, clean_images, names = read_pairs(noisy, clean)
    typer.echo(f"training {arch} on {len(noisy_images)} pairs ({len(names)} files)")
    fit_supervised(noisy_images, clean_images, arch=arch, out=out, profile=profile, seed=seed)
    typer.echo(f"model written to {out}")


@fit_app.command("iscl")
def fit_iscl_command(
    noisy: Annotated[Path, typer.Option("--noisy", help="Folder of noisy images (TIFF/PNG; stacks become slices).")],
    clean: Annotated[Path, typer.Option("--clean", help="Folder of clean images of *other* samples (unpaired).")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    norm: Annotated[
        str, typer.Option(help="optimized (IN/SpecNorm/SwitchNorm) | bin (original ISCL) | bn | ln | gn | in | sn.")
    ] = "optimized",
    profile: Annotated[str, typer.Option(help="quick (CPU minutes) | paper (official: 8k iterations, GPU).")] = "quick",
    seed: Annotated[int, typer.Option(help="Seed of initialisation and patch sampling.")] = 0,
) -> None:
    """Train ISCL on unpaired noisy and clean images (seed 002); denoise with `pairless denoise MODEL_DIR`.

    Example: pairless fit iscl --noisy noisy/ --clean clean/ --out iscl_model/ --norm optimized
    """
    from pairless.config import ISCLConfig
    from pairless.methods.iscl import fit_iscl, profile_config, read_slices

    profile_config(profile)  # reject a bad --profile or --norm before reading any image
    ISCLConfig.from_dict({"norm": norm})
    noisy_images, clean_images = read_slices(noisy, "noisy"), read_slices(clean, "clean")
    typer.echo(f"training ISCL ({norm}) on {len(noisy_images)} noisy and {len(clean_images)} clean images")
    fit_iscl(noisy_images, clean_images, out=out, norm=norm, profile=profile, seed=seed)
    typer.echo(f"model written to {out}")


@simulate_app.command("em")
def simulate_em_command(
    clean: Annotated[Path, typer.Option("--clean", help="Folder of clean 2D EM images (integers or floats in [0, 1]).")],
    noise: Annotated[str, typer.Option("--noise", help="charge | film")],
    out: OutDir,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 0,
) -> None:
    """Add simulated EM charge or film noise to every image of a folder (same names and dtype).

    Example: pairless simulate em --clean clean/ --noise charge --out noisy/ --seed 1
    """
    from pairless.experiments.em import simulate_em_folder

    if not clean.is_dir():
        raise PairlessError(f"--clean {str(clean)!r} is not a folder; pass a folder of clean images")
    written = simulate_em_folder(clean, kind=noise, out=out, seed=seed)
    typer.echo(f"{len(written)} noisy images and em_noise.png written to {out}")


@reproduce_app.command("em")
def reproduce_em_command(
    out: OutDir,
    profile: Annotated[str, typer.Option(help="quick (CPU, one fold, minutes) | paper (4 folds, 8k iterations, GPU).")] = "quick",
    clean: Annotated[
        Optional[Path], typer.Option("--clean", help="Clean EM slices (default ../shared/data/em/isbi2012/train_image).")
    ] = None,
    methods: Annotated[
        Optional[str], typer.Option("--methods", help="Comma-separated subset, e.g. noisy,median,dncnn,iscl-optimized.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the noise and the training.")] = 0,
) -> None:
    """Seed 002's Table 2: ISCL normalizations, DnCNN, RED-CNN, N2V and filters on charge/film noise.

    Example: pairless reproduce em --profile quick --out em_report/
    """
    from pairless.experiments.em import reproduce_em

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    html = reproduce_em(out, profile=profile, clean=clean, methods=chosen, seed=seed)
    typer.echo(f"report written to {html}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code; user errors print one line and give 2."""
    try:
        result = app(args=argv, prog_name="pairless", standalone_mode=False)
    except PairlessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except typer.Exit as err:
        return err.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as err:  # usage errors: unknown option, missing argument, bad value
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        print(f"error: {message} (see `pairless --help`)", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
