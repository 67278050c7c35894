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
fit_app = typer.Typer(
    help="Train a denoising model; writes a model folder. Without clean data, start with `pairless fit ne2ne`.",
    no_args_is_help=True,
)
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
    method: Annotated[str, typer.Argument(help="A model folder, a BMZ package (.zip), or gaussian | median | nlm | bm3d.")],
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
            help="nlm/bm3d: fit Poisson-Gaussian noise per image, filter after a generalized Anscombe "
            "transform (σ = 1), invert without bias.",
        ),
    ] = False,
    tile: Annotated[
        Optional[int],
        typer.Option(help="Largest tile edge for learned models (default 512; 3D tiles are at most 32×256×256).")
    ] = None,
    overlap: Annotated[int, typer.Option(help="Overlap between tiles, blended smoothly.")] = 32,
    tta: Annotated[bool, typer.Option("--tta", help="8-fold test-time augmentation (learned models).")] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="Inference engine for learned models: torch | onnxruntime | openvino | auto (the fastest "
            "installed one whose output has PSNR ≥ 70 dB against fp32 PyTorch; measured once, cached)."
        ),
    ] = "torch",
    block: Annotated[int, typer.Option(help="Block edge for .zarr inputs, denoised out of core (bounds memory).")] = 128,
    halo: Annotated[int, typer.Option(help="Voxels read around each block of a .zarr input (≥ the filter's reach).")] = 32,
    keep_going: Annotated[
        bool, typer.Option("--keep-going", help="If an input fails, denoise the others and keep their results.")
    ] = False,
) -> None:
    """Denoise images with a classical filter or a trained model; one output per input, same name.

    Every input is checked (header, shape, dtype, axes) before any is denoised; they are then denoised
    one at a time (memory of the largest one, whatever their number) and put in place together at the
    end: a failure leaves nothing written, or, with --keep-going, the finished ones and a list of the rest.
    A .zarr input (a zarr array) is denoised block by block into OUT/<name>.zarr, never whole in memory.
    Example: pairless denoise median scan.tif --out denoised/ --size 3
    """
    from pairless.stream import denoise_files

    denoiser = _make_denoiser(
        method, sigma=sigma, size=size, auto=auto, tile=tile, overlap=overlap, tta=tta, vst=vst, engine=engine
    )
    denoise_files(inputs, out, denoiser, axes=axes, keep_going=keep_going, block=block, halo=halo, echo=typer.echo)


def _make_denoiser(method: str, *, sigma, size, auto, tile, overlap, tta, vst=False, engine="torch"):
    from pairless.engines import check_engine
    from pairless.methods.classical import METHODS, make_classical

    check_engine(engine)  # an unknown or uninstalled engine fails before anything is loaded or written
    if method in METHODS:
        denoiser = make_classical(method, sigma=sigma, size=size, auto=auto, vst=vst)
        denoiser.provenance = {"method": method}  # the engine is for learned models; filters ignore it
        return denoiser
    if not Path(method).exists():
        raise PairlessError(
            f"unknown method {method!r}: it is neither a classical method ({', '.join(METHODS)}) "
            f"nor an existing model folder or BMZ package (.zip); check the spelling or train a model with `pairless fit`"
        )
    if vst:
        raise PairlessError("--vst is for the classical filters nlm and bm3d, not a trained model; drop --vst")
    if tile is None:
        from pairless.predict import DEFAULT_TILE as tile
    if Path(method).is_file():  # a BioImage Model Zoo package (.zip): read, never run (pairless.bmz)
        from pairless.bmz import load_bmz

        return _with_engine(load_bmz(method, tile=tile, overlap=overlap, tta=tta), engine, {"method": "bmz", "model": method})
    from pairless.config import read_yaml
    from pairless.lock import training_holder
    from pairless.modelio import CONFIG_FILE, load_denoiser, model_summary

    running = training_holder(method)
    denoiser = load_denoiser(method, tile=tile, overlap=overlap, tta=tta)
    trained = read_yaml(Path(method) / CONFIG_FILE).get("method")
    denoiser = _with_engine(denoiser, engine, {"method": trained, "model": str(Path(method).resolve())})
    if running is not None:
        print(
            f"note: {method} is being trained by {running.describe()}; using its last complete model "
            f"({model_summary(method)})",
            file=sys.stderr,
        )
    return denoiser


