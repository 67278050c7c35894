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
    block: Annotated[int, typer.Option(help="Block edge for .zarr inputs, denoised out of core (bounds memory).")] = 128,
    halo: Annotated[int, typer.Option(help="Voxels read around each block of a .zarr input (≥ the filter's reach).")] = 32,
) -> None:
    """Denoise images with a classical filter or a trained model; one output per input, same name.

    A .zarr input (a zarr array) is denoised block by block into OUT/<name>.zarr, never whole in memory.
    Example: pairless denoise median scan.tif --out denoised/ --size 3
    """
    from pairless.io import read_image, write_image
    from pairless.denoiser import denoise_array

    names = [p.name for p in inputs]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise PairlessError(
            f"several inputs are named {clash!r} and would all be written to {out / clash}; pass each file "
            f"once, and denoise same-named files from different folders into separate --out folders"
        )
    denoiser = _make_denoiser(method, sigma=sigma, size=size, auto=auto, tile=tile, overlap=overlap, tta=tta)
    in_memory = [p for p in inputs if p.suffix.lower() != ".zarr"]
    images = [read_image(p, axes=axes) for p in in_memory]  # validate every input before writing anything
    # denoise them all before writing, too: an image the denoiser refuses must not leave others written
    results = [denoise_array(image.data, denoiser, axes=image.axes) for image in images]
    for path in inputs:
        if path.suffix.lower() == ".zarr":  # each written whole or not at all, after the in-memory ones are ready
            from pairless.chunked import denoise_chunked

            target = denoise_chunked(
                path, out / path.name, denoiser, axes=axes, block=block, halo=halo, protect=inputs, progress=True
            )
            typer.echo(f"{path} -> {target}")
    for path, image, result in zip(in_memory, images, results):
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


@fit_app.command("n2v")
def fit_n2v_command(
    inputs: Inputs,
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    axes: AxesOpt = None,
    profile: Annotated[str, typer.Option(help="quick (CPU minutes) | paper (seed 000: 150×200 steps).")] = "quick",
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML of N2V settings overriding the profile's.")
    ] = None,
    three_d: Annotated[bool, typer.Option("--3d", help="Train a 3D U-Net on ZYX volumes.")] = False,
    n2v2: Annotated[bool, typer.Option("--n2v2", help="N2V2: median replacement, blur-pool, no top skip.")] = False,
    struct_mask: Annotated[
        Optional[str], typer.Option("--struct-mask", help="structN2V line mask: horizontal | vertical.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, patches and masks.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")] = False,
    devices: Annotated[
        int, typer.Option("--devices", help="Data-parallel processes (GPUs, or CPU processes); torchrun's layout wins.")
    ] = 1,
) -> None:
    """Train Noise2Void on noisy images alone; denoise with `pairless denoise MODEL_DIR`.

    Example: pairless fit n2v stack.tif --axes SYX --out n2v_model/ --profile quick
    (on 4 GPUs: add --devices 4, or run `torchrun --nproc_per_node=4 -m pairless fit n2v ...`)
    """
    from pairless.config import N2VConfig, read_yaml
    from pairless.io import read_image
    from pairless.methods.n2v import fit_n2v

    settings = read_yaml(config) if config is not None else {}
    if three_d:
        settings["ndim"] = 3
    if n2v2:
        settings["n2v2"] = True
    if struct_mask is not None:
        settings["struct_mask"] = struct_mask
    n2v_config = N2VConfig.for_profile(profile, **settings)
    images = [read_image(p, axes=axes) for p in inputs]
    if len({im.axes for im in images}) > 1:
        raise PairlessError(
            f"the inputs have different axes ({', '.join(sorted({im.axes for im in images}))}); "
            f"train on images of one kind, or pass --axes"
        )
    typer.echo(f"training N2V ({profile}, {n2v_config.steps} steps) on {len(images)} image(s), axes {images[0].axes}")
    denoiser = fit_n2v(
        [im.data for im in images],
        axes=images[0].axes,
        out=out,
        config=n2v_config,
        seed=seed,
        resume=True if resume else None,
        devices=devices,
    )
    if denoiser is not None:  # the other ranks of a multi-process run leave the writing to rank 0
        typer.echo(f"model written to {out}")


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


