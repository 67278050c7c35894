"""The ``pairless`` command line: a thin typer layer over the Python API.

Every command validates its input through the API, which raises :class:`PairlessError` for any
user mistake; :func:`main` turns that into one ``error: ...`` line on stderr and exit code 2.
Heavy modules are imported inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
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
fit_app = typer.Typer(
    help=(
        "Train a denoising model; writes a model folder. Without clean data, start with `pairless fit ne2ne`."
    ),
    no_args_is_help=True,
)
simulate_app = typer.Typer(
    help="Simulate data we cannot get: a PET phantom study, EM noise.", no_args_is_help=True
)
reproduce_app = typer.Typer(
    help="Re-run the seed papers' experiments and write a report.", no_args_is_help=True
)
app.add_typer(fit_app, name="fit")
app.add_typer(simulate_app, name="simulate")
app.add_typer(reproduce_app, name="reproduce")

Inputs = Annotated[list[Path], typer.Argument(help="Input images (TIFF, PNG, .npy, NIfTI, DICOM folder).")]
OutDir = Annotated[Path, typer.Option("--out", help="Output folder (created if missing).")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace what is already at --out (never an input, never a folder of your own files).",
    ),
]
AxesOpt = Annotated[
    Optional[str],
    typer.Option("--axes", help="Axes of the input, e.g. YX, ZYX, SYX (default: from the file)."),
]
MaxPixelsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--max-pixels",
        help=(
            "Largest image read, in values (pixels × channels × slices × frames) as its header states them; "
            "larger files are refused unread (default 2**30 = 1073741824; .zarr inputs have no limit)."
        ),
    ),
]


@app.command()
def denoise(
    method: Annotated[
        str,
        typer.Argument(
            help="prior, gaussian | median | nlm | bm3d, a model folder, or a BMZ package (.zip)."
        ),
    ],
    inputs: Inputs,
    out: OutDir,
    axes: AxesOpt = None,
    sigma: Annotated[
        Optional[float], typer.Option(help="Gaussian σ in pixels; noise σ (image units) for nlm/bm3d.")
    ] = None,
    size: Annotated[Optional[int], typer.Option(help="Median filter width in pixels.")] = None,
    auto: Annotated[bool, typer.Option("--auto", help="Tune σ/size per image by J-invariance.")] = False,
    vst: Annotated[
        bool,
        typer.Option(
            "--vst",
            help="nlm/bm3d/prior: fit Poisson-Gaussian noise per image, denoise after a generalized Anscombe "
            "transform (σ = 1), invert without bias (the prior's default).  prior: `--vst learned` learns"
            " the "
            "transform on each image (Noise2VST), `--vst none` feeds the fitted noise as a σ map.",
        ),
    ] = False,
    vst_mode: Annotated[Optional[str], typer.Option("--vst-mode", hidden=True)] = None,
    noise: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "prior: the noise model fitted per image, poisson-gaussian (default; Gaussian when the image "
                "shows no signal dependence) or gaussian; --sigma gives a Gaussian σ instead."
            )
        ),
    ] = None,
    adapt: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "prior: fine-tune on each image first, for this long (e.g. 60s, 2min) with a self-supervised"
                " loss."
            )
        ),
    ] = None,
    psd: Annotated[
        Optional[str],
        typer.Option(
            "--psd",
            help="bm3d: 'auto' = colour-noise BM3D with the noise's power spectrum estimated from the inputs "
            "and --psd-clean (or, without it, from the inputs' flat background).",
        ),
    ] = None,
    psd_clean: Annotated[
        Optional[Path],
        typer.Option(
            "--psd-clean",
            help="With --psd auto: a folder of clean images of the same kind (unpaired with the inputs).",
        ),
    ] = None,
    tile: Annotated[
        Optional[int],
        typer.Option(
            help="Largest tile edge for learned models (default 512; 3D tiles are at most 32×256×256)."
        ),
    ] = None,
    overlap: Annotated[int, typer.Option(help="Overlap between tiles, blended smoothly.")] = 32,
    tta: Annotated[
        bool, typer.Option("--tta", help="8-fold test-time augmentation (learned models).")
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="Inference engine for learned models: torch | onnxruntime | openvino | auto (the fastest "
            "installed one whose output has PSNR ≥ 70 dB against fp32 PyTorch; measured once, cached)."
        ),
    ] = "torch",
    block: Annotated[
        int, typer.Option(help="Block edge for .zarr inputs, denoised out of core (bounds memory).")
    ] = 128,
    halo: Annotated[
        int, typer.Option(help="Voxels read around each block of a .zarr input (≥ the filter's reach).")
    ] = 32,
    keep_going: Annotated[
        bool,
        typer.Option("--keep-going", help="If an input fails, denoise the others and keep their results."),
    ] = False,
    max_pixels: MaxPixelsOpt = None,
    scheduler: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "Denoise .zarr volumes on a Dask cluster: local[:N] (N worker processes here),"
                " tcp://HOST:PORT"
                " (a running scheduler) or a scheduler file; needs pairless[distributed]."
            )
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="With --scheduler: continue an interrupted run, skipping done blocks."),
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Denoise images with a classical filter, the prior that ships with pairless, or a trained model; one
    output per input, same name.

    Every input is checked (header, shape, dtype, axes) before any is denoised; they are then denoised
    one at a time (memory of the largest one, whatever their number) and put in place together at the
    end: a failure leaves nothing written, or, with --keep-going, the finished ones and a list of the rest.
    A .zarr input (a zarr array) is denoised block by block into OUT/<name>.zarr, never whole in memory;
    with --scheduler, its blocks run on a Dask cluster (--resume continues a run that was interrupted).
    Example: pairless denoise prior scan.tif --out denoised/   (or: median scan.tif --out denoised/ --size 3)
    (correlated noise: pairless denoise bm3d noisy/*.tif --psd auto --psd-clean clean/ --out denoised/)
    """
    from pairless import api

    denoiser = api.load(
        method,
        sigma=sigma,
        size=size,
        auto=auto,
        tile=tile,
        overlap=overlap,
        tta=tta,
        vst=vst_mode or vst,
        psd=psd,
        psd_noisy=inputs if psd == "auto" else None,
        psd_clean=psd_clean,
        engine=engine,
        noise=noise,
        adapt=None if adapt is None else _seconds(adapt, "--adapt"),
    )
    api.denoise(
        inputs,
        denoiser,
        out=out,
        axes=axes,
        keep_going=keep_going,
        block=block,
        halo=halo,
        echo=typer.echo,
        max_pixels=max_pixels,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
    )


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A model folder (from `pairless fit`).")],
    bmz: Annotated[Path, typer.Option("--bmz", help="BioImage Model Zoo package to write (.zip).")],
    name: Annotated[Optional[str], typer.Option(help="Model name shown by bioimage.io tools.")] = None,
    author: Annotated[
        Optional[list[str]], typer.Option("--author", help="Author name (repeat for several).")
    ] = None,
    license: Annotated[str, typer.Option("--license", help="SPDX licence of the weights.")] = "BSD-3-Clause",
    sample: Annotated[
        Optional[Path],
        typer.Option("--sample", help="Image for the test tensors and cover (default: synthetic)."),
    ] = None,
    onnx: Annotated[
        bool, typer.Option("--onnx/--no-onnx", help="Also write ONNX weights (needs pairless[onnx]).")
    ] = True,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a model as a bioimage.io spec 0.5 package: rdf.yaml, pytorch_state_dict, TorchScript and ONNX
    weights.

    Example: pairless export my-n2v-model --bmz my-n2v.zip --author "Ada Lovelace"
    """
    from pairless import api

    formats = ("pytorch_state_dict", "torchscript", *(("onnx",) if onnx else ()))
    target = api.export(
        model,
        bmz,
        name=name,
        authors=author,
        license=license,
        sample=sample,
        formats=formats,
        overwrite=overwrite,
    )
    typer.echo(f"{model} -> {target}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def evaluate(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Option("--images", help="Images to score: --images A B C.")],
    reference: Annotated[
        Optional[Path], typer.Option(help="The reference (clean or long-scan) image.")
    ] = None,
    data_range: Annotated[
        Optional[float], typer.Option(help="Intensity range for PSNR/SSIM (default: reference max - min).")
    ] = None,
    mask: Annotated[
        Optional[Path], typer.Option(help="Image whose nonzero pixels are the ones scored.")
    ] = None,
    normalization: Annotated[
        str, typer.Option(help="NRMSE normalization: euclidean | min-max | mean.")
    ] = "euclidean",
    gaussian_ssim: Annotated[
        bool, typer.Option("--gaussian-ssim", help="Wang et al. Gaussian SSIM window instead of 7x7 uniform.")
    ] = False,
    metrics: Annotated[
        Optional[str], typer.Option(help="Comma-separated subset of psnr,nrmse,ssim,si_psnr (default: all).")
    ] = None,
    phantom: Annotated[
        Optional[str], typer.Option(help="'nema': also measure NEMA IQ sphere recovery.")
    ] = None,
    sphere_activity: Annotated[
        Optional[float], typer.Option(help="True sphere activity, in --activity-units.")
    ] = None,
    background_activity: Annotated[
        Optional[float], typer.Option(help="True background activity (default: measured).")
    ] = None,
    activity_units: Annotated[
        str,
        typer.Option(help="Units of the activities: kBq/mL, Bq/mL, MBq/mL, g/mL (SUVbw) or image (its own)."),
    ] = "kBq/mL",
    units: Annotated[
        Optional[str],
        typer.Option(help="Units of the image values (default: the file's DICOM Units or pairless note)."),
    ] = None,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the numbers as JSON.")
    ] = None,
    overwrite: OverwriteOpt = False,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Score images against a reference (PSNR, NRMSE, SSIM) and/or a NEMA IQ phantom (recovery coefficients).

    Example: pairless evaluate --reference clean.tif --images n2v.tif median.tif --data-range 255
    --json scores.json
    """
    from pairless import api

    images = [*images, *(Path(a) for a in ctx.args)]
    results = api.evaluate(
        images,
        reference=reference,
        data_range=data_range,
        mask=mask,
        normalization=normalization,
        gaussian_ssim=gaussian_ssim,
        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        phantom=phantom,
        sphere_activity=sphere_activity,
        background_activity=background_activity,
        units=units,
        activity_units=activity_units,
        json=json_path,
        overwrite=overwrite,
        max_pixels=max_pixels,
    )
    _print_scores(results)


ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="YAML of settings overriding the profile's.")
]
SeedOpt = Annotated[int, typer.Option(help="Seed of initialisation, patches and random draws.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")]
DevicesOpt = Annotated[
    int,
    typer.Option(
        "--devices", help="Data-parallel processes (GPUs, or CPU processes); torchrun's layout wins."
    ),
]
ThreeDOpt = Annotated[bool, typer.Option("--3d", help="Train a 3D network on ZYX volumes.")]
ModelOut = Annotated[Path, typer.Option("--out", help="Model folder to write.")]
FolderOpt = {
    "noisy": Annotated[
        Path, typer.Option("--noisy", help="Folder of noisy images (TIFF/PNG; stacks become slices).")
    ],
    "clean": Annotated[
        Path,
        typer.Option(
            "--clean",
            help=(
                "Folder of clean images: of *other* samples (unpaired), or "
                "of the noisy ones, same file names (supervised)."
            ),
        ),
    ],
}
PairsOpt = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--pairs", help="Pairs of independent acquisitions of one object: --pairs A1 A2 [B1 B2 ...]."
    ),
]