def _with_engine(denoiser, engine: str, provenance: dict):
    """Run a learned denoiser under ``engine`` (see pairless.engines) and record what it is, for outputs' metadata."""
    from pairless.engines import EngineDenoiser

    if engine != "torch":
        denoiser = EngineDenoiser(denoiser, engine)
    denoiser.provenance = {**provenance, "engine": engine}
    return denoiser


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A model folder (from `pairless fit`).")],
    bmz: Annotated[Path, typer.Option("--bmz", help="BioImage Model Zoo package to write (.zip).")],
    name: Annotated[Optional[str], typer.Option(help="Model name shown by bioimage.io tools.")] = None,
    author: Annotated[Optional[list[str]], typer.Option("--author", help="Author name (repeat for several).")] = None,
    license: Annotated[str, typer.Option("--license", help="SPDX licence of the weights.")] = "BSD-3-Clause",
    sample: Annotated[
        Optional[Path], typer.Option("--sample", help="Image for the test tensors and cover (default: synthetic).")
    ] = None,
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Also write ONNX weights (needs pairless[onnx]).")] = True,
) -> None:
    """Write a model as a bioimage.io spec 0.5 package: rdf.yaml, pytorch_state_dict, TorchScript and ONNX weights.

    Example: pairless export my-n2v-model --bmz my-n2v.zip --author "Ada Lovelace"
    """
    from pairless.bmz import export_bmz

    image = None
    if sample is not None:
        from pairless.io import read_image

        image = read_image(sample).data
    formats = ("pytorch_state_dict", "torchscript", *(("onnx",) if onnx else ()))
    target = export_bmz(model, bmz, name=name, authors=author, license=license, sample=image, formats=formats)
    typer.echo(f"{model} -> {target}")


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


ProfileOpt = Annotated[str, typer.Option(help="quick (CPU minutes) | paper (the method paper's schedule, GPU).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML of settings overriding the profile's.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of initialisation, patches and random draws.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")]
DevicesOpt = Annotated[
    int, typer.Option("--devices", help="Data-parallel processes (GPUs, or CPU processes); torchrun's layout wins.")
]
ThreeDOpt = Annotated[bool, typer.Option("--3d", help="Train a 3D network on ZYX volumes.")]
ModelOut = Annotated[Path, typer.Option("--out", help="Model folder to write.")]


def _fit_selfsupervised(method: str, inputs, *, out, axes, profile, config, settings: dict, seed, resume, devices) -> None:
    """What every `pairless fit METHOD IMAGES...` of a self-supervised method does, written once."""
    from pairless import selfsup
    from pairless.config import read_yaml
    from pairless.io import read_image

    objective = selfsup.objective_class(method)
    merged = {**(read_yaml(config) if config is not None else {}), **settings}
    method_config = objective.config_class.for_profile(profile, **merged)
    if objective.views > 1 and len(inputs) % objective.views:
        raise PairlessError(
            f"{method} trains on pairs but {len(inputs)} images were given; pass them as pairs of independent "
            f"acquisitions of one object: --pairs A1 A2 [B1 B2 ...]"
        )
    images = [read_image(p, axes=axes) for p in inputs]
    if len({im.axes for im in images}) > 1:
        raise PairlessError(
            f"the inputs have different axes ({', '.join(sorted({im.axes for im in images}))}); "
            f"train on images of one kind, or pass --axes"
        )
    data = [im.data for im in images]
    if objective.views > 1:
        data = [tuple(data[i:i + objective.views]) for i in range(0, len(data), objective.views)]
    typer.echo(
        f"training {method} ({profile}, {method_config.steps} steps) on {len(data)} "
        f"{'pair(s)' if objective.views > 1 else 'image(s)'}, axes {images[0].axes}"
    )
    denoiser = selfsup.fit(
        objective(method_config),
        data,
        axes=images[0].axes,
        out=out,
        seed=seed,
        resume=True if resume else None,
        devices=devices,
    )
    if denoiser is not None:  # the other ranks of a multi-process run leave the writing to rank 0
        typer.echo(f"model written to {out}")