@simulate_app.command("pet", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def simulate_pet_command(
    ctx: typer.Context,
    out: OutDir,
    minutes: Annotated[
        Optional[list[float]], typer.Option("--minutes", help="Frame durations, e.g. --minutes 2 10; the longest is the acquisition.")
    ] = None,
    slices: Annotated[int, typer.Option(help="Planes of 2.027 mm around the sphere plane.")] = 61,
    seed: Annotated[int, typer.Option(help="Seed of the Poisson counts and the thinning.")] = 0,
) -> None:
    """Simulate a NEMA IQ phantom scan on a Biograph mCT and reconstruct each frame (OSEM 3 it x 21 subsets).

    Writes NIfTI volumes (truth, μ-map, one per frame, kBq/mL, voxel sizes in mm) and phantom.json.
    Example: pairless simulate pet --out pet_sim/ --minutes 2 10 --seed 1
    """
    from pairless.sim.pet import simulate_pet, write_study

    frames = [*(minutes or []), *(_number(a, "--minutes") for a in ctx.args)] or [2.0, 10.0]
    study = simulate_pet(minutes=tuple(frames), slices=slices, seed=seed)
    for path in write_study(study, out):
        typer.echo(str(path))


@reproduce_app.command("pet")
def reproduce_pet_command(
    out: OutDir,
    profile: Annotated[str, typer.Option(help="quick (CPU minutes) | paper (seed 000's N2V training: hours).")] = "quick",
    seed: Annotated[int, typer.Option(help="Seed of the simulation and the training.")] = 0,
    slices: Annotated[int, typer.Option(help="Planes of 2.027 mm around the sphere plane.")] = 61,
    n2v_steps: Annotated[Optional[int], typer.Option(help="Override the profile's N2V training steps.")] = None,
) -> None:
    """Seed 000's study: Gaussian, median and Noise2Void on a simulated 2-minute NEMA IQ PET scan vs 10 minutes.

    Example: pairless reproduce pet --profile quick --out pet_report/
    """
    _run_pet_study(out, profile=profile, seed=seed, slices=slices, n2v_steps=n2v_steps)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("pairless-demo"),
) -> None:
    """Simulate the PET phantom study, denoise it with every method, print the table, write a report (minutes).

    Example: pairless demo
    """
    _run_pet_study(out, profile="quick", seed=0, slices=61, n2v_steps=None)


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PairlessError(f"unexpected argument {text!r}; {option} takes numbers, e.g. {option} 2 10") from None


def _run_pet_study(out: Path, *, profile: str, seed: int, slices: int, n2v_steps: int | None) -> None:
    from pairless.experiments.pet import PetStudyConfig, run_pet_study

    config = PetStudyConfig.from_dict({"profile": profile, "seed": seed, "slices": slices, "n2v_steps": n2v_steps})
    result = run_pet_study(out, config=config)
    typer.echo("Table 1 vs the 10-minute image (" + result.metrics[0]["convention"] + "):")
    typer.echo(f"{'method':<16}{'PSNR dB':>9}{'NRMSE %':>9}{'SSIM':>8}")
    for row in result.table1():
        typer.echo(f"{row['method']:<16}{row['psnr_db']:>9.3f}{row['nrmse_pct']:>9.3f}{row['ssim']:>8.4f}")
    typer.echo(f"report written to {result.report}")


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


@reproduce_app.command("bsd68")
def reproduce_bsd68_command(
    out: OutDir,
    profile: Annotated[str, typer.Option(help="quick (CPU minutes, 12 test images) | paper (seed schedule, all 68).")] = "quick",
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Folder with bsd400_train/ and bsd68/ (default ../shared/data/natural).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise and the training.")] = 0,
) -> None:
    """N2V paper's benchmark: train on noisy BSD400, score on BSD68 with σ=25 noise next to 27.71 dB.

    Example: pairless reproduce bsd68 --profile quick --out bsd68_report/
    """
    from pairless.experiments.bsd68 import reproduce_bsd68

    html = reproduce_bsd68(out, profile=profile, data=data, seed=seed)
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