def _fit_command(spec) -> None:
    """Add ``pairless fit NAME`` for a learned method of the registry: its inputs (by its kind), the options
    every training has, and the method's own options (:class:`pairless.methods.registry.Option`)."""
    import inspect

    P = inspect.Parameter
    paired, two_sets = spec.kind == "paired-acquisitions", spec.kind in ("unpaired", "supervised")
    params = [P("ctx", P.POSITIONAL_OR_KEYWORD, annotation=typer.Context)] if paired else []
    if spec.kind == "self-supervised":
        params.append(P("inputs", P.POSITIONAL_OR_KEYWORD, annotation=Inputs))

    def option(name: str, annotation, default=P.empty) -> None:
        params.append(P(name, P.KEYWORD_ONLY, annotation=annotation, default=default))

    if two_sets:
        option("noisy", FolderOpt["noisy"])
        option("clean", FolderOpt["clean"])
    option("out", ModelOut)
    if paired:
        option("pairs", PairsOpt, None)
    if not two_sets:
        option("axes", AxesOpt, None)
    option(
        "profile",
        Annotated[str, typer.Option(help=f"quick (CPU minutes) | paper ({spec.paper_profile}).")],
        "quick",
    )
    option("config", ConfigOpt, None)
    if spec.three_d:
        option("three_d", ThreeDOpt, False)
    for own in spec.options:
        kind = own.type if own.type is bool or own.required or own.default is not None else Optional[own.type]
        default = False if own.type is bool else (P.empty if own.required else own.default)
        option(own.field, Annotated[kind, typer.Option(own.flag, help=own.help)], default)
    option("seed", SeedOpt, 0)
    option("resume", ResumeOpt, False)
    option("overwrite", OverwriteOpt, False)
    option("max_pixels", MaxPixelsOpt, None)
    if spec.processes:
        option("devices", DevicesOpt, 1)

    def command(**given) -> None:
        from pairless import api

        settings = {"ndim": 3} if given.get("three_d") else {}
        settings.update(
            {o.field: given[o.field] for o in spec.options if given[o.field] not in (None, False)}
        )
        if paired:
            data = [*(given["pairs"] or []), *(Path(a) for a in given["ctx"].args)]
            if not data:
                raise PairlessError("no training pairs given; pass --pairs A1 A2 [B1 B2 ...]")
        else:
            data = given["noisy"] if two_sets else given["inputs"]
        model = api.fit(
            spec.name,
            data,
            clean=given.get("clean"),
            out=given["out"],
            axes=given.get("axes"),
            profile=given["profile"],
            config=given["config"],
            seed=given["seed"],
            resume=True if given["resume"] else None,
            overwrite=given["overwrite"],
            max_pixels=given["max_pixels"],
            devices=given.get("devices", 1),
            echo=typer.echo,
            **settings,
        )
        if model is not None:  # the other processes of a data-parallel run leave the writing to the first
            typer.echo(f"model written to {given['out']}")

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    extra = {"allow_extra_args": True, "ignore_unknown_options": False} if paired else {}
    fit_app.command(spec.name, help=spec.help, context_settings=extra)(command)