@fit_app.command("n2v")
def fit_n2v_command(
    inputs: Inputs,
    out: ModelOut,
    axes: AxesOpt = None,
    profile: ProfileOpt = "quick",
    config: ConfigOpt = None,
    three_d: ThreeDOpt = False,
    n2v2: Annotated[bool, typer.Option("--n2v2", help="N2V2: median replacement, blur-pool, no top skip.")] = False,
    struct_mask: Annotated[
        Optional[str], typer.Option("--struct-mask", help="structN2V line mask: horizontal | vertical.")
    ] = None,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
    devices: DevicesOpt = 1,
) -> None:
    """Train Noise2Void (loss on ~0.2% of pixels; N2V2, structN2V) on noisy images alone.

    For most images `pairless fit ne2ne` (every pixel a target) learns far more per CPU-second.
    Example: pairless fit n2v stack.tif --axes SYX --out n2v_model/ --profile quick
    (on 4 GPUs: add --devices 4, or run `torchrun --nproc_per_node=4 -m pairless fit n2v ...`)
    """
    settings = {"ndim": 3} if three_d else {}
    if n2v2:
        settings["n2v2"] = True
    if struct_mask is not None:
        settings["struct_mask"] = struct_mask
    _fit_selfsupervised("n2v", inputs, out=out, axes=axes, profile=profile, config=config, settings=settings,
                        seed=seed, resume=resume, devices=devices)


@fit_app.command("ne2ne")
def fit_ne2ne_command(
    inputs: Inputs,
    out: ModelOut,
    axes: AxesOpt = None,
    profile: ProfileOpt = "quick",
    config: ConfigOpt = None,
    three_d: ThreeDOpt = False,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
    devices: DevicesOpt = 1,
) -> None:
    """Train Neighbor2Neighbor (sub-sampled neighbour pairs, every pixel a target), 2D or 3D. Recommended.

    The fastest learner per CPU-second of pairless's self-supervised methods (benchmarks/selfsup_quality.py).

    Example: pairless fit ne2ne stack.tif --axes SYX --out ne2ne_model/
    """
    _fit_selfsupervised("ne2ne", inputs, out=out, axes=axes, profile=profile, config=config,
                        settings={"ndim": 3} if three_d else {}, seed=seed, resume=resume, devices=devices)