def _fit_commands() -> None:
    from pairless.methods import registry

    for name in registry.names(*registry.LEARNED):
        _fit_command(registry.get(name))


_fit_commands()


@simulate_app.command("em")
def simulate_em_command(
    clean: Annotated[
        Path, typer.Option("--clean", help="Folder of clean 2D EM images (integers or floats in [0, 1]).")
    ],
    noise: Annotated[str, typer.Option("--noise", help="charge | film")],
    out: OutDir,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 0,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="structural (noise acts on the specimen) | additive (noise-only images "
            "pasted on, as seed 002 did: independent of the image).",
        ),
    ] = "structural",
    overwrite: OverwriteOpt = False,
) -> None:
    """Add simulated EM charge or film noise to every image of a folder (same names and dtype).

    Example: pairless simulate em --clean clean/ --noise charge --mode additive --out noisy/ --seed 1
    """
    from pairless.sim.em_folder import simulate_em_folder

    if not clean.is_dir():
        raise PairlessError(f"--clean {str(clean)!r} is not a folder; pass a folder of clean images")
    with _writing(out, overwrite=overwrite, inputs=[clean]):
        written = simulate_em_folder(clean, kind=noise, out=out, seed=seed, mode=mode)
    typer.echo(f"{len(written)} noisy images and em_noise.png written to {out}")


@simulate_app.command("pet", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def simulate_pet_command(
    ctx: typer.Context,
    out: OutDir,
    minutes: Annotated[
        Optional[list[float]],
        typer.Option(
            "--minutes", help="Frame durations, e.g. --minutes 2 10; the longest is the acquisition."
        ),
    ] = None,
    slices: Annotated[int, typer.Option(help="Planes of 2.027 mm around the sphere plane.")] = 61,
    seed: Annotated[int, typer.Option(help="Seed of the Poisson counts and the thinning.")] = 0,
    splits: Annotated[
        int,
        typer.Option(
            help="Also split each frame's counts into this many independent parts (2: halves for n2n)."
        ),
    ] = 1,
    dicom: Annotated[
        bool, typer.Option("--dicom", help="Also write each frame as a DICOM PET series (Bq/mL).")
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Simulate a NEMA IQ phantom scan on a Biograph mCT and reconstruct each frame (OSEM 3 it x 21 subsets).

    Writes NIfTI volumes (truth, μ-map, one per frame, kBq/mL, voxel sizes in mm) and phantom.json;
    with --splits 2, each frame's two independent halves beside it (pet_2min_part1..., part2...); with
    --dicom, each also as a DICOM PET series folder (pet_2min_dicom/ ...).
    Example: pairless simulate pet --out pet_sim/ --minutes 2 10 --seed 1 --splits 2
    """
    from pairless.sim.pet import simulate_pet, write_study

    frames = [*(minutes or []), *(_number(a, "--minutes") for a in ctx.args)] or [2.0, 10.0]
    with _writing(out, overwrite=overwrite):
        study = simulate_pet(minutes=tuple(frames), slices=slices, seed=seed, splits=splits)
        for path in write_study(study, out, dicom=dicom):
            typer.echo(str(path))


@reproduce_app.command("pet", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def reproduce_pet_command(
    ctx: typer.Context,
    out: OutDir,
    profile: Annotated[
        str, typer.Option(help="quick (CPU minutes) | paper (the methods' paper training: hours).")
    ] = "quick",
    seeds: Annotated[
        Optional[list[int]],
        typer.Option("--seeds", help="Seeds of simulation and training, e.g. --seeds 0 1 2."),
    ] = None,
    slices: Annotated[int, typer.Option(help="Planes of 2.027 mm around the sphere plane.")] = 61,
    methods: Annotated[
        Optional[str], typer.Option(help="Learned methods, comma-separated (default n2n,n2v,ne2ne,bsn).")
    ] = None,
    steps: Annotated[
        Optional[int], typer.Option(help="Override every learned method's training steps.")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Seed 000's study on a simulated 2-minute NEMA IQ PET scan vs 10 minutes: filters and learned methods.

    Noise2Noise on the two halves of the 2-minute counts (the default), Noise2Void, Neighbor2Neighbor
    and the blind-spot network; image metrics, recovery coefficients vs EARL and background bias per seed.
    Example: pairless reproduce pet --seeds 0 1 2 --out pet_report/
    """
    seed_list = [*(seeds or []), *(int(_number(a, "--seeds")) for a in ctx.args)] or [0]
    with _writing(out, overwrite=overwrite):
        _run_pet_study(
            out,
            profile=profile,
            seeds=seed_list,
            slices=slices,
            steps=steps,
            methods=methods.split(",") if methods else None,
        )


@app.command()
def pretrain(
    out: ModelOut,
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help=(
                "A clean data set as NAME=FOLDER, NAME one of natural | fluorescence | em (repeat for"
                " several)."
            ),
        ),
    ],
    profile: Annotated[
        str, typer.Option(help="quick (minutes) | release (hours on a CPU; resumable).")
    ] = "quick",
    config: ConfigOpt = None,
    steps: Annotated[
        Optional[int], typer.Option(help="Optimiser steps (a finished run given more continues).")
    ] = None,
    init: Annotated[
        Optional[str], typer.Option(help="shipped: start from the prior that ships with pairless.")
    ] = None,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a prior: a noise-level-aware denoiser, on clean images with synthetic Gaussian and
    Poisson-Gaussian noise; use it with `pairless denoise OUT ...` or fine-tune it on your noisy images.

    Example: pairless pretrain --data natural=bsd400/ --data fluorescence=w2s/ --out my_prior/ --profile quick
    """
    from pairless import api

    roots = {}
    for item in data:
        name, sep, folder = item.partition("=")
        if not sep or not folder:
            raise PairlessError(f"--data {item!r} is not NAME=FOLDER; write e.g. --data natural=bsd400/")
        roots[name] = folder
    api.pretrain(
        roots,
        out=out,
        profile=profile,
        config=config,
        init=init,
        seed=seed,
        resume=True if resume else None,
        overwrite=overwrite,
        echo=typer.echo,
        **({"steps": steps} if steps is not None else {}),
    )
    typer.echo(f"prior written to {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("pairless-demo"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Simulate the PET phantom study, denoise it with the filters and Noise2Noise, print the table, write a
    report.

    Example: pairless demo
    """
    from pairless.experiments.pet import DEFAULT_METHOD

    with _writing(out, overwrite=overwrite):
        _run_pet_study(out, profile="quick", seeds=[0], slices=61, steps=None, methods=[DEFAULT_METHOD])


@contextlib.contextmanager
def _writing(out: Path, *, overwrite: bool, inputs: list = (), reuse: bool = False):
    """A command that writes a folder of results (a report, simulated data): a folder that already holds files
    only with --overwrite (or, for a study, --reuse: it updates its own rows), and never an input."""
    from pairless.io.files import guarded_run

    if not (overwrite or reuse) and out.is_dir() and any(out.iterdir()):
        raise PairlessError(
            f"{out} already holds files; pass --overwrite to replace them, or choose another --out"
        )
    with guarded_run(inputs=inputs, owned=[out]):
        yield


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PairlessError(
            f"unexpected argument {text!r}; {option} takes numbers, e.g. {option} 2 10"
        ) from None


def _run_pet_study(
    out: Path, *, profile: str, seeds: list[int], slices: int, steps: int | None, methods: list[str] | None
) -> None:
    from pairless.experiments.pet import METRIC_CONVENTION, PetStudyConfig, run_pet_study

    settings = {"profile": profile, "seeds": seeds, "slices": slices, "steps": steps}
    if methods is not None:
        settings["methods"] = methods
    result = run_pet_study(out, config=PetStudyConfig.from_dict(settings))
    typer.echo("Table 1 vs the 10-minute image, mean over the seeds (" + METRIC_CONVENTION + "):")
    typer.echo(f"{'method':<22}{'PSNR dB':>9}{'NRMSE %':>9}{'SSIM':>8}")
    for row in result.table1():
        typer.echo(f"{row['method']:<22}{row['psnr_db']:>9.3f}{row['nrmse_pct']:>9.3f}{row['ssim']:>8.4f}")
    typer.echo(f"report written to {result.report}")


@reproduce_app.command("em")
def reproduce_em_command(
    out: OutDir,
    profile: Annotated[
        str,
        typer.Option(
            help="quick (CPU, 3 folds of 256² crops) | paper (4 folds of whole slices, 8k iterations, GPU)."
        ),
    ] = "quick",
    clean: Annotated[
        Optional[Path],
        typer.Option("--clean", help="Clean EM slices (default ../shared/data/em/isbi2012/train_image)."),
    ] = None,
    methods: Annotated[
        Optional[str],
        typer.Option(
            "--methods", help="Comma-separated subset, e.g. noisy,median,wiener,dncnn,iscl-optimized."
        ),
    ] = None,
    noise_mode: Annotated[
        Optional[str],
        typer.Option("--noise-mode", help="additive (the profile's: pasted noise-only images) | structural."),
    ] = None,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse", help="Read back rows already scored in --out with the same data and settings."
        ),
    ] = False,
    noise: Annotated[
        Optional[str], typer.Option("--noise", help="Comma-separated subset of charge,film.")
    ] = None,
    run_folds: Annotated[
        Optional[int],
        typer.Option("--run-folds", help="Train and score only the first N folds of the split."),
    ] = None,
    iscl_steps: Annotated[
        Optional[int],
        typer.Option("--iscl-steps", help="ISCL training steps instead of the profile's (quick: 1200)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the noise and the training.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Seed 002's Table 2: ISCL normalizations, paired and self-supervised networks, filters on charge/film
    noise.

    Example: pairless reproduce em --profile quick --out em_report/ --methods noisy,gaussian,wiener,dncnn
    """
    from pairless.experiments.em import reproduce_em

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    kinds = tuple(k.strip() for k in noise.split(",") if k.strip()) if noise else ("charge", "film")
    with _writing(out, overwrite=overwrite, reuse=reuse, inputs=[clean] if clean else []):
        html = reproduce_em(
            out,
            profile=profile,
            clean=clean,
            methods=chosen,
            noise_mode=noise_mode,
            noise_types=kinds,
            run_folds=run_folds,
            iscl_steps=iscl_steps,
            seed=seed,
            reuse=reuse,
        )
    typer.echo(f"report written to {html}")


@reproduce_app.command("bsd68")
def reproduce_bsd68_command(
    out: OutDir,
    profile: Annotated[
        str, typer.Option(help="quick (CPU minutes, 12 test images) | paper (seed schedule, all 68).")
    ] = "quick",
    data: Annotated[
        Optional[Path],
        typer.Option("--data", help="Folder with bsd400_train/ and bsd68/ (default ../shared/data/natural)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise and the training.")] = 0,
    method: Annotated[str, typer.Option(help="Self-supervised method: n2v | ne2ne | bsn | zsn2n.")] = "n2v",
    overwrite: OverwriteOpt = False,
) -> None:
    """N2V paper's benchmark: train on noisy BSD400, score on BSD68 with σ=25 noise next to 27.71 dB.

    Example: pairless reproduce bsd68 --profile quick --out bsd68_report/
    """
    from pairless.experiments.bsd68 import reproduce_bsd68

    with _writing(out, overwrite=overwrite, inputs=[data] if data else []):
        html = reproduce_bsd68(out, method=method, profile=profile, data=data, seed=seed)
    typer.echo(f"report written to {html}")


def _print_scores(results: list[dict]) -> None:
    """One row per image (and, for a phantom, one row per sphere) on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    if "conventions" in results[0]:
        conv = results[0]["conventions"]
        table = Table(
            title=(
                f"vs reference (data range {conv['data_range']:g}; NRMSE {conv['nrmse_normalization']}; "
                f"SSIM {conv['ssim_window']}; mask {conv['mask']})"
            )
        )
        columns = {"psnr": ("PSNR [dB]", ".3f"), "nrmse": ("NRMSE", ".4f"), "ssim": ("SSIM", ".4f")}
        columns["si_psnr"] = ("SI-PSNR [dB]", ".3f")
        shown = [key for key in columns if key in results[0]]  # the metrics asked for (--metrics)
        for column in ("image", *(columns[key][0] for key in shown)):
            table.add_column(column)
        for r in results:
            table.add_row(r["image"], *(format(r[key], columns[key][1]) for key in shown))
        console.print(table)
    if "spheres" in results[0]:
        table = Table(title="NEMA IQ recovery coefficients (EARL1 / EARL2 verdicts)")
        for column in ("image", "sphere [mm]", "RCmax", "RCmean", "RCpeak", "EARL1", "EARL2"):
            table.add_column(column)
        for r in results:
            for sphere in r["spheres"]:
                table.add_row(
                    r["image"],
                    f"{sphere['diameter_mm']:g}",
                    f"{sphere['rc_max']:.3f}",
                    f"{sphere['rc_mean']:.3f}",
                    f"{sphere['rc_peak']:.3f}",
                    _verdicts(sphere.get("earl1", {})),
                    _verdicts(sphere.get("earl2", {})),
                )
        table.caption = "\n".join(_units_line(r) for r in results if "units" in r)
        console.print(table)


def _units_line(row: dict) -> str:
    """Which units an image was read in and what the true activities became in them."""
    u = row["units"]
    given = f"{u['sphere_activity_given']:g}" + (
        f" / {u['background_activity_given']:g}" if u["background_activity_given"] is not None else ""
    )
    return (
        f"{row['image']}: values in {u['image']} ({u['image_units_from']}); activities {given} "
        f"{u['activities']} x {u['activity_to_image']:.6g}"
    )


def _verdicts(verdicts: dict) -> str:
    return " ".join(f"{k.removeprefix('rc_')}:{v}" for k, v in verdicts.items())


_VST_VALUES = ("gat", "learned", "none")


def _vst_values(argv: list[str]) -> list[str]:
    """``--vst learned`` (a value) beside the ``--vst`` flag: the value goes to the hidden ``--vst-mode``."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--vst" and arg in _VST_VALUES:
            out[-1] = f"--vst-mode={arg}"
        else:
            out.append(arg)
    return out


def _seconds(text: str, option: str) -> float:
    """``60``, ``60s``, ``2min`` or ``1h`` as seconds, or one line saying how to write it."""
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|min|m|h)?\s*", text)
    if found is None:
        raise PairlessError(f"{option} {text!r} is not a duration; write e.g. 60s, 2min or 1h")
    value = float(found.group(1)) * {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[found.group(2)]
    if not value > 0:
        raise PairlessError(f"{option} must be a positive duration, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code; user errors print one line and give 2.

    Every message is one line on stderr with control characters shown escaped (a file name holding a
    newline or a terminal escape cannot split it or reach the terminal raw); warnings, ours and the
    libraries', are one ``warning:`` line each.
    """
    from pairless.training.engine import Interrupted

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            args = _vst_values(sys.argv[1:] if argv is None else list(argv))
            result = app(args=args, prog_name="pairless", standalone_mode=False)
        except PairlessError as err:
            _say(f"error: {err}")
            return 2
        except Interrupted as stop:
            kept = (
                f"its last checkpoint (step {stop.checkpoint_step}) is kept"
                if stop.checkpoint_step
                else "no checkpoint was written yet"
            )
            _say(
                f"error: stopped at step {stop.step} by {stop}; {kept}: run the same command with --resume to"
                " go on"
            )
            return 128 + stop.signum
        except typer.Exit as err:
            return err.exit_code
        except (typer.Abort, KeyboardInterrupt):
            _say("error: aborted")
            return 130
        except typer.TyperException as err:  # usage errors: unknown option, missing argument, bad value
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            _say(f"error: {message} (see `pairless --help`)")
            return 2
    return result if isinstance(result, int) else 0


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\n]")


def _say(line: str) -> None:
    """Print one line to stderr, control characters (newline, escape) shown as escapes."""
    print(_CONTROL.sub(lambda m: repr(m.group())[1:-1], line), file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _say(f"warning: {message}")


def run() -> None:
    sys.exit(main())