@fit_app.command("n2n", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def fit_n2n_command(
    ctx: typer.Context,
    out: ModelOut,
    pairs: Annotated[
        Optional[list[Path]],
        typer.Option("--pairs", help="Pairs of independent acquisitions of one object: --pairs A1 A2 [B1 B2 ...]."),
    ] = None,
    axes: AxesOpt = None,
    profile: ProfileOpt = "quick",
    config: ConfigOpt = None,
    three_d: ThreeDOpt = False,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
    devices: DevicesOpt = 1,
) -> None:
    """Train Noise2Noise on pairs of independent acquisitions (e.g. two halves of a PET scan's counts).

    The held-out loss of one acquisition against the other picks the best checkpoint without any
    clean image.  Apply the model to the full acquisition, or to each half and average.
    Example: pairless simulate pet --out sim/ --splits 2; pairless fit n2n --pairs sim/pet_2min_part1_kBq_per_mL.nii.gz
    sim/pet_2min_part2_kBq_per_mL.nii.gz --out n2n_model/
    """
    inputs = [*(pairs or []), *(Path(a) for a in ctx.args)]
    if not inputs:
        raise PairlessError("no training pairs given; pass --pairs A1 A2 [B1 B2 ...]")
    _fit_selfsupervised("n2n", inputs, out=out, axes=axes, profile=profile, config=config,
                        settings={"ndim": 3} if three_d else {}, seed=seed, resume=resume, devices=devices)


@fit_app.command("bsn")
def fit_bsn_command(
    inputs: Inputs,
    out: ModelOut,
    axes: AxesOpt = None,
    profile: ProfileOpt = "quick",
    config: ConfigOpt = None,
    noise: Annotated[
        Optional[str], typer.Option("--noise", help="Posterior step: gaussian | poisson-gaussian | none.")
    ] = None,
    sigma: Annotated[
        Optional[float], typer.Option("--sigma", help="Gaussian noise σ in image units (default: estimated).")
    ] = None,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
    devices: DevicesOpt = 1,
) -> None:
    """Train a blind-spot network (Laine et al. 2019) with the Bayesian posterior step.

    Every pixel is a training target and the centre pixel is put back by the posterior mean, with
    the noise model fitted from the images (or --sigma).
    Example: pairless fit bsn noisy/*.tif --axes YX --out bsn_model/ --noise poisson-gaussian
    """
    settings = {k: v for k, v in {"noise": noise, "sigma": sigma}.items() if v is not None}
    _fit_selfsupervised("bsn", inputs, out=out, axes=axes, profile=profile, config=config, settings=settings,
                        seed=seed, resume=resume, devices=devices)


@fit_app.command("zsn2n")
def fit_zsn2n_command(
    inputs: Inputs,
    out: ModelOut,
    axes: AxesOpt = None,
    profile: ProfileOpt = "quick",
    config: ConfigOpt = None,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
) -> None:
    """Fit Zero-Shot Noise2Noise (a 21k-parameter network) to one image in seconds.

    Example: pairless fit zsn2n image.tif --out zsn2n_model/
    """
    _fit_selfsupervised("zsn2n", inputs, out=out, axes=axes, profile=profile, config=config, settings={},
                        seed=seed, resume=resume, devices=1)


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
    mode: Annotated[
        str, typer.Option("--mode", help="structural (noise acts on the specimen) | additive (noise-only images "
                          "pasted on, as seed 002 did: independent of the image).")
    ] = "structural",
) -> None:
    """Add simulated EM charge or film noise to every image of a folder (same names and dtype).

    Example: pairless simulate em --clean clean/ --noise charge --mode additive --out noisy/ --seed 1
    """
    from pairless.experiments.em import simulate_em_folder

    if not clean.is_dir():
        raise PairlessError(f"--clean {str(clean)!r} is not a folder; pass a folder of clean images")
    written = simulate_em_folder(clean, kind=noise, out=out, seed=seed, mode=mode)
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
    splits: Annotated[
        int, typer.Option(help="Also split each frame's counts into this many independent parts (2: halves for n2n).")
    ] = 1,
    dicom: Annotated[bool, typer.Option("--dicom", help="Also write each frame as a DICOM PET series (Bq/mL).")] = False,
) -> None:
    """Simulate a NEMA IQ phantom scan on a Biograph mCT and reconstruct each frame (OSEM 3 it x 21 subsets).

    Writes NIfTI volumes (truth, μ-map, one per frame, kBq/mL, voxel sizes in mm) and phantom.json;
    with --splits 2, each frame's two independent halves beside it (pet_2min_part1..., part2...); with
    --dicom, each also as a DICOM PET series folder (pet_2min_dicom/ ...).
    Example: pairless simulate pet --out pet_sim/ --minutes 2 10 --seed 1 --splits 2
    """
    from pairless.sim.pet import simulate_pet, write_study

    frames = [*(minutes or []), *(_number(a, "--minutes") for a in ctx.args)] or [2.0, 10.0]
    study = simulate_pet(minutes=tuple(frames), slices=slices, seed=seed, splits=splits)
    for path in write_study(study, out, dicom=dicom):
        typer.echo(str(path))


@reproduce_app.command("pet", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def reproduce_pet_command(
    ctx: typer.Context,
    out: OutDir,
    profile: Annotated[str, typer.Option(help="quick (CPU minutes) | paper (the methods' paper training: hours).")] = "quick",
    seeds: Annotated[
        Optional[list[int]], typer.Option("--seeds", help="Seeds of simulation and training, e.g. --seeds 0 1 2.")
    ] = None,
    slices: Annotated[int, typer.Option(help="Planes of 2.027 mm around the sphere plane.")] = 61,
    methods: Annotated[
        Optional[str], typer.Option(help="Learned methods, comma-separated (default n2n,n2v,ne2ne,bsn).")
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Override every learned method's training steps.")] = None,
) -> None:
    """Seed 000's study on a simulated 2-minute NEMA IQ PET scan vs 10 minutes: filters and learned methods.

    Noise2Noise on the two halves of the 2-minute counts (the default), Noise2Void, Neighbor2Neighbor
    and the blind-spot network; image metrics, recovery coefficients vs EARL and background bias per seed.
    Example: pairless reproduce pet --seeds 0 1 2 --out pet_report/
    """
    seed_list = [*(seeds or []), *(int(_number(a, "--seeds")) for a in ctx.args)] or [0]
    _run_pet_study(out, profile=profile, seeds=seed_list, slices=slices, steps=steps,
                   methods=methods.split(",") if methods else None)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("pairless-demo"),
) -> None:
    """Simulate the PET phantom study, denoise it with the filters and Noise2Noise, print the table, write a report.

    Example: pairless demo
    """
    from pairless.experiments.pet import DEFAULT_METHOD

    _run_pet_study(out, profile="quick", seeds=[0], slices=61, steps=None, methods=[DEFAULT_METHOD])


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PairlessError(f"unexpected argument {text!r}; {option} takes numbers, e.g. {option} 2 10") from None


def _run_pet_study(out: Path, *, profile: str, seeds: list[int], slices: int, steps: int | None,
                   methods: list[str] | None) -> None:
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
        str, typer.Option(help="quick (CPU, 3 folds of 256² crops) | paper (4 folds of whole slices, 8k iterations, GPU).")
    ] = "quick",
    clean: Annotated[
        Optional[Path], typer.Option("--clean", help="Clean EM slices (default ../shared/data/em/isbi2012/train_image).")
    ] = None,
    methods: Annotated[
        Optional[str], typer.Option("--methods", help="Comma-separated subset, e.g. noisy,median,wiener,dncnn,iscl-optimized.")
    ] = None,
    noise_mode: Annotated[
        Optional[str], typer.Option("--noise-mode", help="additive (the profile's: pasted noise-only images) | structural.")
    ] = None,
    reuse: Annotated[
        bool, typer.Option("--reuse", help="Read back rows already scored in --out with the same data and settings.")
    ] = False,
    noise: Annotated[Optional[str], typer.Option("--noise", help="Comma-separated subset of charge,film.")] = None,
    run_folds: Annotated[
        Optional[int], typer.Option("--run-folds", help="Train and score only the first N folds of the split.")
    ] = None,
    iscl_steps: Annotated[
        Optional[int], typer.Option("--iscl-steps", help="ISCL training steps instead of the profile's (quick: 1200).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the noise and the training.")] = 0,
) -> None:
    """Seed 002's Table 2: ISCL normalizations, paired and self-supervised networks, filters on charge/film noise.

    Example: pairless reproduce em --profile quick --out em_report/ --methods noisy,gaussian,wiener,dncnn
    """
    from pairless.experiments.em import reproduce_em

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    kinds = tuple(k.strip() for k in noise.split(",") if k.strip()) if noise else ("charge", "film")
    html = reproduce_em(out, profile=profile, clean=clean, methods=chosen, noise_mode=noise_mode, noise_types=kinds,
                        run_folds=run_folds, iscl_steps=iscl_steps, seed=seed, reuse=reuse)
    typer.echo(f"report written to {html}")


@reproduce_app.command("bsd68")
def reproduce_bsd68_command(
    out: OutDir,
    profile: Annotated[str, typer.Option(help="quick (CPU minutes, 12 test images) | paper (seed schedule, all 68).")] = "quick",
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Folder with bsd400_train/ and bsd68/ (default ../shared/data/natural).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise and the training.")] = 0,
    method: Annotated[str, typer.Option(help="Self-supervised method: n2v | ne2ne | bsn | zsn2n.")] = "n2v",
) -> None:
    """N2V paper's benchmark: train on noisy BSD400, score on BSD68 with σ=25 noise next to 27.71 dB.

    Example: pairless reproduce bsd68 --profile quick --out bsd68_report/
    """
    from pairless.experiments.bsd68 import reproduce_bsd68

    html = reproduce_bsd68(out, method=method, profile=profile, data=data, seed=seed)
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
